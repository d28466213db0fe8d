"""What telemetry costs: `replaywatch run` over the same N events (default 200,000, as in
e2e.py, each carrying a W3C traceparent header as an instrumented agent runtime sends
it), with telemetry off (OTEL_SDK_DISABLED=true: the API's no-ops) and on (the SDK;
metrics served on /metrics and scraped every 5 s, and exported by OTLP every 5 s too
(OTEL_METRIC_EXPORT_INTERVAL=5000: at the SDK's 60 s a run would never push); spans
exported by OTLP; both to a local OTLP receiver that reads and discards them; with
--inspect it decodes the spans and counts them by name, with their links and bytes).

The runs alternate off, on with 10% of the producers' traces sampled (what production
tracing samples), on with every trace sampled (the worst case), ... (--rounds, default 5
each) so that drift in the machine's load falls on all; the report takes each mode's
median. The tolerance is 1% by default: the fleet e2e.py describes, where 6% of the
events drift or diverge (--tolerance 0: 70% drift).
Results: bench/results/telemetry-<time>.{json,md}. Usage: python bench/telemetry_cost.py
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from aiohttp import ClientSession, web
from aiokafka import AIOKafkaProducer

sys.path.insert(0, str(Path(__file__).resolve().parent))

import stages
from e2e import Bench, fleet

from replaywatch import codec, demo
from replaywatch.config import load_settings
from replaywatch.devstack import Stack
from replaywatch.devstack.stack import default_dir

ROOT = Path(__file__).resolve().parents[1]


MODES = {"off": 1.0, "on-10%-sampled": 0.1, "on-10%-sampled-metrics-scraped": 0.1, "on": 1.0}
"""mode -> the fraction of input records whose producer trace is sampled"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


RECEIVED: Counter[str] = Counter()
"""Bytes received by signal; with --inspect, spans by name and links too."""
INSPECT = False


def _tally_spans(body: bytes) -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    req = ExportTraceServiceRequest.FromString(body)
    for rs in req.resource_spans:
        for ss in rs.scope_spans:
            for span in ss.spans:
                RECEIVED[f"spans {span.name.split(' ')[0]}"] += 1
                RECEIVED[f"span bytes {span.name.split(' ')[0]}"] += span.ByteSize()
                RECEIVED["links"] += len(span.links)


async def otlp_sink(port: int) -> web.AppRunner:
    received = RECEIVED

    async def take(request: web.Request) -> web.Response:
        body = await request.read()
        received["bytes"] += len(body)
        received[f"bytes {request.path}"] += len(body)
        if INSPECT and request.path.endswith("traces"):
            _tally_spans(body)
        return web.Response(body=b"", content_type="application/x-protobuf")

    app = web.Application()
    app.add_routes([web.post("/v1/metrics", take), web.post("/v1/traces", take)])
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


async def produce_traced(b: Bench, topic: str, records: list[tuple[bytes, bytes]], sampled: float) -> None:
    """Each record with a traceparent; a fraction ``sampled`` of them flagged sampled."""
    p = AIOKafkaProducer(bootstrap_servers=b.bootstrap, linger_ms=20, max_batch_size=1 << 20, acks=1)
    await p.start()
    try:
        for n, (key, value) in enumerate(records):
            flags = "01" if (n * sampled) % 1 + sampled >= 1 else "00"
            header = f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-{flags}".encode()
            await p.send(topic, value, key=key, headers=[("traceparent", header)])
        await p.flush()
    finally:
        await p.stop()


async def scrape(port: int, stop: asyncio.Event) -> int:
    """GET /metrics every 5 s, as Prometheus would; how many scrapes answered."""
    done = 0
    async with ClientSession() as http:
        while not stop.is_set():
            try:
                async with http.get(f"http://127.0.0.1:{port}/metrics") as resp:
                    await resp.read()
                    done += resp.status == 200
            except OSError:
                pass
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 5)
    return done


def pin_stack(stack: Stack, cpus: set[int]) -> None:
    """Every thread of the local stack's processes (and PostgreSQL's backends, which its
    postmaster forks) on ``cpus``."""
    for name in ("kafka", "postgres", "s3", "registry"):
        pid = stack.pid(name)
        if pid is None:
            continue
        for task in Path(f"/proc/{pid}/task").glob("*"):
            with contextlib.suppress(OSError):
                os.sched_setaffinity(int(task.name), cpus)


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--partitions", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument(
        "--tolerance",
        type=float,
        default=0.01,
        help="token and cost tolerance (0.01: 6%% of events drift or diverge, the fleet e2e.py describes; "
        "0: 70%% of comparisons drift, the worst case)",
    )
    ap.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=(os.cpu_count() or 1) >= 2,
        help="replaywatch alone on CPU 0; the stack, the OTLP receiver and this process on the others "
        "(so that what telemetry costs replaywatch is not mixed with what its receiver costs the machine)",
    )
    ap.add_argument("--modes", default=",".join(MODES), help="which modes to run, comma-separated")
    ap.add_argument("--profile", action="store_true", help="each run under py-spy, its CPU sorted into stages "
                    "(µs per event; telemetry's own frames are a stage)")  # fmt: skip
    ap.add_argument("--inspect", action="store_true", help="decode the spans received (opentelemetry-proto) and "
                    "count them by name, with their links and bytes")  # fmt: skip
    args = ap.parse_args()
    global INSPECT
    INSPECT = args.inspect
    env = {k: v for k, v in os.environ.items() if k.startswith("REPLAYWATCH_")}
    if "REPLAYWATCH_KAFKA_BOOTSTRAP" not in env:
        env |= Stack(default_dir()).env()
    command = [sys.executable, "-m", "replaywatch", "run"]
    profile = None
    if args.profile:  # each run under py-spy: telemetry's share of the process, by frame (bench/stages.py)
        profile = ROOT / "bench" / "results" / f"telemetry-profile-{uuid.uuid4().hex[:6]}"
        profile.mkdir(parents=True, exist_ok=True)
    if args.pin:
        others = set(range(1, os.cpu_count() or 2))
        pin_stack(Stack(default_dir()), others)
        os.sched_setaffinity(0, others)
        command = ["taskset", "-c", "0", *command]
    b = Bench(env, args.partitions, default_dir())
    events = fleet(args.events, seed=5)
    records = [(e["run_id"].encode(), codec.encode_attempt(e)) for e in events]
    tolerances = {
        "REPLAYWATCH_TOKENS_TOLERANCE": str(args.tolerance),
        "REPLAYWATCH_COST_TOLERANCE": str(args.tolerance),
    }
    expected = demo.expected_comparisons(
        events, load_settings(**{k[12:].lower(): v for k, v in tolerances.items()}).compare_config()
    )
    sink_port = free_port()
    sink = await otlp_sink(sink_port)
    tag = uuid.uuid4().hex[:6]
    modes = {m: MODES[m] for m in args.modes.split(",")}
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
    try:
        for n in range(args.rounds):
            for mode, sampled in modes.items():
                name = f"telemetry-{mode.replace('%', '')}-{n}"
                http_port = free_port()
                extra = {"OTEL_SDK_DISABLED": "true"} if mode == "off" else {
                    "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink_port}",
                    # pushed as often as /metrics is scraped: at the SDK's 60 s a 20 s run never pushes
                    "OTEL_METRIC_EXPORT_INTERVAL": "5000",
                    "REPLAYWATCH_HTTP_PORT": str(http_port),
                }  # fmt: skip
                if mode.endswith("metrics-scraped"):  # metrics from /metrics alone (a ServiceMonitor), spans by OTLP
                    extra["OTEL_METRICS_EXPORTER"] = "prometheus"
                e = b.system_env(f"{tag}{mode.replace('-', '').replace('%', '')}{n}", **extra, **tolerances)
                await b.create(e["REPLAYWATCH_INPUT_TOPIC"], e["REPLAYWATCH_OUTPUT_TOPIC"], e["REPLAYWATCH_DLQ_TOPIC"])
                await produce_traced(b, e["REPLAYWATCH_INPUT_TOPIC"], records, sampled)
                stop = asyncio.Event()
                scraper = asyncio.create_task(scrape(http_port, stop)) if mode != "off" else None
                argv = command
                if profile is not None:
                    # full file names: py-spy shortens the SDK's to "_shared_internal/__init__.py",
                    # which no stage would claim as telemetry's
                    flags = os.environ.get("BENCH_PY_SPY_FLAGS", "--nonblocking --full-filenames").split()
                    spy = [str(Path(sys.executable).with_name("py-spy")), "record", *flags, "--rate", "250",
                           "--format", "raw", "-o", str(profile / f"{name}.txt"), "--"]  # fmt: skip
                    argv = [*command[:3], *spy, *command[3:]] if command[0] == "taskset" else [*spy, *command]
                r = await b.run_system(f"{name}-profiled" if profile else name, argv, e,
                                       e["REPLAYWATCH_OUTPUT_TOPIC"], len(expected))  # fmt: skip
                if profile is not None:
                    r["stages_us"] = stages.breakdown(profile / f"{name}.txt", len(records), 250, r["cpu_s"])
                    print("  " + ", ".join(f"{k} {v:.1f}" for k, v in r["stages_us"].items() if v >= 0.05), flush=True)
                stop.set()
                r["scrapes"] = await scraper if scraper else 0
                r["events_per_s"] = len(records) / r["seconds"]
                r["cpu_s_per_1000"] = r["cpu_s"] / len(records) * 1000
                # the steady state, past start-up and the group's join (whose time varies by a second)
                steady_records = len(records) * r["steady"]["share"]
                r["steady_events_per_s"] = steady_records / r["steady"]["seconds"]
                r["steady_cpu_us"] = r["steady"]["cpu_s"] / steady_records * 1e6
                runs[mode].append(r)
                print(f"{name}: {r['events_per_s']:,.0f} events/s ({r['steady_events_per_s']:,.0f} steady), "
                      f"{r['cpu_s_per_1000']:.3f} CPU s/1000 ({r['steady_cpu_us']:.1f} µs/event steady), "
                      f"{r['scrapes']} scrapes", flush=True)  # fmt: skip
    finally:
        await sink.cleanup()

    def median(key: str) -> dict[str, float]:
        return {m: statistics.median(r[key] for r in rs) for m, rs in runs.items()}

    eps, cpu = median("events_per_s"), median("cpu_s_per_1000")
    steady, steady_cpu = median("steady_events_per_s"), median("steady_cpu_us")
    on = [m for m in modes if m != "off" and "off" in modes]

    def slower(of: dict[str, float]) -> dict[str, float]:
        return {m: 1 - of[m] / of["off"] for m in on}

    def dearer(of: dict[str, float]) -> dict[str, float]:
        return {m: of[m] / of["off"] - 1 for m in on}

    throughput_cost, cpu_cost = slower(eps), dearer(cpu)
    steady_throughput_cost, steady_cpu_cost = slower(steady), dearer(steady_cpu)
    # each round's run beside the round's "off" run (minutes apart at most): the median of
    # those ratios, which drift in the machine's load moves less than the medians above
    paired = {m: {"throughput_cost": statistics.median(1 - r["steady_events_per_s"] / o["steady_events_per_s"]
                                                       for r, o in zip(runs[m], runs["off"], strict=True)),
                  "cpu_cost": statistics.median(r["steady_cpu_us"] / o["steady_cpu_us"] - 1
                                                for r, o in zip(runs[m], runs["off"], strict=True))}
              for m in on}  # fmt: skip
    result = {
        "tolerance": args.tolerance, "pinned": args.pin,
        "events": len(records), "comparisons": len(expected), "runs": runs, "median_events_per_s": eps,
        "median_cpu_s_per_1000": cpu, "otlp_received": dict(RECEIVED),
        "throughput_cost": throughput_cost, "cpu_cost": cpu_cost,
        "median_steady_events_per_s": steady, "median_steady_cpu_us": steady_cpu,
        "steady_throughput_cost": steady_throughput_cost, "steady_cpu_cost": steady_cpu_cost,
        "paired": paired,
    }  # fmt: skip
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (out / f"telemetry-{stamp}.json").write_text(json.dumps(result, indent=2, default=str))
    each = {m: ", ".join(f"{r['events_per_s']:,.0f}" for r in runs[m]) for m in runs}
    each_steady = {m: ", ".join(f"{r['steady_events_per_s']:,.0f}" for r in runs[m]) for m in runs}
    table = [
        "| telemetry | events/s, steady (median) | CPU µs per event, steady | events/s, start to end | "
        "CPU s per 1,000, start to end | runs (steady events/s) | runs (events/s, start to end) |",
        "|---|---:|---:|---:|---:|---|---|",
        *(f"| {m} | {steady[m]:,.0f} | {steady_cpu[m]:.1f} | {eps[m]:,.0f} | {cpu[m]:.3f} | {each_steady[m]} "
          f"| {each[m]} |" for m in modes),
        "",
        *(f"telemetry {m}: throughput cost {100 * steady_throughput_cost[m]:.1f}% steady "
          f"({100 * throughput_cost[m]:.1f}% start to end), CPU cost {100 * steady_cpu_cost[m]:.1f}% steady "
          f"({100 * cpu_cost[m]:.1f}% start to end) (goal: under 5%)" for m in on),
        *(f"telemetry {m}, each round beside its own off run (median of {args.rounds}): throughput cost "
          f"{100 * c['throughput_cost']:.1f}%, CPU cost {100 * c['cpu_cost']:.1f}% (steady)"
          for m, c in paired.items()),
        f"OTLP received: {dict(RECEIVED)}",
    ]  # fmt: skip
    (out / f"telemetry-{stamp}.md").write_text("\n".join(table) + "\n")
    print("\n".join(table))


if __name__ == "__main__":
    asyncio.run(main())
