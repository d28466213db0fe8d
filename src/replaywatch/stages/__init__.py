"""The pipeline's stages: prepare (decode, compare, encode), write (the commit point)
and the checkpoint after it, built together from the adapters in ``build``."""

from __future__ import annotations

from dataclasses import dataclass

from replaywatch.config import Settings
from replaywatch.rates.cloudevents import source_of
from replaywatch.runtime.adapters import Adapters
from replaywatch.runtime.retry import Backoff
from replaywatch.stages.checkpoint import Checkpoint
from replaywatch.stages.prepare import Preparer
from replaywatch.stages.writer import Writer
from replaywatch.state.cache import StepCache
from replaywatch.state.clocks import Clocks
from replaywatch.state.envelopes import Envelopes
from replaywatch.state.projections import Projections
from replaywatch.state.rule_stats import IgnoreRuleStats
from replaywatch.stream.publisher import RECORD_OVERHEAD
from replaywatch.telemetry.health import Health


@dataclass(frozen=True)
class Stages:
    projections: Projections
    envelopes: Envelopes
    clocks: Clocks
    preparer: Preparer
    writer: Writer
    checkpoint: Checkpoint
    rule_stats: IgnoreRuleStats


def build(settings: Settings, adapters: Adapters, retry: Backoff, health: Health) -> Stages:
    """Every stage over the same projections, writer and retry policy."""
    config = settings.compare_config()
    projections = Projections(StepCache(settings.cache_steps, settings.cache_mb * 1024 * 1024), adapters.store, config)
    envelopes = Envelopes(adapters.store)
    clocks = Clocks(adapters.store)
    writer = Writer(store=adapters.store, diffs=adapters.artifacts, dead_letters=adapters.dead_letters, retry=retry,
                    topic=settings.input_topic, group=settings.group_id)  # fmt: skip
    kinds = config.any_adaptive or settings.rates  # cohorts need the step's kind
    preparer = Preparer(projections=projections, envelopes=envelopes, envelope_settings=settings.envelopes(),
                        diffs=adapters.artifacts, config=config, limits=settings.limits(kinds),
                        upload=writer.upload, set_aside=writer.set_aside,
                        event_bytes=adapters.output_limit - RECORD_OVERHEAD, topic=settings.input_topic,
                        group=settings.group_id, schemas=adapters.schemas, output_schema_id=adapters.output_schema_id,
                        public_url=settings.public_url, clocks=clocks,
                        rates=settings.rates_settings() if settings.rates else None,
                        cloudevents_source=source_of(settings.group_id, settings.input_topic)
                        if settings.cloudevents else None)  # fmt: skip
    rule_stats = IgnoreRuleStats(config)
    checkpoint = Checkpoint(publisher=adapters.publisher, projections=projections, consumer=adapters.consumer,
                            rule_stats=rule_stats, health=health)  # fmt: skip
    return Stages(projections, envelopes, clocks, preparer, writer, checkpoint, rule_stats)
