"""The HTTP endpoints of ``replaywatch run`` (aiohttp, already a dependency of aioboto3):

- ``/metrics``: every metric in Prometheus' text format (the OpenTelemetry Prometheus
  reader's collector in prometheus_client's registry);
- ``/healthz``: 200 while the process and its event loop answer;
- ``/readyz``: 200 when ready (partitions assigned, not stalled), else 503; the body says why.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from replaywatch.exceptions import ConfigError

logger = logging.getLogger(__name__)

Readiness = Callable[[], tuple[bool, str]]


def application(readiness: Readiness) -> web.Application:
    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def readyz(request: web.Request) -> web.Response:
        ready, why = readiness()
        return web.json_response({"ready": ready, "reason": why}, status=200 if ready else 503)

    app = web.Application()
    app.add_routes([web.get("/metrics", metrics), web.get("/healthz", healthz), web.get("/readyz", readyz)])
    return app


@contextlib.asynccontextmanager
async def serving_endpoints(host: str, port: int, readiness: Readiness) -> AsyncIterator[int]:
    """Serve the endpoints on host:port (port 0: not at all); yields the bound port."""
    if not port:
        yield 0
        return
    runner = web.AppRunner(application(readiness), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise ConfigError(
            f"cannot serve /metrics, /healthz and /readyz on {host}:{port}: {exc.strerror}; "
            "set REPLAYWATCH_HTTP_PORT to a free port (0: none)"
        ) from None
    logger.info("serving /metrics, /healthz and /readyz on http://%s:%d", host, port)
    try:
        yield port
    finally:
        await runner.cleanup()
