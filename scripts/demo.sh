#!/usr/bin/env bash
# `make demo`: the real pipeline end to end on the local stack.
# Stack up (unless REPLAYWATCH_KAFKA_BOOTSTRAP is given), migrations, the consumer,
# a synthetic fleet, a live tail until every expected comparison is in, a report and a
# summary, then the consumer and the stack are stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
RW=${RW:-.venv/bin/replaywatch}
RUNS=${DEMO_RUNS:-40}
tag=$(date +%s)-$$
work=$(mktemp -d)
started=""
consumer=""

cleanup() {
  status=$?
  if [ "$status" -ne 0 ] && [ -s "$work/consumer.log" ]; then
    echo "the consumer's last lines:" >&2
    tail -n 20 "$work/consumer.log" >&2
  fi
  if [ -n "$consumer" ] && kill -0 "$consumer" 2>/dev/null; then
    kill -TERM "$consumer"
    wait "$consumer" || true
  fi
  if [ -n "$started" ]; then "$RW" devstack down --purge; fi
  rm -rf "$work"
}
trap cleanup EXIT

if [ -z "${REPLAYWATCH_KAFKA_BOOTSTRAP:-}" ]; then
  export REPLAYWATCH_DEVSTACK_DIR=${REPLAYWATCH_DEVSTACK_DIR:-${TMPDIR:-/tmp}/replaywatch-demo}
  "$RW" devstack up
  eval "$("$RW" devstack env)"
  started=1
fi
# the demo's topics and bucket are its own: it asks for them to be created
export REPLAYWATCH_CREATE_TOPICS=${REPLAYWATCH_CREATE_TOPICS:-true}
export REPLAYWATCH_CREATE_BUCKET=${REPLAYWATCH_CREATE_BUCKET:-true}
export REPLAYWATCH_INPUT_TOPIC=demo.step-attempts.$tag
export REPLAYWATCH_OUTPUT_TOPIC=demo.comparisons.$tag
export REPLAYWATCH_DLQ_TOPIC=demo.dead-letters.$tag
export REPLAYWATCH_GROUP_ID=demo-$tag
export REPLAYWATCH_S3_BUCKET=${REPLAYWATCH_S3_BUCKET:-replaywatch-demo}
export REPLAYWATCH_TOKENS_TOLERANCE=${REPLAYWATCH_TOKENS_TOLERANCE:-0.01}
export REPLAYWATCH_COST_TOLERANCE=${REPLAYWATCH_COST_TOLERANCE:-0.01}
PY=${PYTHON:-.venv/bin/python}
export REPLAYWATCH_HTTP_PORT=${REPLAYWATCH_HTTP_PORT:-$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}

"$RW" migrate
"$RW" run 2> "$work/consumer.log" &
consumer=$!
"$RW" produce-demo --runs "$RUNS" --steps 4 --attempts 3 --no-snapshot 0.02 --expect-file "$work/expected.json" \
  | tee "$work/produced.txt"
expected=$("$PY" -c 'import json,sys; print(len(json.load(open(sys.argv[1]))))' "$work/expected.json")
t0=$(date +%s%N)
"$RW" tail --until "$expected" --timeout 120
t1=$(date +%s%N)
"$RW" report --run run-7-000000 || true
# from an alert to the diff: the first event with a diff, as an alert would carry it
sha=$("$RW" tail --json --only-drift --timeout 5 2>/dev/null \
  | "$PY" -c 'import json,sys; print(next((e["diff_sha256"] for e in map(json.loads, sys.stdin) if e["diff_sha256"]), ""))' || true)
if [ -n "$sha" ]; then
  echo "the first alert's diff (replaywatch diff SHA):"
  "$RW" diff "$sha" || true
fi
echo
echo "telemetry (http://127.0.0.1:$REPLAYWATCH_HTTP_PORT/metrics):"
"$PY" - "$REPLAYWATCH_HTTP_PORT" <<'PYEOF' || true
import json, sys, textwrap, urllib.error, urllib.request
from prometheus_client.parser import text_string_to_metric_families

base = f"http://127.0.0.1:{sys.argv[1]}"
try:
    ready = json.loads(urllib.request.urlopen(base + "/readyz", timeout=5).read())
except urllib.error.HTTPError as exc:
    ready = json.loads(exc.read())
records = published = 0.0
verdicts: dict[str, float] = {}
for family in text_string_to_metric_families(urllib.request.urlopen(base + "/metrics", timeout=5).read().decode()):
    for sample in family.samples:
        if sample.name == "replaywatch_records_total":
            records += sample.value
        elif sample.name == "replaywatch_events_published_total":
            published += sample.value
        elif sample.name == "replaywatch_comparisons_total":
            verdict = sample.labels.get("verdict", "?")
            verdicts[verdict] = verdicts.get(verdict, 0) + sample.value
print(f"  ready:      {'yes' if ready.get('ready') else 'no'} ({ready.get('reason', '')})")
print(f"  records:    {records:,.0f} consumed")
print(f"  published:  {published:,.0f} events")
line = ", ".join(f"{v} {n:,.0f}" for v, n in sorted(verdicts.items()))
print(textwrap.fill(line, width=78, initial_indent="  verdicts:   ", subsequent_indent=" " * 14))
PYEOF
kill -TERM "$consumer"
wait "$consumer"
consumer=""
echo
echo "demo summary"
sent=$(sed -E 's/^sent ([0-9]+) attempt events.*/\1/' "$work/produced.txt")
echo "  sent:       $sent attempt events (duplicates and out-of-order among them)"
echo "  published:  all $expected expected comparisons, in $(( (t1 - t0) / 1000000 )) ms"
echo "  consumer:   stopped cleanly (the write in flight finished, the outbox drained)"
