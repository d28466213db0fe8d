from replaywatch.cli import main

main()
