"""The fault harness: `replaywatch run` as a subprocess over a long stream, faults at
seeded random times, progress sampled all along, and a report at the end."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer

from replaywatch import codec, demo
from replaywatch.devstack import Stack
from tests.integration.streaming import Lane, oracle_projection, spawn_run


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set (VmHWM), in MB; 0 when gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


@dataclass
class FaultRecord:
    name: str
    at: float
    ended: float
    recovered: float | None = None

    @property
    def recovery_s(self) -> float | None:
        return None if self.recovered is None else self.recovered - self.ended


@dataclass
class Progress:
    processed: int = 0  # sum of stored next offsets
    outputs: Counter[str] = field(default_factory=Counter)
    raw_outputs: int = 0
    samples: list[tuple[float, int]] = field(default_factory=list)


class FaultRun:
    def __init__(self, lane: Lane, stack: Stack, events: list[dict[str, Any]], *, seed: int,
                 extra_env: dict[str, str] | None = None) -> None:  # fmt: skip
        self.lane = lane
        self.stack = stack
        self.events = events
        self.rng = random.Random(seed)
        self.progress = Progress()
        self.faults: list[FaultRecord] = []
        self.proc: subprocess.Popen[bytes] | None = None
        self.crashes = 0
        self.extra_env = extra_env or {}
        self.bad_sent = 0
        self.t0 = time.monotonic()
        self.log_path = f"/tmp/replaywatch-faults-{lane.tag}.log"
        self._killing = False
        self.peak_rss_mb = 0.0

    # -- the consumer process ------------------------------------------------------------------

    def spawn(self) -> None:
        env = {**os.environ, **self.lane.env, "REPLAYWATCH_INSTANCE_ID": "faults-0", **self.extra_env}
        with open(self.log_path, "ab") as log:
            self.proc = spawn_run(env, stderr=log)

    def check_alive(self) -> None:
        """A consumer that exited by itself is a crash; count it and start another."""
        if not self._killing and self.proc is not None and self.proc.poll() is not None:
            self.crashes += 1
            self.spawn()

    async def kill(self) -> None:
        assert self.proc is not None
        self._killing = True
        try:
            self.proc.send_signal(signal.SIGKILL)
            await asyncio.to_thread(self.proc.wait)
            self.spawn()
        finally:
            self._killing = False

    def stop(self) -> int:
        """SIGTERM, as at the end of the run: an expected exit, not a crash."""
        assert self.proc is not None
        self._killing = True
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)

    # -- background: feed, sample ----------------------------------------------------------------

    async def feed(self, chunks: int, pause: float, bad: list[bytes] | None = None) -> None:
        size = max(1, len(self.events) // chunks)
        bad = list(bad or [])
        per_chunk = max(1, len(bad) // chunks) if bad else 0
        for i in range(0, len(self.events), size):
            while True:
                try:
                    await self.lane.send(self.events[i : i + size])
                    if bad:
                        take, bad = bad[:per_chunk], bad[per_chunk:]
                        await self.lane.send(take)
                        self.bad_sent += len(take)
                    break
                except Exception:
                    await asyncio.sleep(1)  # the broker is restarting: try again
            await asyncio.sleep(pause)
        while bad:
            try:
                await self.lane.send(bad)
                self.bad_sent += len(bad)
                bad = []
            except Exception:
                await asyncio.sleep(1)

    async def sample(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                conn = await asyncpg.connect(self.lane.endpoints.postgres_dsn, timeout=2)
                try:
                    n = await conn.fetchval(
                        f'SELECT coalesce(sum(next_offset), 0) FROM "{self.lane.schema}".consumer_offset'
                    )
                finally:
                    await conn.close()
                now = time.monotonic()
                if n > self.progress.processed:
                    for f in self.faults:
                        if f.recovered is None and now >= f.ended:
                            f.recovered = now
                self.progress.processed = int(n)
                self.progress.samples.append((now - self.t0, int(n)))
            except Exception:
                pass  # PostgreSQL may be the thing restarting
            self.check_alive()
            await asyncio.sleep(0.25)

    async def watch_rss(self, stop: asyncio.Event) -> None:
        """Keep ``peak_rss_mb``: the highest peak RSS of the consumer processes seen."""
        while not stop.is_set():
            if self.proc is not None and self.proc.poll() is None:
                self.peak_rss_mb = max(self.peak_rss_mb, peak_rss_mb(self.proc.pid))
            await asyncio.sleep(0.2)

    async def read_outputs(self, stop: asyncio.Event) -> None:
        s = self.lane.settings()
        consumer = AIOKafkaConsumer(
            s.output_topic, bootstrap_servers=s.kafka_bootstrap, isolation_level="read_committed",
            auto_offset_reset="earliest", enable_auto_commit=False, group_id=None,
        )  # fmt: skip
        await consumer.start()
        try:
            while not stop.is_set():
                try:
                    batch = await consumer.getmany(timeout_ms=250)
                except Exception:
                    await asyncio.sleep(0.5)
                    continue
                for msgs in batch.values():
                    for m in msgs:
                        self.progress.raw_outputs += 1
                        self.progress.outputs[codec.decode_comparison(m.value)["event_id"]] += 1
        finally:
            await consumer.stop()

    # -- faults ----------------------------------------------------------------------------------

    async def fault(self, name: str, action: Any) -> None:
        at = time.monotonic()
        await action()
        self.faults.append(FaultRecord(name, at, time.monotonic()))

    async def restart_service(self, service: str, down_for: float = 1.0) -> None:
        await asyncio.to_thread(self.stack.stop, service)
        await asyncio.sleep(down_for)
        await asyncio.to_thread(self.stack.start, service)

    async def stop_s3(self, seconds: float) -> None:
        """A real stop of the S3 server (its objects are on disk), then a start."""
        await self.restart_service("s3", down_for=seconds)

    # -- the end ---------------------------------------------------------------------------------

    async def wait_done(self, expected: set[str], total_in: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.progress.processed >= total_in and expected <= set(self.progress.outputs):
                await asyncio.sleep(2)  # anything extra would show now
                return
            await asyncio.sleep(0.5)

    async def verdict(self, expected: dict[str, str], total_in: int) -> dict[str, Any]:
        config = self.lane.settings().compare_config()
        got = self.progress.outputs
        dead = await self.lane.read(self.lane.settings().dlq_topic, want=self.bad_sent, timeout=30)
        missing_diffs = await self._missing_diffs()
        return {
            "faults injected": len(self.faults),
            "events in": total_in,
            "events out (distinct ids)": len(got),
            "events out (raw, read_committed)": self.progress.raw_outputs,
            "expected out": len(expected),
            "lost": len(set(expected) - set(got)),
            "unexpected": len(set(got) - set(expected)),
            "duplicated ids": sum(1 for n in got.values() if n > 1),
            "dead-lettered": len({(int(dict(m.headers)["replaywatch.source.offset"]), m.partition) for m in dead}),
            "dead-letter records (raw)": len(dead),
            "bad records sent": self.bad_sent,
            "processed offsets": self.progress.processed,
            "crashes": self.crashes,
            "projections equal oracle": await self.lane.projections() == oracle_projection(self.events, config),
            "diffs missing from S3": missing_diffs,
            "max recovery s": max((f.recovery_s or 0.0) for f in self.faults) if self.faults else 0.0,
        }

    async def _missing_diffs(self) -> int:
        conn = await asyncpg.connect(self.lane.endpoints.postgres_dsn)
        try:
            shas = [
                r[0]
                for r in await conn.fetch(
                    f'SELECT DISTINCT diff_sha256 FROM "{self.lane.schema}".comparison WHERE diff_sha256 IS NOT NULL'
                )
            ]
        finally:
            await conn.close()
        from replaywatch.store.artifacts import object_key
        from tests.conftest import s3_client

        missing = 0
        async with s3_client(self.lane.endpoints) as s3:
            for sha in shas:
                try:
                    await s3.head_object(Bucket=self.lane.bucket, Key=object_key(sha))
                except Exception:
                    missing += 1
        return missing

    def table(self, result: dict[str, Any]) -> str:
        lines = ["| figure | value |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in result.items()]
        lines += ["", "| fault | at (s) | recovery (s) |", "|---|---|---|"]
        for f in self.faults:
            rec = "n/a" if f.recovery_s is None else f"{f.recovery_s:.1f}"
            lines.append(f"| {f.name} | {f.at - self.t0:.1f} | {rec} |")
        return "\n".join(lines)


def expected_for(events: list[dict[str, Any]], lane: Lane) -> dict[str, str]:
    return demo.expected_comparisons(events, lane.settings().compare_config())
