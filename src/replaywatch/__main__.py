"""`python -m replaywatch` and the `replaywatch` command: the command line.

For ``run``, SIGTERM and SIGINT are taken from the first line: until the pipeline
installs its own handlers (it stops gracefully), a signal during the imports and the
start-up ends the process with status 0 and one line, as a pod being stopped expects,
not with a traceback or Python's default death by signal. Other commands keep
Python's defaults (``compare`` says its verdict by its exit status)."""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType


def _stopped_early(signum: int, frame: FrameType | None) -> None:
    # os._exit, not SystemExit: an exception raised here lands in whatever the start-up
    # was doing, and an import's broad ``except`` could swallow it and start the
    # pipeline as if no signal came. Nothing is committed before the handlers move.
    sys.stderr.write(f"replaywatch: stopped by {signal.Signals(signum).name} while starting; nothing was committed\n")
    sys.stderr.flush()
    os._exit(0)


def main() -> None:
    command = next((a for a in sys.argv[1:] if not a.startswith("-")), None)
    if command == "run":
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, _stopped_early)
    from replaywatch.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
