"""Runs moto's S3 server on 127.0.0.1. argv: --devstack=<dir> (a marker) and the port.

moto's own WSGI application (what ``moto_server`` serves), served by cheroot, a
production WSGI server, instead of werkzeug's development server. Measured here on
2 cores (bench/README.md): werkzeug starts a thread and closes the connection for
every request, and moto lists and stats its ~200 package directories on every
request to find the service; that cost 5.4 ms of server CPU and 5.5 ms of client
CPU per PUT. With HTTP keep-alive, a thread pool and the directory list computed
once: 4.1 ms and 3.8 ms. What moto stores and answers is unchanged; header names
reach it as WSGI folds them, so S3 metadata keys should use dashes, not underscores
(as behind most proxies).
"""

from __future__ import annotations

import sys

import moto.backends
from cheroot import wsgi
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app


def main(port: int) -> None:
    modules = tuple(moto.backends.list_of_moto_modules())
    moto.backends.list_of_moto_modules = lambda: modules  # the directory scan, once
    app = DomainDispatcherApplication(create_backend_app)
    server = wsgi.Server(("127.0.0.1", port), app, numthreads=8, request_queue_size=64)
    # cheroot closes keep-alive connections beyond 10 (its default); a client with more
    # uploads in flight (REPLAYWATCH_S3_CONCURRENCY, 16) would reconnect for every other PUT.
    server.keep_alive_conn_limit = 256
    server.safe_start()


if __name__ == "__main__":
    main(int(sys.argv[2]))
