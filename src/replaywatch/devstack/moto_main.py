"""Runs moto's S3 server on 127.0.0.1. argv: --devstack=<dir> (a marker) and the port."""

from __future__ import annotations

import sys

from moto.server import main

if __name__ == "__main__":
    main(["-H", "127.0.0.1", "-p", sys.argv[2]])
