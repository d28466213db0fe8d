"""Settings: one frozen object, from ``REPLAYWATCH_*`` environment variables and flags.

pydantic-settings reads and validates the environment (types, ranges) and gives one
clear message per bad value; the CLI passes flags in as overrides. Secrets are
``SecretStr`` so that they never print.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import quote

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from pydantic_settings.exceptions import SettingsError

from replaywatch.codec import Limits
from replaywatch.compare import CompareConfig, policy
from replaywatch.envelope.model import EnvelopeSettings
from replaywatch.exceptions import ConfigError
from replaywatch.rates.tally import RatesSettings
from replaywatch.store.retention import Retention


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="REPLAYWATCH_", frozen=True, extra="ignore")

    kafka_bootstrap: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers, host:port[,host:port]")
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="How every Kafka client connects: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        None, description="SASL mechanism (with SASL_*): PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"
    )
    kafka_sasl_username: str | None = Field(None, description="SASL user name")
    kafka_sasl_password: SecretStr | None = Field(None, description="SASL password (environment or secrets file only)")
    kafka_ssl_cafile: Path | None = Field(None, description="CA bundle that signs the brokers' certificates")
    kafka_ssl_certfile: Path | None = Field(None, description="Client certificate (mutual TLS)")
    kafka_ssl_keyfile: Path | None = Field(None, description="Client certificate's private key")
    kafka_ssl_key_password: SecretStr | None = Field(None, description="Password of the client key, if any")
    kafka_ssl_check_hostname: bool = Field(True, description="Check that a broker's certificate names its host")
    input_topic: str = Field("agent.step-attempts.v1", description="Topic of StepAttemptEvent records")
    output_topic: str = Field("replaywatch.comparisons.v1", description="Topic for ReplayComparisonEvent records")
    dlq_topic: str = Field(
        "replaywatch.dead-letters.v1", description="Dead-letter topic for records that break the contract"
    )
    group_id: str = Field("replaywatch", description="Kafka consumer group id")
    instance_id: str | None = Field(
        None, description="Static group membership id: a restarted instance takes its partitions back at once"
    )
    auto_offset_reset: Literal["earliest", "latest"] = Field("earliest", description="Where a new group starts")
    postgres_dsn: SecretStr = Field(
        SecretStr("postgresql://replaywatch@127.0.0.1:5432/replaywatch"), description="PostgreSQL DSN"
    )
    postgres_sslmode: Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] | None = Field(
        None, description="PostgreSQL TLS mode (unset: the DSN's sslmode, else libpq's default, prefer)"
    )
    postgres_sslrootcert: Path | None = Field(
        None, description="CA bundle that signs PostgreSQL's certificate (with verify-ca or verify-full)"
    )
    postgres_schema: str = Field("replaywatch", description="PostgreSQL schema for replaywatch's tables")
    s3_endpoint: str | None = Field(None, description="S3 endpoint URL (unset: AWS)")
    s3_bucket: str = Field("replaywatch-diffs", description="Bucket for diff objects")
    s3_region: str = Field("us-east-1", description="S3 region")
    s3_access_key_id: SecretStr | None = Field(None, description="S3 access key id (unset: the AWS default chain)")
    s3_secret_access_key: SecretStr | None = Field(None, description="S3 secret access key")
    s3_ca_bundle: Path | None = Field(None, description="CA bundle that signs the S3 endpoint's certificate")
    s3_addressing_style: Literal["auto", "path", "virtual"] = Field(
        "auto", description="S3 addressing: path-style (bucket in the path) or virtual-host style"
    )
    s3_concurrency: int = Field(16, ge=1, le=256, description="S3 puts in flight at once")
    s3_client: Literal["auto", "obstore", "aioboto3"] = Field(
        "auto",
        description="S3 client library: obstore (the default: a sixth of aioboto3's CPU per upload) or aioboto3; "
        "auto is obstore unless REPLAYWATCH_S3_CA_BUNDLE is set, which only aioboto3 can use",
    )
    tokens_tolerance: float = Field(0.0, ge=0, allow_inf_nan=False, description="Relative token tolerance (0.01 = 1%)")
    cost_tolerance: float = Field(0.0, ge=0, allow_inf_nan=False, description="Relative cost tolerance")
    ignore_paths: Annotated[tuple[str, ...], NoDecode] = Field(
        (), description="Ignore paths (JSON array, or comma-separated)"
    )
    comparison_base: Literal["first", "previous"] = Field(
        "first", description="Compare with the first or previous attempt"
    )
    usage_preset: str = Field(
        "reference", description="Where usage is read: reference, openai, gen_ai, anthropic or all"
    )
    policy_file: Path | None = Field(
        None, description="Policy file (TOML or YAML): settings per provider, provider version and step"
    )
    schema_registry_url: str | None = Field(
        None, description="Confluent-compatible schema registry (unset: schemas/registry.json, plain Avro output)"
    )
    schema_registry_user_info: SecretStr | None = Field(
        None, description="Basic-auth credentials of the schema registry, user:password"
    )
    schema_registry_ca: Path | None = Field(
        None, description="CA bundle that signs the schema registry's TLS certificate"
    )
    public_url: str | None = Field(
        None, description="Where `replaywatch serve` is reached: each output event links its comparison's page there"
    )
    serve_host: str = Field("127.0.0.1", description="Address of `replaywatch serve` (0.0.0.0 in a pod)")
    serve_port: int = Field(8081, ge=0, le=65535, description="Port of `replaywatch serve`")
    serve_auth: Literal["none", "token", "proxy"] = Field(
        "none",
        description="Who may read `replaywatch serve`: none (only when bound to loopback), token (a bearer token or "
        "HTTP Basic with the token as password), proxy (an auth proxy's user header)",
    )
    serve_token: SecretStr | None = Field(None, description="The token of REPLAYWATCH_SERVE_AUTH=token (a secret)")
    serve_auth_header: str = Field(
        "X-Forwarded-User", description="The header an auth proxy sets to the user (REPLAYWATCH_SERVE_AUTH=proxy)"
    )
    serve_allowed_hosts: Annotated[tuple[str, ...], NoDecode] = Field(
        (),
        description="Host headers `replaywatch serve` answers (comma-separated); empty: the loopback names when "
        "bound to loopback, any otherwise",
    )
    partitions: int = Field(8, ge=1, le=1024, description="Partitions of topics that `run` creates")
    create_topics: bool = Field(
        False, description="Create the input, output and dead-letter topics when missing (else: stop, saying so)"
    )
    create_bucket: bool = Field(False, description="Create the diff bucket when missing (else: stop, saying so)")
    topic_replication_factor: int = Field(3, ge=1, le=32, description="Replication factor of topics it creates")
    topic_min_insync_replicas: int = Field(
        2, ge=1, le=32, description="min.insync.replicas of topics it creates (at most the replication factor)"
    )
    batch_size: int = Field(1000, ge=1, le=100_000, description="Most records in one batch")
    batch_timeout_ms: int = Field(50, ge=1, le=60_000, description="Longest wait for a batch to fill")
    fetch_min_bytes: int = Field(
        65536, ge=1, description="Bytes the broker gathers before it answers a fetch (fewer fetches at low rates)"
    )
    fetch_max_wait_ms: int = Field(
        10, ge=0, le=60_000, description="Longest the broker holds a fetch to gather REPLAYWATCH_FETCH_MIN_BYTES"
    )
    fetch_max_bytes: int = Field(
        32 * 1024 * 1024,
        ge=64 * 1024,
        description="Most bytes of one fetch answer, all partitions together: about what the consumer holds fetched "
        "and not yet prepared (a record larger than this still comes, alone)",
    )
    fetch_partition_bytes: int = Field(
        4 * 1024 * 1024,
        ge=64 * 1024,
        description="Most bytes of one partition in a fetch answer (a record larger than this still comes, alone)",
    )
    max_record_bytes: int = Field(
        16 * 1024 * 1024, ge=1024, description="Largest input record; larger ones are dead-lettered (too_large)"
    )
    max_id_bytes: int = Field(4096, ge=16, le=4096, description="Largest run_id or step_id, in UTF-8 bytes (too_large)")
    max_attestation_bytes: int = Field(
        8 * 1024 * 1024, ge=1024, description="Largest attestation_ids of a snapshot, in UTF-8 bytes (too_large)"
    )
    max_tool_events_bytes: int = Field(
        4 * 1024 * 1024, ge=1024, description="Largest tool_events JSON text, in UTF-8 bytes (too_large)"
    )
    record_cpu_seconds: float = Field(
        1.0,
        gt=0,
        le=600,
        description="CPU one record's comparison may use; past it the record is dead-lettered (too_costly)",
    )
    inflight_mb: int = Field(
        128, ge=1, description="Input bytes prepared and not yet committed before the consumer waits, in MB"
    )
    batch_max_mb: int = Field(16, ge=1, description="Input bytes prepared at once (a poll is cut into such batches)")
    publisher_queue_mb: int = Field(
        64, ge=1, description="Committed events kept in memory for the publisher, in MB (beyond: read from the outbox)"
    )
    shutdown_seconds: float = Field(
        8.0, gt=0, le=60, description="On SIGTERM, time to finish the write in flight and publish before exiting"
    )
    retain_comparisons_days: float = Field(
        90.0, ge=0, description="Days the comparison history is kept (0: forever); see the README's retention"
    )
    retain_steps_days: float = Field(
        30.0, ge=0, description="Days a step's projection is kept after its last update (0: forever)"
    )
    retain_rule_stats_days: float = Field(
        90.0, ge=0, description="Days an ignore rule's statistics are kept after their last update (0: forever)"
    )
    retain_rates_days: float = Field(
        90.0, ge=0, description="Days the rates' windows and alerts are kept, by event time (0: forever)"
    )
    prune_every_seconds: float = Field(300.0, gt=0, description="Seconds between two rounds of pruning")
    cache_steps: int = Field(200_000, ge=0, description="Step projections kept in memory (at most)")
    cache_mb: int = Field(512, ge=0, description="Memory for cached step projections, in MB (at most)")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Log level")
    log_format: Literal["text", "json"] = Field("text", description="Log lines as text, or as JSON objects")
    event_loop: Literal["asyncio", "uvloop", "auto"] = Field(
        "asyncio", description="The event loop of run and replay: asyncio's own, uvloop, or uvloop if installed (auto)"
    )
    native: Literal["auto", "on", "off"] = Field(
        "auto",
        description="The per-record path in native code where it is built (auto), required (on), or Python only (off)",
    )
    http_host: str = Field("127.0.0.1", description="Address of /metrics, /healthz and /readyz (0.0.0.0 in a pod)")
    http_port: int = Field(8080, ge=0, le=65535, description="Port of /metrics, /healthz and /readyz; 0: none")
    adaptive: bool = Field(
        False, description="The default policy judges by its cohorts' learned noise envelopes after their warm-up"
    )
    envelope_warmup: int = Field(30, ge=1, description="Comparisons a cohort's envelope learns from before it judges")
    envelope_margin: float = Field(
        0.02, ge=0, lt=1, description="How far past a learned quantile a score or relative delta must be to cross"
    )
    envelope_stable_rate: float = Field(
        0.02, ge=0, lt=1, description="A path that differs in at most this share of a cohort's re-runs is stable"
    )
    max_cohorts: int = Field(200, ge=1, description="Cohorts per input partition; the attempts of the others pool")
    cohort_kind_path: str = Field(
        "type", min_length=1, description="The spec_snapshot field (dotted when nested) that names a step's kind"
    )
    ready_stall_seconds: float = Field(
        30.0, gt=0, description="/readyz fails when records wait and nothing committed for this long"
    )
    rates: bool = Field(True, description="Count comparisons into windows per cohort, publish rates, raise alerts")
    rates_topic: str = Field("replaywatch.rates.v1", description="Topic for ReplayRateEvent records (closed windows)")
    alerts_topic: str = Field("replaywatch.alerts.v1", description="Topic for alerts, as CloudEvents in binary mode")
    rates_window_seconds: int = Field(60, ge=1, description="Base width of the rates' tumbling windows")
    rates_rollups: Annotated[tuple[int, ...], NoDecode] = Field(
        (300, 3600), description="Wider windows the base ones roll up into, seconds, comma-separated"
    )
    rates_lateness_seconds: int = Field(
        120, ge=0, description="How long after a window closes a late comparison still counts in it"
    )
    rates_max_skew_seconds: int = Field(
        300, ge=0, description="How far ahead of its Kafka timestamp an event's time may move a partition's clock"
    )
    rates_idle_seconds: int = Field(
        600, ge=1, description="A partition that counted nothing for this long (wall clock) holds no window open"
    )
    alert_window_seconds: int = Field(300, ge=1, description="Width of the windows alerts test (base or a rollup)")
    alert_reference_windows: int = Field(12, ge=1, description="Trailing windows that make a cohort's reference")
    alert_min_reference: int = Field(100, ge=1, description="Comparisons a reference needs before a cohort is tested")
    alert_fdr: float = Field(
        0.001, gt=0, lt=1, description="False discovery rate across the cohorts tested in a window (Benjamini-Hochberg)"
    )
    alert_min_ratio: float = Field(1.5, ge=1, description="An alert needs the rate at least this times the reference")
    alert_min_difference: float = Field(0.02, ge=0, description="...and at least this much above it")
    alert_min_comparisons: int = Field(20, ge=1, description="Comparisons a window needs to open an alert")
    alert_resolve_windows: int = Field(2, ge=1, description="Windows back at the reference that resolve an alert")
    alert_cooldown_windows: int = Field(3, ge=0, description="Windows after a resolve in which the cohort cannot alert")
    rates_metric_cohorts: int = Field(
        50, ge=1, description="Cohorts with their own drift-rate gauge (by comparisons); the rest sum into (other)"
    )
    cloudevents: bool = Field(False, description="Add CloudEvents headers (binary mode) to the comparison events")

    @field_validator("schema_registry_url", "public_url", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("rates_rollups", mode="before")
    @classmethod
    def _split_rollups(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(int(w) for w in value.split(",") if w.strip())
        return value

    @model_validator(mode="after")
    def _rates(self) -> Settings:
        try:
            self.rates_settings().check()
        except ValueError as exc:
            raise ValueError(f"{exc}: check REPLAYWATCH_RATES_WINDOW_SECONDS, REPLAYWATCH_RATES_ROLLUPS and "
                             "REPLAYWATCH_ALERT_WINDOW_SECONDS") from None  # fmt: skip
        return self

    @field_validator("serve_allowed_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(h.strip() for h in value.split(",") if h.strip())
        return value

    @field_validator("ignore_paths", mode="before")
    @classmethod
    def _split_paths(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            if not text:
                return ()
            if text.startswith("["):
                return tuple(json.loads(text))
            return tuple(p.strip() for p in text.split(",") if p.strip())
        return value

    @model_validator(mode="after")
    def _sasl(self) -> Settings:
        if self.kafka_security_protocol.startswith("SASL_"):
            missing = [n for n in ("kafka_sasl_mechanism", "kafka_sasl_username", "kafka_sasl_password")
                       if getattr(self, n) is None]  # fmt: skip
            if missing:
                raise ValueError(
                    f"REPLAYWATCH_KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol} needs "
                    + ", ".join(f"REPLAYWATCH_{n.upper()}" for n in missing)
                )
        return self

    @model_validator(mode="after")
    def _replicas(self) -> Settings:
        if self.topic_min_insync_replicas > self.topic_replication_factor:
            raise ValueError(
                f"REPLAYWATCH_TOPIC_MIN_INSYNC_REPLICAS ({self.topic_min_insync_replicas}) is more than "
                f"REPLAYWATCH_TOPIC_REPLICATION_FACTOR ({self.topic_replication_factor}): no write could succeed"
            )
        return self

    @model_validator(mode="after")
    def _s3_client(self) -> Settings:
        if self.s3_client == "obstore" and self.s3_ca_bundle is not None:
            raise ValueError(
                "REPLAYWATCH_S3_CA_BUNDLE needs REPLAYWATCH_S3_CLIENT=aioboto3 (or auto): obstore trusts only the "
                "system's CAs; add the CA to the system store or use aioboto3"
            )
        return self

    @property
    def s3_library(self) -> Literal["obstore", "aioboto3"]:
        """The S3 client ``REPLAYWATCH_S3_CLIENT`` chooses (auto: obstore unless a CA bundle is set)."""
        if self.s3_client == "auto":
            return "aioboto3" if self.s3_ca_bundle is not None else "obstore"
        return self.s3_client

    def postgres_url(self) -> str:
        """The DSN with ``REPLAYWATCH_POSTGRES_SSLMODE`` and ``_SSLROOTCERT`` added as its
        ``sslmode`` and ``sslrootcert`` parameters (asyncpg reads them there)."""
        dsn = self.postgres_dsn.get_secret_value()
        extra = {"sslmode": self.postgres_sslmode, "sslrootcert": str(self.postgres_sslrootcert or "") or None}
        params = "&".join(f"{k}={quote(v, safe='/')}" for k, v in extra.items() if v)
        if not params:
            return dsn
        return f"{dsn}{'&' if '?' in dsn else '?'}{params}"

    def limits(self, adaptive: bool = False) -> Limits:
        """What one record may hold; with ``adaptive`` (a policy is), the step's kind is
        read from its spec too."""
        return Limits(self.max_record_bytes, self.max_id_bytes, self.max_attestation_bytes, self.max_tool_events_bytes,
                      self.record_cpu_seconds, self.cohort_kind_path if adaptive else None)  # fmt: skip

    def rates_settings(self) -> RatesSettings:
        return RatesSettings(
            window_ms=self.rates_window_seconds * 1000, rollups_ms=tuple(w * 1000 for w in self.rates_rollups),
            lateness_ms=self.rates_lateness_seconds * 1000, max_skew_ms=self.rates_max_skew_seconds * 1000,
            idle_ms=self.rates_idle_seconds * 1000, max_cohorts=self.max_cohorts,
            alert_width_ms=self.alert_window_seconds * 1000, reference_windows=self.alert_reference_windows,
            min_reference=self.alert_min_reference, alpha=self.alert_fdr, min_ratio=self.alert_min_ratio,
            min_difference=self.alert_min_difference, min_comparisons=self.alert_min_comparisons,
            resolve_windows=self.alert_resolve_windows, cooldown_windows=self.alert_cooldown_windows,
        )  # fmt: skip

    def envelopes(self) -> EnvelopeSettings:
        return EnvelopeSettings(warmup=self.envelope_warmup, margin=self.envelope_margin,
                                stable_rate=self.envelope_stable_rate, max_cohorts=self.max_cohorts)  # fmt: skip

    def retention(self) -> Retention:
        return Retention(self.retain_comparisons_days, self.retain_steps_days, self.retain_rule_stats_days,
                         self.prune_every_seconds, self.retain_rates_days)  # fmt: skip

    def compare_config(self) -> CompareConfig:
        """The default settings, with the policy file's rules over them when there is one."""
        default = replace(CompareConfig.build(
            self.tokens_tolerance, self.cost_tolerance, self.ignore_paths, self.comparison_base, self.usage_preset
        ), adaptive=self.adaptive)  # fmt: skip
        return policy.load(self.policy_file, default) if self.policy_file is not None else default

    @property
    def publisher_group(self) -> str:
        """The group under which the outbox publisher commits its progress, atomically
        with the events it publishes."""
        return f"{self.group_id}.outbox"


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment, with non-None ``overrides`` (flags) on top, and
    from files in ``REPLAYWATCH_SECRETS_DIR`` (one file per setting, named like its
    variable: a Kubernetes Secret mounted as a volume), so that secrets need never be
    flags that ``ps`` shows.

    Raises ConfigError naming each bad setting and its variable.
    """
    given = {k: v for k, v in overrides.items() if v is not None}
    secrets_dir = os.environ.get("REPLAYWATCH_SECRETS_DIR") or None
    try:
        settings = Settings(_secrets_dir=secrets_dir, **given)  # type: ignore[arg-type]
        settings.compare_config()
    except ValidationError as exc:
        problems = "; ".join(
            f"REPLAYWATCH_{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"bad settings: {problems}") from None
    except (SettingsError, ValueError) as exc:
        raise ConfigError(f"bad settings: {exc}") from None
    return settings
