"""replaywatch: watches fleets of AI agents for replay drift, live, from Kafka."""

__version__ = "0.1.0"
