"""`python -m replaywatch`: the command line."""

from replaywatch.cli import main

main()
