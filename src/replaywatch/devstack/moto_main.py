"""Runs moto's S3 server on 127.0.0.1. argv: --devstack=<dir> (a marker) and the port.

moto's own WSGI application and request handler, served the way ``moto_server`` serves
them, less two per-request costs that made the local S3 the bottleneck of every
benchmark on a 2-core machine (measured 6.8 ms of server CPU per PUT before, see
bench/README.md): moto lists and stats its ~200 package directories on every request
to find the service, and werkzeug logs a line per request. The list is computed once
here, and only errors are logged. What moto stores and answers is unchanged.
"""

from __future__ import annotations

import logging
import sys

import moto.backends
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import run_simple


def main(port: int) -> None:
    modules = tuple(moto.backends.list_of_moto_modules())
    moto.backends.list_of_moto_modules = lambda: modules  # the directory scan, once
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    app = DomainDispatcherApplication(create_backend_app)
    run_simple("127.0.0.1", port, app, threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main(int(sys.argv[2]))
