"""[helm] Security settings: the Kafka client options every client shares, PostgreSQL TLS,
secrets from files, and no secret on the command line."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from typer.testing import CliRunner

from replaywatch.cli import app
from replaywatch.config import load_settings
from replaywatch.exceptions import ConfigError
from replaywatch.store.artifacts import S3Target
from replaywatch.stream.kafka_client import client_options


def test_plaintext_by_default() -> None:
    assert client_options(load_settings(kafka_bootstrap="k:9092")) == {
        "bootstrap_servers": "k:9092", "security_protocol": "PLAINTEXT",
    }  # fmt: skip


def test_sasl_ssl_with_scram_and_a_ca() -> None:
    s = load_settings(
        kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="SCRAM-SHA-512", kafka_sasl_username="rw",
        kafka_sasl_password="s3cret", kafka_ssl_check_hostname=False,
    )  # fmt: skip
    opts = client_options(s)
    assert (opts["sasl_mechanism"], opts["sasl_plain_username"], opts["sasl_plain_password"]) == (
        "SCRAM-SHA-512", "rw", "s3cret")  # fmt: skip
    assert isinstance(opts["ssl_context"], ssl.SSLContext) and not opts["ssl_context"].check_hostname
    assert "s3cret" not in repr(s)  # a SecretStr


def test_sasl_without_its_credentials_is_refused_at_start() -> None:
    with pytest.raises(ConfigError, match=r"SASL_PLAINTEXT needs REPLAYWATCH_KAFKA_SASL_MECHANISM, .*_PASSWORD"):
        load_settings(kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_username="rw")


def test_unreadable_tls_files_are_one_clear_error(tmp_path: Path) -> None:
    s = load_settings(kafka_security_protocol="SSL", kafka_ssl_cafile=tmp_path / "missing.pem")
    with pytest.raises(ConfigError, match="cannot load the Kafka TLS files"):
        client_options(s)


def test_postgres_tls_parameters_join_the_dsn() -> None:
    s = load_settings(postgres_dsn="postgresql://rw@db/rw?application_name=x", postgres_sslmode="verify-full",
                      postgres_sslrootcert=Path("/etc/pg/ca.crt"))  # fmt: skip
    assert s.postgres_url() == "postgresql://rw@db/rw?application_name=x&sslmode=verify-full&sslrootcert=/etc/pg/ca.crt"
    assert load_settings(postgres_dsn="postgresql://rw@db/rw").postgres_url() == "postgresql://rw@db/rw"


def test_secrets_come_from_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "REPLAYWATCH_KAFKA_SASL_PASSWORD").write_text("from-a-file")
    monkeypatch.setenv("REPLAYWATCH_SECRETS_DIR", str(tmp_path))
    s = load_settings()
    assert s.kafka_sasl_password is not None and s.kafka_sasl_password.get_secret_value() == "from-a-file"


def test_replicas_beyond_the_replication_factor_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"MIN_INSYNC_REPLICAS \(3\) is more than .*REPLICATION_FACTOR \(2\)"):
        load_settings(topic_replication_factor=2, topic_min_insync_replicas=3)


def test_no_password_on_the_command_line() -> None:
    r = CliRunner().invoke(app, ["report", "--run", "r", "--postgres-dsn", "postgresql://rw:hunter2@db/rw"])
    assert r.exit_code == 2 and "holds a password" in r.output and "hunter2" not in r.output


def test_the_s3_target_that_both_clients_open_never_shows_its_secret() -> None:
    target = S3Target(bucket="b", endpoint=None, region="r", access_key_id="AKID", secret_access_key="s3cr3t-value")
    assert "s3cr3t-value" not in repr(target) and "AKID" in repr(target)
