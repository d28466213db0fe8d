"""End-to-end benchmark: replaywatch vs. the same job in Quix Streams, on the local stack.

1. N synthetic attempt events (default 200,000; ~1 KB snapshots; 8 partitions; 90% within
   tolerance, 7% drift, 2% tool-event and 1% attestation divergence; 2% duplicates, 5%
   out of order) are produced up front.
2. Each system runs from empty state until every expected comparison is on its output
   topic: events/s, CPU seconds per 1,000 events, peak RSS.
3. A latency run at a fixed rate (default half of replaywatch's measured maximum):
   p50/p99/max of detected_at minus produce time.
4. replaywatch again with 2 consumer processes in one group.
5. The peer (bench/peers/quix_job.py) in at-least-once and exactly-once modes.
6. Ceilings: aiokafka consume-only of the input topic, and Avro decode-only.
7. A fleet of LLM steps (``tests/corpus.py``: OpenAI, Anthropic and Gemini shapes, a first
   attempt and three re-runs per step, one re-run in ten a regression; default 40,000
   events, ten step kinds), run three times, one after the other: under the README's worked
   policy (semantic text, number and set comparators, tools unordered), under the same
   policy with every path exact, and under the worked policy in adaptive mode (noise
   envelopes per cohort). The cost per event of each, and the ratios.

Results: bench/results/e2e-<time>.{json,md,png}. Usage: python bench/e2e.py [--events N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import stages
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from replaywatch import codec, demo, native
from replaywatch.compare import CompareConfig, policy
from replaywatch.config import load_settings
from replaywatch.devstack import Stack
from replaywatch.devstack.stack import default_dir

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.corpus import fleet as llm_fleet  # noqa: E402

WORKED = ROOT / "docs" / "policies" / "llm-steps.toml"
TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def children(pid: int) -> list[int]:
    out = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if int(_stat(int(proc.name))[1]) == pid:
                    out.append(int(proc.name))
            except OSError:
                continue
    return out


def tree_cpu_seconds(pid: int) -> float:
    """CPU of a process, its live children and the children it has reaped (PostgreSQL
    backends are children of the postmaster)."""
    try:
        total = sum(int(f) for f in _stat(pid)[11:15]) / TICK
    except OSError:
        return 0.0
    for child in children(pid):
        try:
            total += sum(int(f) for f in _stat(child)[11:13]) / TICK
        except OSError:
            continue
    return total


def service_cpu(stack_dir: Path) -> dict[str, float]:
    """CPU seconds so far of each local-stack service (kafka, postgres, s3)."""
    try:
        state = json.loads((stack_dir / "state.json").read_text())
    except (OSError, ValueError):
        return {}
    return {name: tree_cpu_seconds(s["pid"]) for name, s in state.items() if s.get("pid")}


def cpu_since(stack_dir: Path, pids: list[int], before: dict[str, float] | None = None) -> dict[str, float]:
    """CPU seconds of the system (``pids`` and their children), each local-stack service
    and this benchmark process: so far, or since ``before`` (an earlier result)."""
    now = {"system": sum(tree_cpu_seconds(p) for p in pids), **service_cpu(stack_dir), "bench": time.process_time()}
    return {k: v - (before or {}).get(k, 0.0) for k, v in now.items()}


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Bench:
    def __init__(self, env: dict[str, str], partitions: int, stack_dir: Path) -> None:
        self.env = env
        self.stack_dir = stack_dir
        self.partitions = partitions
        self.bootstrap = env["REPLAYWATCH_KAFKA_BOOTSTRAP"]

    async def create(self, *topics: str) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(t, self.partitions, 1) for t in topics])
        finally:
            await admin.close()

    async def produce(self, topic: str, records: list[tuple[bytes, bytes]]) -> float:
        p = AIOKafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=20, max_batch_size=1 << 20, acks=1)
        await p.start()
        t0 = time.perf_counter()
        try:
            for key, value in records:
                await p.send(topic, value, key=key)
            await p.flush()
        finally:
            await p.stop()
        return time.perf_counter() - t0

    async def consume_only(self, topic: str, n: int) -> float:
        c = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False,
                             max_partition_fetch_bytes=8 << 20, fetch_max_bytes=64 << 20)  # fmt: skip
        await c.start()
        try:
            tps = [TopicPartition(topic, p) for p in range(self.partitions)]
            c.assign(tps)
            await c.seek_to_beginning(*tps)
            got, t0 = 0, time.perf_counter()
            while got < n:
                batch = await c.getmany(timeout_ms=500, max_records=10_000)
                got += sum(len(v) for v in batch.values())
            return n / (time.perf_counter() - t0)
        finally:
            await c.stop()

    async def measure(self, name: str, tag: str, argv: list[str], records: list[tuple[bytes, bytes]], want: int,
                      processes: int = 1, **extra: str) -> dict[str, Any]:  # fmt: skip
        """``records`` on topics of their own, then the system from empty state until
        ``want`` comparisons are out: events/s and CPU per event."""
        e = self.system_env(tag, **extra)
        await self.create(e["REPLAYWATCH_INPUT_TOPIC"], e["REPLAYWATCH_OUTPUT_TOPIC"], e["REPLAYWATCH_DLQ_TOPIC"])
        await self.produce(e["REPLAYWATCH_INPUT_TOPIC"], records)
        print(f"running {name} ({len(records)} events, {want} comparisons) ...", flush=True)
        r = await self.run_system(name, argv, e, e["REPLAYWATCH_OUTPUT_TOPIC"], want, processes)
        r["events_per_s"] = len(records) / r["seconds"]
        r["cpu_s_per_1000"] = r["cpu_s"] / len(records) * 1000
        print(f"  {name}: {r['events_per_s']:,.0f} events/s, {r['cpu_s_per_1000']:.3f} CPU s/1000, "
              f"peak RSS {r['peak_rss_mb']:.0f} MB", flush=True)  # fmt: skip
        return r

    def system_env(self, tag: str, **extra: str) -> dict[str, str]:
        return {**os.environ, **self.env, "REPLAYWATCH_INPUT_TOPIC": f"bench-in-{tag}",
                "REPLAYWATCH_OUTPUT_TOPIC": f"bench-out-{tag}", "REPLAYWATCH_DLQ_TOPIC": f"bench-dlq-{tag}",
                "REPLAYWATCH_RATES_TOPIC": f"bench-rates-{tag}", "REPLAYWATCH_ALERTS_TOPIC": f"bench-alerts-{tag}",
                "REPLAYWATCH_GROUP_ID": f"bench-{tag}", "REPLAYWATCH_POSTGRES_SCHEMA": f"bench_{tag}",
                "REPLAYWATCH_S3_BUCKET": f"bench-{tag}", "REPLAYWATCH_LOG_LEVEL": "WARNING",
                "REPLAYWATCH_HTTP_PORT": "0", **extra}  # fmt: skip

    async def run_system(self, name: str, argv: list[str], env: dict[str, str], out_topic: str, want: int,
                         processes: int = 1, timeout: float = 900) -> dict[str, Any]:  # fmt: skip
        """Start the system, wait until ``want`` distinct events are on ``out_topic``."""
        c = AIOKafkaConsumer(out_topic, bootstrap_servers=self.bootstrap, isolation_level="read_committed",
                             auto_offset_reset="earliest", enable_auto_commit=False, group_id=None)  # fmt: skip
        await c.start()
        procs = [subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL,
                                  stderr=open(f"/tmp/bench-{name}-{i}.log", "wb"))  # noqa: SIM115
                 for i in range(processes)]  # fmt: skip
        t0 = time.perf_counter()
        cpu0 = cpu_since(self.stack_dir, [p.pid for p in procs])
        ids: set[str] = set()
        raw = 0
        first = None
        tenth: float | None = None
        tenth_count, cpu_tenth = 0, 0.0
        try:
            while len(ids) < want:
                if time.perf_counter() - t0 > timeout:
                    raise TimeoutError(f"{name}: {len(ids)}/{want} events after {timeout}s")
                for p in procs:
                    if p.poll() is not None:
                        raise RuntimeError(f"{name} exited with {p.returncode}; see /tmp/bench-{name}-*.log")
                batch = await c.getmany(timeout_ms=200, max_records=20_000)
                for msgs in batch.values():
                    for m in msgs:
                        raw += 1
                        ids.add(codec.decode_comparison(m.value)["event_id"])
                if first is None and ids:
                    first = time.perf_counter() - t0
                if tenth is None and len(ids) >= want // 10:  # past start-up, the group's join and warm-up
                    tenth, tenth_count = time.perf_counter() - t0, len(ids)
                    cpu_tenth = cpu_since(self.stack_dir, [p.pid for p in procs], cpu0)["system"]
            elapsed = time.perf_counter() - t0
            services = cpu_since(self.stack_dir, [p.pid for p in procs], cpu0)
            # the steady state: from the first tenth of the events out to the last
            steady = None
            if tenth is not None and elapsed > tenth:
                steady = {"seconds": elapsed - tenth, "share": (len(ids) - tenth_count) / want,
                          "cpu_s": services["system"] - cpu_tenth}  # fmt: skip
            cpu = services.pop("system")
            services["bench reader"] = services.pop("bench")
            rss = max(peak_rss_mb(p.pid) + sum(peak_rss_mb(c) for c in children(p.pid)) for p in procs)
        finally:
            await c.stop()
            kids = [k for p in procs for k in children(p.pid)]
            for p in procs:  # py-spy writes its profile on SIGINT
                p.send_signal(signal.SIGINT if name.endswith("profiled") else signal.SIGTERM)
            for p in procs:
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
            for k in kids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(k, signal.SIGTERM)
        return {"seconds": elapsed, "first_output_s": first, "cpu_s": cpu, "peak_rss_mb": rss,
                "events_out": len(ids), "raw_out": raw, "service_cpu_s": services, "steady": steady}  # fmt: skip


@contextlib.contextmanager
def before_tree(commit: str) -> Iterator[Path]:
    """The ``src`` of ``commit`` in a temporary git worktree (its modules shadow this
    tree's on PYTHONPATH: the editable install is a path entry after it)."""
    tmp = Path(tempfile.mkdtemp(prefix="rw-before-"))
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tmp / "tree"), commit], check=True,
                   capture_output=True)  # fmt: skip
    try:
        yield tmp / "tree" / "src"
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tmp / "tree")],
                       capture_output=True)  # fmt: skip
        shutil.rmtree(tmp, ignore_errors=True)


RUN_EVERY_MS = 4
"""The fleet's event time: a run (12 events) starts every 4 ms, 3,000 events per second
of event time, as a live fleet at this rate produces them; the drift-rate windows close
as they would live (a run every 10 s made 45 hours of windows for 200,000 events: the
closer then judged a window per 70 events, thousands of times what a live fleet asks)."""


def fleet(n: int, seed: int) -> list[dict[str, Any]]:
    runs = max(1, round(n / (4 * 3 * 1.02)))
    spec = demo.FleetSpec(runs=runs, steps=4, attempts=3, drift=0.07, tool_divergence=0.02,
                          attestation_divergence=0.01, duplicates=0.02, out_of_order=0.05, snapshot_bytes=1000,
                          seed=seed, run_every_ms=RUN_EVERY_MS)  # fmt: skip
    return demo.synthetic_fleet(spec)


def llm_events(n: int, seed: int) -> list[dict[str, Any]]:
    """About ``n`` input events of LLM steps (a first attempt and three re-runs each), the
    steps of a run interleaved as the demo fleet's are."""
    rng = random.Random(seed)
    events: list[dict[str, Any]] = []
    lanes = [[{"event_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"llm/{i}/{a.number}")), "run_id": f"llm-{i // 4}",
               "step_id": a.step_id, "attempt": a.number, "status": "succeeded",
               "occurred_at": demo.BASE_TIME_MS + i * 100 + a.number, "provider": step.provider,
               "spec_snapshot": orjson.dumps({"type": f"kind-{i % 10}"}).decode(),
               "output_snapshot": orjson.dumps(a.output_snapshot).decode(),
               "tool_events": orjson.dumps(a.tool_events).decode()} for a in step.attempts]
             for i, step in enumerate(llm_fleet(max(1, n // 4), reruns=3, seed=seed))]  # fmt: skip
    for group in range(0, len(lanes), 4):  # four steps to a run
        run = lanes[group : group + 4]
        while any(run):
            events.append(rng.choice([a for a in run if a]).pop(0))
    return events


def adaptive_policy(path: Path) -> Path:
    """The worked policy in adaptive mode (its cohorts' envelopes judge after the warm-up)."""
    path.write_text(WORKED.read_text().replace("[default]\n", "[default]\nadaptive = true\n", 1))
    return path


def exact_policy(path: Path) -> Path:
    """The worked policy with every path exact: its comparators and tool mode dropped."""
    text = WORKED.read_text().split("[default.compare]")[0]
    path.write_text(text.replace('tool_mode = "unordered"', 'tool_mode = "strict"'))
    return path


ALL_SYSTEMS = ("replaywatch", "rates-off", "loop-uvloop", "replaywatch-aioboto3", "fetch", "before", "palindrome",
               "profile", "replaywatch-2", "latency", "quix-alo", "quix-eos", "quix-profile", "llm")  # fmt: skip
Configs = dict[str, tuple[list[str], dict[str, str]]]
"""Configurations measured side by side: name -> (argv, environment added)."""
FETCH_SIZES = ((8, 1), (64, 16))
"""Fetch limits measured beside the default (``--systems fetch``), in MB: the whole
answer, a partition's share (64 and 16: aiokafka's limits before they were settings)."""
BEFORE = "50e436a"
"""The commit measured beside this tree (`--before`): the whole product (the worked
policy, adaptive envelopes, drift rates) before the per-event levers `bench/levers.py` measures."""
PROFILE_RATE = 250
"""py-spy's samples per second in the profiled runs."""
WARMUP_S = 5.0
"""The latency run's first seconds (new topics, cold JIT in the broker) are not counted."""


async def latency_run(b: Bench, rate: float, seconds: float, tag: str) -> dict[str, Any]:
    env = b.system_env(tag)
    in_topic, out_topic = env["REPLAYWATCH_INPUT_TOPIC"], env["REPLAYWATCH_OUTPUT_TOPIC"]
    await b.create(in_topic, out_topic, env["REPLAYWATCH_DLQ_TOPIC"])
    proc = subprocess.Popen([sys.executable, "-m", "replaywatch", "run"], env=env, stdout=subprocess.DEVNULL,
                            stderr=open(f"/tmp/bench-latency-{tag}.log", "wb"))  # noqa: SIM115  # fmt: skip
    await asyncio.sleep(4)  # joined and assigned
    events = fleet(int(rate * (seconds + WARMUP_S)) + 100, seed=99)
    producer = AIOKafkaProducer(bootstrap_servers=b.bootstrap, linger_ms=5, acks=1)  # Kafka 4.0 clients default to 5
    await producer.start()
    reader = AIOKafkaConsumer(out_topic, bootstrap_servers=b.bootstrap, isolation_level="read_committed",
                              auto_offset_reset="earliest", enable_auto_commit=False, group_id=None,
                              fetch_min_bytes=65536, fetch_max_wait_ms=10)  # fmt: skip
    await reader.start()
    lat: list[float] = []
    visible: list[float] = []

    async def read() -> None:
        while True:
            batch = await reader.getmany(timeout_ms=200)
            now = time.time() * 1000
            for msgs in batch.values():
                for m in msgs:
                    ev = codec.decode_comparison(m.value)
                    if ev["occurred_at"] >= counted_from:
                        lat.append(ev["detected_at"] - ev["occurred_at"])
                        visible.append(now - ev["occurred_at"])

    task = asyncio.create_task(read())
    sent = 0
    t0 = time.perf_counter()
    counted_from = time.time() * 1000 + WARMUP_S * 1000
    cpu0: dict[str, float] | None = None
    window = 0.0
    try:
        while time.perf_counter() - t0 < seconds + WARMUP_S and sent < len(events):
            if cpu0 is None and time.perf_counter() - t0 >= WARMUP_S:
                cpu0, window = cpu_since(b.stack_dir, [proc.pid]), time.perf_counter()
            due = int((time.perf_counter() - t0) * rate)
            while sent < due and sent < len(events):
                ev = events[sent] | {"occurred_at": int(time.time() * 1000)}
                await producer.send(in_topic, codec.encode_attempt(ev), key=ev["run_id"].encode())
                sent += 1
            await asyncio.sleep(0.005)
        await producer.flush()
        cpu1, window = cpu_since(b.stack_dir, [proc.pid], cpu0), time.perf_counter() - window
        cpu1["replaywatch"] = cpu1.pop("system")
        await asyncio.sleep(3)
    finally:
        task.cancel()
        await producer.stop()
        await reader.stop()
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    lat.sort()
    visible.sort()
    q = statistics.quantiles(lat, n=100) if len(lat) > 2 else [0.0] * 99
    v = statistics.quantiles(visible, n=100) if len(visible) > 2 else [0.0] * 99
    return {"rate": rate, "sent": sent, "comparisons": len(lat), "p50_ms": q[49], "p99_ms": q[98],
            "max_ms": lat[-1] if lat else None, "visible_p50_ms": v[49], "visible_p99_ms": v[98],
            "visible_max_ms": visible[-1] if visible else 0.0,
            "cores": {k: v / window for k, v in cpu1.items()} if cpu0 else {}}  # fmt: skip


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--partitions", type=int, default=8)
    ap.add_argument("--latency-seconds", type=float, default=20)
    ap.add_argument("--latency-rate", type=float, default=None, help="events/s (default: half the measured maximum)")
    ap.add_argument("--skip-peer", action="store_true")
    ap.add_argument("--before", default=BEFORE,
                    help="a commit of replaywatch run beside this tree, from a git worktree ('' for none)")  # fmt: skip
    ap.add_argument("--systems", default=",".join(ALL_SYSTEMS),
                    help="which runs to make, comma-separated")  # fmt: skip
    ap.add_argument("--judgment", choices=("on", "off"), default="on",
                    help="on: each replaywatch run under the worked policy, adaptive, drift rates on")  # fmt: skip
    ap.add_argument("--llm-events", type=int, default=40_000, help="events of the LLM fleet")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = ap.parse_args()

    stack = None
    if os.environ.get("REPLAYWATCH_KAFKA_BOOTSTRAP"):
        env = {k: v for k, v in os.environ.items() if k.startswith("REPLAYWATCH_")}
        stack_dir = default_dir()
    else:
        stack = Stack(Path(os.environ.get("REPLAYWATCH_DEVSTACK_DIR", "/tmp/replaywatch-bench")))
        print("starting the local stack ...", flush=True)
        stack.start()
        env = stack.env()
        stack_dir = stack.root
    b = Bench(env, args.partitions, stack_dir)
    wanted = set(args.systems.split(","))
    if args.skip_peer:
        wanted -= {"quix-alo", "quix-eos", "quix-profile"}
    tag = uuid.uuid4().hex[:6]
    results: dict[str, Any] = {"events": args.events, "partitions": args.partitions, "cpus": os.cpu_count(),
                               "judgment": args.judgment}  # fmt: skip
    if args.judgment == "on":  # the product as it is meant to run: its judgment on
        args.out.mkdir(parents=True, exist_ok=True)
        b.env |= {"REPLAYWATCH_POLICY_FILE": str(adaptive_policy(args.out / f"judgment-{tag}.toml")),
                  "REPLAYWATCH_RATES": "true"}  # fmt: skip
    try:
        print(f"generating {args.events} events ...", flush=True)
        events = fleet(args.events, seed=5)
        records = [(e["run_id"].encode(), codec.encode_attempt(e)) for e in events]
        config = load_settings().compare_config()
        expected = demo.expected_comparisons(events, config)
        results["events"] = len(records)
        results["expected_comparisons"] = len(expected)
        results["mean_value_bytes"] = sum(len(v) for _, v in records) / len(records)
        source = f"bench-src-{tag}"
        await b.create(source)
        results["produce_s"] = await b.produce(source, records)
        print(f"produced {len(records)} events in {results['produce_s']:.1f}s", flush=True)

        async def ceilings() -> dict[str, float]:
            """Consume-only and decode-only of the records, per second. The ceiling's decode
            is fastavro's (the Python path, as the goals were set); the native reader's is
            measured beside it."""
            out = {"ceiling_consume_eps": await b.consume_only(source, len(records))}
            for name, mode in (("", "off"), ("native_", "auto")):
                native.use(mode)
                t0 = time.perf_counter()
                for _, v in records:
                    codec.decode_attempt(v)
                decode = out[f"ceiling_{name}decode_eps"] = len(records) / (time.perf_counter() - t0)
                out[f"ceiling_consume_{name}decode_eps"] = 1 / (1 / out["ceiling_consume_eps"] + 1 / decode)
            ceil_c, ceil_d = out["ceiling_consume_eps"], out["ceiling_decode_eps"]
            print(f"ceilings: consume {ceil_c:,.0f}/s, decode {ceil_d:,.0f}/s", flush=True)
            return out

        results |= await ceilings()

        async def system(name: str, argv: list[str], processes: int = 1, **extra: str) -> dict[str, Any]:
            return await b.measure(name, f"{tag}{name.replace('-', '')}", argv, records, len(expected), processes,
                                   **extra)  # fmt: skip

        Runs = dict[str, list[dict[str, Any]]]

        async def mirrored_runs(
            configs: Configs, prefix: str = "", measured: list[dict[str, float]] | None = None
        ) -> Runs:
            """Each config twice, in the order A B C C B A, so that the machine's drift
            within the run falls on both sides of every comparison. ``measured``: the
            ceilings are measured again before each run, into it (the machine's drift
            falls on them as on the runs)."""
            runs: dict[str, list[dict[str, Any]]] = {k: [] for k in configs}
            for i, name in enumerate([*configs, *reversed(configs)]):
                if measured is not None:
                    measured.append(await ceilings())
                argv, extra = configs[name]
                if name.startswith("quix"):
                    extra = extra | {"QUIX_STATE_DIR": f"/tmp/quix-{tag}-{i}"}
                runs[name].append(await system(f"{prefix}{name}-{i}", argv, 1, **extra))
            return runs

        rw = [sys.executable, "-m", "replaywatch", "run"]
        quix = [sys.executable, str(ROOT / "bench/peers/quix_job.py")]
        results["replaywatch"] = await system("replaywatch", rw)
        if "rates-off" in wanted:  # what the drift rates cost: off, off, on again, alternating with the first run
            off = [await system(f"replaywatch-rates-off{i}", rw, REPLAYWATCH_RATES="false") for i in (1, 2)]
            again = await system("replaywatch-rates-on2", rw)
            results["replaywatch_rates_off"] = off[0]
            results["rates_pairs"] = {"on_cpu_s": [results["replaywatch"]["cpu_s"], again["cpu_s"]],
                                      "off_cpu_s": [o["cpu_s"] for o in off]}  # fmt: skip
        if "loop-uvloop" in wanted:  # the event loop lever: uvloop instead of asyncio's own loop
            results["replaywatch_loop_uvloop"] = await system("replaywatch-loop-uvloop", rw,
                                                              REPLAYWATCH_EVENT_LOOP="uvloop")  # fmt: skip
        if "fetch" in wanted:  # the fetch limits: memory against round trips
            sizes: Configs = {"default": (rw, {}), **{f"{m}mb": (rw, {"REPLAYWATCH_FETCH_MAX_BYTES": str(m << 20),
                                                                    "REPLAYWATCH_FETCH_PARTITION_BYTES": str(p << 20)})
                                                      for m, p in FETCH_SIZES}}  # fmt: skip
            results["fetch"] = await mirrored_runs(sizes, "fetch-")
        if "replaywatch-aioboto3" in wanted:  # the other S3 client, the reason obstore is the default
            results["replaywatch_aioboto3"] = await system("replaywatch-aioboto3", rw, REPLAYWATCH_S3_CLIENT="aioboto3")

        async def profiled(key: str, name: str, argv: list[str], **extra: str) -> None:
            """The system again under py-spy: where its CPU goes, by stage (bench/stages.py)."""
            prof = args.out / f"profile-{tag}-{name}.txt"
            args.out.mkdir(parents=True, exist_ok=True)
            extra_flags = os.environ.get("BENCH_PY_SPY_FLAGS", "--nonblocking").split()  # --native: C frames too
            spy = [str(Path(sys.executable).with_name("py-spy")), "record", *extra_flags, "--rate",
                   str(PROFILE_RATE), "--format", "raw", "-o", str(prof), "--", *argv]  # fmt: skip
            r = await system(f"{name}-profiled", spy, **extra)
            r["profile"] = str(prof)
            r["stages_us"] = stages.breakdown(prof, len(records), PROFILE_RATE, r["cpu_s"])
            results[key] = r

        if args.before and "before" in wanted:  # the code before, on the same stack in the same run: what changed
            with before_tree(args.before) as src:
                results["replaywatch_before"] = await system("replaywatch-before", rw, PYTHONPATH=str(src))
                results["replaywatch_before"]["commit"] = args.before
        if args.before and "palindrome" in wanted:  # the machine drifts within a run: each config twice, mirrored
            with before_tree(args.before) as src:
                configs: Configs = {
                    "this-tree": (rw, {}),
                    "python-path": (rw, {"REPLAYWATCH_NATIVE": "off"}),
                    "before": (rw, {"PYTHONPATH": str(src)}),
                    "quix-alo": (quix, {"QUIX_GUARANTEE": "at-least-once"}),
                    "quix-eos": (quix, {"QUIX_GUARANTEE": "exactly-once"}),
                }
                measured: list[dict[str, float]] = []
                runs = await mirrored_runs(configs, measured=measured)
            results["palindrome"] = {"order": [*configs, *reversed(configs)], "commit": args.before,
                                     "ceilings": measured,
                                     "runs": {k: [{f: r[f] for f in ("cpu_s", "seconds", "events_per_s", "peak_rss_mb",
                                                                     "service_cpu_s")} for r in v]
                                              for k, v in runs.items()}}  # fmt: skip
        if "profile" in wanted:
            await profiled("replaywatch_profiled", "replaywatch", rw)
        if "replaywatch-2" in wanted:
            results["replaywatch_2proc"] = await system("replaywatch-2", rw, processes=2)
        if "latency" in wanted:
            rate = args.latency_rate or results["replaywatch"]["events_per_s"] / 2
            print(f"latency run at {rate:,.0f} events/s ...", flush=True)
            results["latency"] = await latency_run(b, rate, args.latency_seconds, f"{tag}lat")
        if "quix-alo" in wanted:
            results["quix_alo"] = await system("quix-alo", quix, QUIX_GUARANTEE="at-least-once",
                                               QUIX_STATE_DIR=f"/tmp/quix-{tag}-alo")  # fmt: skip
        if "quix-eos" in wanted:
            results["quix_eos"] = await system("quix-eos", quix, QUIX_GUARANTEE="exactly-once",
                                               QUIX_STATE_DIR=f"/tmp/quix-{tag}-eos")  # fmt: skip
        if "quix-profile" in wanted:
            await profiled("quix_profiled", "quix-alo", quix, QUIX_GUARANTEE="at-least-once",
                           QUIX_STATE_DIR=f"/tmp/quix-{tag}-prof")  # fmt: skip
        if "llm" in wanted:
            results["llm"] = await llm_runs(b, tag, args.llm_events, args.out)
    finally:
        if stack is not None:
            stack.purge()
    write(results, args.out)


async def llm_runs(b: Bench, tag: str, n: int, out: Path) -> dict[str, Any]:
    """The LLM fleet under the worked policy, under its exact twin and in adaptive mode,
    same events, one after the other: events/s and CPU per event of each."""
    events = llm_events(n, seed=17)
    records = [(e["run_id"].encode(), codec.encode_attempt(e)) for e in events]
    out.mkdir(parents=True, exist_ok=True)
    policies = {"llm-exact": exact_policy(out / f"llm-exact-{tag}.toml"), "llm-worked": WORKED,
                "llm-adaptive": adaptive_policy(out / f"llm-adaptive-{tag}.toml")}  # fmt: skip
    result: dict[str, Any] = {"events": len(records)}
    rw = [sys.executable, "-m", "replaywatch", "run"]
    for name, path in policies.items():
        want = len(demo.expected_comparisons(events, policy.load(path, CompareConfig())))
        r = await b.measure(name, f"{tag}{name.replace('-', '')}", rw, records, want,
                            REPLAYWATCH_POLICY_FILE=str(path))  # fmt: skip
        r["cpu_us_per_event"] = r["cpu_s_per_1000"] * 1000
        result[name] = r
    return result


SYSTEMS = (
    ("replaywatch", "replaywatch, 1 process (obstore)"),
    ("replaywatch_rates_off", "replaywatch, 1 process, rates off"),
    ("replaywatch_loop_uvloop", "replaywatch, 1 process, uvloop"),
    ("replaywatch_aioboto3", "replaywatch, 1 process, aioboto3"),
    ("replaywatch_before", "replaywatch before its throughput work (1 process)"),
    ("replaywatch_2proc", "replaywatch, 2 processes"),
    ("quix_alo", "Quix Streams, at-least-once"),
    ("quix_eos", "Quix Streams, exactly-once"),
)
PROFILED = (("replaywatch_profiled", "replaywatch"), ("quix_profiled", "Quix ALO"))
SERVICES = ("kafka", "postgres", "s3", "registry", "bench reader")
BASELINE_PEAK_RSS_MB = 493.0
"""replaywatch's peak RSS before its throughput work (200,029 events): the goal's
ceiling when the run has no ``--before``."""


def mirrored(r: dict[str, Any], name: str) -> dict[str, Any] | None:
    """A config of the mirrored runs as one: the mean of its two runs (the peak RSS: the higher)."""
    runs = r.get("palindrome", {}).get("runs", {}).get(name)
    if not runs:
        return None
    services = {k for x in runs for k in x["service_cpu_s"]}
    return {"events_per_s": sum(x["events_per_s"] for x in runs) / len(runs),
            "cpu_s": sum(x["cpu_s"] for x in runs) / len(runs),
            "service_cpu_s": {k: sum(x["service_cpu_s"].get(k, 0.0) for x in runs) / len(runs) for k in services},
            "peak_rss_mb": max(x["peak_rss_mb"] for x in runs)}  # fmt: skip


def ceiling_us(r: dict[str, Any], name: str) -> float:
    """A ceiling in µs per event: the mean of those measured before each mirrored run when
    there are, else the one measured at the start."""
    measured = r.get("palindrome", {}).get("ceilings") or [r]
    return float(sum(1e6 / m[f"ceiling_{name}_eps"] for m in measured) / len(measured))


def goals(r: dict[str, Any]) -> list[tuple[str, str, str, bool]]:
    """The throughput goals as (goal, measured, target, met), all from this run: from the
    mirrored runs when there are (the machine's drift cancelled), else from the first."""
    rw, n = mirrored(r, "this-tree") or r["replaywatch"], r["events"]
    out = []
    for key, label in (("quix_alo", "at-least-once"), ("quix_eos", "exactly-once")):
        peer = mirrored(r, key.replace("_", "-")) or r.get(key)
        if peer:
            ratio = rw["events_per_s"] / peer["events_per_s"]
            out.append((f"events/s vs Quix {label}", f"{ratio:.2f}x", ">= 3x", ratio >= 3))
    own = rw["cpu_s"] / n * 1e6
    whole = (rw["cpu_s"] + sum(rw["service_cpu_s"].values())) / n * 1e6
    ceilings = [("consume+decode", ceiling_us(r, "consume_decode"))]
    if "ceiling_consume_native_decode_eps" in r:  # the stricter ceiling: the native reader's decode
        ceilings.append(("consume+native decode", ceiling_us(r, "consume_native_decode")))
    for label, c in ceilings:
        out.append((f"consumer CPU per event vs {label}", f"{own:.1f} / {c:.1f} µs = {own / c:.1f}x", "<= 4x",
                    own / c <= 4))  # fmt: skip
        out.append((f"whole machine CPU per event vs {label}", f"{whole:.1f} / {c:.1f} µs = {whole / c:.1f}x",
                    "<= 10x", whole / c <= 10))  # fmt: skip
    if "latency" in r:
        p99, rate = r["latency"]["p99_ms"], r["latency"]["rate"]
        out.append((f"detected_at p99 at {rate:,.0f} events/s", f"{p99:.0f} ms", "<= 200 ms", p99 <= 200))
    rss = rw["peak_rss_mb"]
    earlier = mirrored(r, "before") or r.get("replaywatch_before")
    before = earlier["peak_rss_mb"] if earlier else BASELINE_PEAK_RSS_MB
    out.append(("peak RSS", f"{rss:.0f} MB", f"<= {before:.0f} MB (before)", rss <= before))
    if "rates_pairs" in r:  # two runs of each, alternating: on, off, off, on
        on, off = sum(r["rates_pairs"]["on_cpu_s"]), sum(r["rates_pairs"]["off_cpu_s"])
        runs = ", ".join(f"{1e6 * v / n:.0f}" for v in [*r["rates_pairs"]["on_cpu_s"], *r["rates_pairs"]["off_cpu_s"]])
        out.append((f"consumer CPU per event, rates on vs off (on, on, off, off: {runs} µs)", f"{on / off:.2f}x",
                    "<= 1.10x", on / off <= 1.10))  # fmt: skip
    if "replaywatch_aioboto3" in r:
        a, o = r["replaywatch_aioboto3"]["cpu_s"], rw["cpu_s"]
        out.append(("consumer CPU per event obstore saves over aioboto3", f"{1 - o / a:.1%}",
                    "> 15%: obstore is the default", 1 - o / a > 0.15))  # fmt: skip
    return out


def levers(r: dict[str, Any]) -> list[tuple[str, float, float]]:
    """Each lever's effect measured end to end in this run, as (what, consumer CPU µs per
    event without it, with it): the event loop, and every lever since ``--before``.
    (``bench/levers.py`` measures the per-event levers one by one.)"""
    n = r["events"]
    out: list[tuple[str, float, float]] = []
    if "replaywatch_loop_uvloop" in r:
        out.append(("uvloop instead of asyncio's loop, on this tree", 1e6 * r["replaywatch"]["cpu_s"] / n,
                    1e6 * r["replaywatch_loop_uvloop"]["cpu_s"] / n))  # fmt: skip
    if "palindrome" in r:  # mirrored runs: a drift of the machine falls on both sides
        mean = {k: 1e6 * sum(x["cpu_s"] for x in v) / len(v) / n for k, v in r["palindrome"]["runs"].items()}
        out.append((f"every lever since {r['palindrome']['commit']} (mirrored runs)", mean["before"],
                    mean["this-tree"]))  # fmt: skip
        if "python-path" in mean:
            out.append(("the native per-record path instead of the Python one (mirrored runs)", mean["python-path"],
                        mean["this-tree"]))  # fmt: skip
    return out


def write(r: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (out / f"e2e-{stamp}.json").write_text(json.dumps(r, indent=2))
    rw = r["replaywatch"]
    n = r["events"]
    rows = ["| system | events/s | CPU s / 1000 events | peak RSS MB | replaywatch ÷ this (events/s) |",
            "|---|---|---|---|---|"]  # fmt: skip
    cpu_rows = ["| system | itself | kafka | postgres | s3 (versitygw) | registry | bench reader | whole machine |",
                "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for key, label in SYSTEMS:
        if key in r:
            s = r[key]
            label = f"replaywatch at {s['commit']} (1 process)" if "commit" in s else label
            rows.append(f"| {label} | {s['events_per_s']:,.0f} | {s['cpu_s_per_1000']:.3f} | {s['peak_rss_mb']:.0f} | "
                        f"{rw['events_per_s'] / s['events_per_s']:.2f}x |")  # fmt: skip
            svc = s.get("service_cpu_s", {})
            parts = [s["cpu_s"], *(svc.get(k, 0.0) for k in SERVICES)]
            cpu_rows.append(f"| {label} | " + " | ".join(f"{1e6 * v / n:.1f}" for v in parts) +
                            f" | {1e6 * sum(parts) / n:.1f} |")  # fmt: skip
    lines = [f"# replaywatch end-to-end benchmark ({n:,} events, {r['partitions']} partitions, "
             f"{r['cpus']} cores, {r['mean_value_bytes']:.0f} B per value)", "", *rows, "",
             "CPU µs per event, by process, during each run:", "", *cpu_rows, ""]  # fmt: skip
    lines += [f"Ceilings: aiokafka consume-only {r['ceiling_consume_eps']:,.0f}/s; Avro decode-only "
              f"{r['ceiling_decode_eps']:,.0f}/s (fastavro; the native reader "
              f"{r.get('ceiling_native_decode_eps', 0):,.0f}/s); both {r['ceiling_consume_decode_eps']:,.0f}/s "
              f"({1e6 / r['ceiling_consume_decode_eps']:.1f} µs per event). replaywatch "
              f"reaches {rw['events_per_s'] / r['ceiling_consume_decode_eps']:.0%} of consume+decode.", ""]  # fmt: skip
    measured = r.get("palindrome", {}).get("ceilings")
    if measured:
        each = [1e6 / m["ceiling_consume_decode_eps"] for m in measured]
        native_each = [1e6 / m["ceiling_consume_native_decode_eps"] for m in measured]
        lines += [f"The ceilings again before each mirrored run (the goals take their mean): consume+decode "
                  f"{ceiling_us(r, 'consume_decode'):.1f} µs per event ({min(each):.1f} to {max(each):.1f}); "
                  f"consume+native decode {ceiling_us(r, 'consume_native_decode'):.1f} µs "
                  f"({min(native_each):.1f} to {max(native_each):.1f}).", ""]  # fmt: skip
    profiled = [(k, label) for k, label in PROFILED if k in r]
    if profiled:
        lines += ["Where each event's CPU goes, µs per event (the py-spy runs; `bench/stages.py`):", "",
                  "| stage | " + " | ".join(label for _, label in profiled) + " |",
                  "|---|" + "---|" * len(profiled)]  # fmt: skip
        for stage in stages.ORDER:
            vals = [r[k]["stages_us"].get(stage, 0.0) for k, _ in profiled]
            if any(v >= 0.05 for v in vals):
                lines.append(f"| {stage} | " + " | ".join(f"{v:.1f}" for v in vals) + " |")
        lines += ["| in all (the profiled run's CPU) | " +
                  " | ".join(f"{sum(r[k]['stages_us'].values()):.1f}" for k, _ in profiled) + " |", ""]  # fmt: skip
    lat = r.get("latency")
    if lat:
        lines += [f"Latency at {lat['rate']:,.0f} events/s ({lat['comparisons']} comparisons): detected_at - produce "
                  f"time p50 {lat['p50_ms']:.0f} ms, p99 {lat['p99_ms']:.0f} ms, max {lat['max_ms']} ms; "
                  f"on the output topic (read_committed) - produce time p50 {lat['visible_p50_ms']:.0f} ms, "
                  f"p99 {lat['visible_p99_ms']:.0f} ms, max {lat['visible_max_ms']:.0f} ms.", ""]  # fmt: skip
        if lat.get("cores"):
            cores = lat["cores"]
            lines += ["Cores busy during the latency run (of " + str(r["cpus"]) + "): " +
                      ", ".join(f"{k} {v:.2f}" for k, v in cores.items()) + f"; in all {sum(cores.values()):.2f}.",
                      ""]  # fmt: skip
    llm = r.get("llm")
    if llm and "llm-exact" in llm and "llm-worked" in llm:
        ex, wk = llm["llm-exact"], llm["llm-worked"]
        lines += [f"LLM fleet ({llm['events']:,} events; the worked policy beside its exact twin, same run):", "",
                  "| policy | events/s | CPU µs per event | peak RSS MB |", "|---|---|---|---|",
                  *(f"| {k} | {v['events_per_s']:,.0f} | {v['cpu_us_per_event']:.0f} | {v['peak_rss_mb']:.0f} |"
                    for k, v in (("every path exact", ex), ("worked policy", wk),
                                 ("worked policy, adaptive", llm.get("llm-adaptive"))) if v),
                  "", f"The worked policy costs {wk['cpu_us_per_event'] / ex['cpu_us_per_event']:.2f}x the exact "
                  f"CPU per event.", ""]  # fmt: skip
        if "llm-adaptive" in llm:
            ad = llm["llm-adaptive"]
            lines += [
                f"Adaptive mode costs {ad['cpu_us_per_event'] / wk['cpu_us_per_event']:.2f}x the worked "
                "policy's CPU per event (the goal: at most 1.15x).",
                "",
            ]
    if "palindrome" in r:
        pal = r["palindrome"]
        seen: dict[str, int] = {}
        lines += ["Mirrored runs, in the order they ran (each config twice, so that the machine's drift "
                  "falls on both sides):", "",
                  "| # | config | events/s | CPU µs per event | whole machine µs per event | peak RSS MB |",
                  "|---|---|---|---|---|---|"]  # fmt: skip
        for i, name in enumerate(pal["order"]):
            x = pal["runs"][name][seen.get(name, 0)]
            seen[name] = seen.get(name, 0) + 1
            whole = x["cpu_s"] + sum(x["service_cpu_s"].values())
            lines.append(f"| {i + 1} | {name} | {x['events_per_s']:,.0f} | {1e6 * x['cpu_s'] / n:.1f} | "
                         f"{1e6 * whole / n:.1f} | {x['peak_rss_mb']:.0f} |")  # fmt: skip
        lines += ["", "| config | events/s (mean) | CPU µs per event (mean) | whole machine µs per event (mean) |",
                  "|---|---|---|---|"]  # fmt: skip
        for name in pal["runs"]:
            m = mirrored(r, name)
            assert m is not None
            whole = m["cpu_s"] + sum(m["service_cpu_s"].values())
            lines.append(f"| {name} | {m['events_per_s']:,.0f} | {1e6 * m['cpu_s'] / n:.1f} | {1e6 * whole / n:.1f} |")
        lines.append("")
    changes = levers(r)
    if changes:
        lines += ["Each lever on its own, consumer CPU µs per event (same run):", "",
                  "| lever | without | with | change |", "|---|---|---|---|",
                  *(f"| {what} | {a:.1f} | {b:.1f} | {b / a - 1:+.1%} |" for what, a, b in changes), ""]  # fmt: skip
    if "fetch" in r:
        lines += ["Fetch limits (each twice, mirrored; means, the peak RSS the higher):", "",
                  "| fetch answer at most (a partition) | consumer CPU µs per event | Kafka CPU µs per event | "
                  "peak RSS MB |", "|---|---:|---:|---:|"]  # fmt: skip
        for name, runs in r["fetch"].items():
            label = "the default" if name == "default" else name.replace("mb", " MB")
            cpu = sum(x["cpu_s"] for x in runs) / len(runs) / n * 1e6
            kafka = sum(x["service_cpu_s"]["kafka"] for x in runs) / len(runs) / n * 1e6
            lines.append(f"| {label} | {cpu:.1f} | {kafka:.1f} | {max(x['peak_rss_mb'] for x in runs):.0f} |")
        lines.append("")
    lines += ["Throughput goals, measured in this run:", "", "| goal | measured | target | met |", "|---|---|---|---|"]
    lines += [f"| {g} | {m} | {t} | {'yes' if ok else '**no**'} |" for g, m, t, ok in goals(r)]
    md = "\n".join(lines) + "\n"
    (out / f"e2e-{stamp}.md").write_text(md)
    print(md)
    chart(r, out / f"e2e-{stamp}.png")


def chart(r: dict[str, Any], path: Path) -> None:
    """Throughput beside the peer; CPU per event by stage, replaywatch beside the peer;
    latency."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no chart (make bench installs it)")
        return
    fig, (a1, a2, a3) = plt.subplots(1, 3, figsize=(19, 5), gridspec_kw={"wspace": 0.55})
    shown = [(k, label) for k, label in SYSTEMS if k in r]
    a1.barh([label for _, label in shown][::-1], [r[k]["events_per_s"] for k, _ in shown][::-1],
            color=["#2a7" if k.startswith("replay") else "#888" for k, _ in shown][::-1])  # fmt: skip
    a1.tick_params(axis="y", labelsize=8)
    a1.set_xlabel("events/s")
    a1.set_title(f"throughput ({r['events']:,} events)")
    profiled = [(k, label) for k, label in PROFILED if k in r]
    if profiled:
        bottoms = [0.0] * len(profiled)
        cmap = plt.get_cmap("tab20")
        for i, stage in enumerate(stages.ORDER):
            vals = [r[k]["stages_us"].get(stage, 0.0) for k, _ in profiled]
            if any(v > 0 for v in vals):
                a2.bar([label for _, label in profiled], vals, bottom=bottoms, label=stage, color=cmap(i))
                bottoms = [b + v for b, v in zip(bottoms, vals, strict=True)]
        a2.axhline(4 * ceiling_us(r, "consume_decode"), color="r", linestyle="--", label="4x consume+decode")
        a2.set_ylabel("CPU µs per event")
        a2.set_title("where each event's CPU goes")
        a2.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    lat = r.get("latency")
    if lat:
        a3.bar(["p50", "p99", "max"], [lat["p50_ms"], lat["p99_ms"], lat["max_ms"] or 0], color="#27a",
               label="detected_at")  # fmt: skip
        a3.bar(["visible p50", "visible p99", "visible max"],
               [lat["visible_p50_ms"], lat["visible_p99_ms"], lat["visible_max_ms"]], color="#7a2",
               label="on the output topic")  # fmt: skip
        a3.axhline(200, color="r", linestyle="--", label="200 ms")
        a3.tick_params(axis="x", labelsize=7, rotation=30)
        a3.set_ylabel("ms after produce")
        a3.set_title(f"latency at {lat['rate']:,.0f} events/s")
        a3.legend(fontsize=8)
    fig.savefig(path, dpi=100, bbox_inches="tight")


if __name__ == "__main__":
    asyncio.run(main())
