"""Policies: ordered rules by provider, provider version and step."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from replaywatch.compare import CompareConfig, Verdict, compare_attempts
from replaywatch.compare import policy as policies
from replaywatch.compare.engine import Attempt
from replaywatch.config import load_settings
from replaywatch.core.projection import StepProjection, apply
from replaywatch.exceptions import ConfigError

BASE = CompareConfig.build(0.01, 0.02)
DOC: dict[str, Any] = {
    "default": {"tokens_tolerance": 0.02},
    "rules": [
        {"name": "sonnet-summaries", "provider": "anthropic", "provider_version": "claude-sonnet-*",
         "step": "summarise-*", "tokens_tolerance": 0.5},
        {"name": "anthropic", "provider": "anthropic", "tokens_tolerance": 0.2, "usage": "anthropic"},
        {"name": "any-4o", "provider_version": "gpt-4o*", "comparison_base": "previous"},
        {"name": "retrievals", "step": "retrieve-?", "ignore": ["output_snapshot.meta.request_id"]},
    ],
}  # fmt: skip


@pytest.fixture
def config() -> CompareConfig:
    return policies.parse(DOC, BASE)


@pytest.mark.parametrize(
    ("provider", "version", "step", "policy"),
    [
        ("anthropic", "claude-sonnet-4-5", "summarise-7", "sonnet-summaries"),  # the first match wins
        ("anthropic", "claude-sonnet-4-5", "plan-1", "anthropic"),  # the step does not match the first
        ("anthropic", None, "summarise-7", "anthropic"),  # a version pattern needs a version
        ("openai", "gpt-4o-2024-08-06", "summarise-7", "any-4o"),  # no provider in the rule: any
        ("openai", "gpt-4.1", "retrieve-1", "retrievals"),
        ("openai", "gpt-4.1", "retrieve-12", "default"),  # ? is one character
        ("Anthropic", "claude-sonnet-4-5", "summarise-7", "default"),  # providers match exactly
        (None, None, "x", "default"),
    ],
)
def test_the_first_rule_that_matches_wins(config: CompareConfig, provider: str | None, version: str | None,
                                          step: str, policy: str) -> None:  # fmt: skip
    assert config.select(provider, version, step).policy == policy


def test_rules_set_what_they_name_and_take_the_rest_from_the_default(config: CompareConfig) -> None:
    sonnet = config.select("anthropic", "claude-sonnet-4", "summarise-1")
    assert (sonnet.tokens_tolerance, sonnet.cost_tolerance, sonnet.usage.name) == (0.5, 0.02, "reference")
    assert config.select("anthropic", None, "s").usage.name == "anthropic"
    assert config.select("x", "gpt-4o", "s").base == "previous"
    assert config.select("x", None, "retrieve-1").ignore.paths == ("output_snapshot.meta.request_id",)
    default = config.select(None, None, "s")
    assert (default.tokens_tolerance, default.cost_tolerance, default.policy) == (0.02, 0.02, "default")


def test_the_looser_policy_decides_within_where_the_other_drifts(config: CompareConfig) -> None:
    def verdict(provider: str) -> tuple[Verdict, str]:
        a = Attempt("r", "plan-1", 1, {"tokens": 100}, provider=provider)
        b = Attempt("r", "plan-1", 2, {"tokens": 110}, provider=provider)
        c = compare_attempts(a, b, config)
        return c.verdict, c.policy

    assert verdict("anthropic") == (Verdict.WITHIN_TOLERANCE, "anthropic")
    assert verdict("openai") == (Verdict.DRIFT, "default")


def test_each_policy_has_its_fingerprint_and_the_set_one_of_its_own(config: CompareConfig) -> None:
    attempts = [("anthropic", "claude-sonnet-1", "summarise-1"), ("anthropic", None, "x"), (None, None, "x")]
    prints = {config.select(p, v, s).settings_fingerprint for p, v, s in attempts}
    assert len(prints) == 3
    assert config.fingerprint() != BASE.fingerprint()  # the rules are part of the settings
    renamed = policies.parse({**DOC, "rules": [{**DOC["rules"][0], "name": "other"}, *DOC["rules"][1:]]}, BASE)
    assert renamed.select("anthropic", "claude-sonnet-1", "summarise-1").settings_fingerprint in prints


def test_a_step_prepared_under_one_policy_is_compared_under_the_arriving_attempts() -> None:
    config = policies.parse({"rules": [{"name": "a", "provider": "anthropic", "usage": "anthropic"}]}, BASE)
    snap = {"usage": {"input_tokens": 100, "output_tokens": 10}}
    proj, _ = apply(StepProjection.empty("r", "s"), Attempt("r", "s", 1, snap, provider="openai"), config)
    assert proj.baseline is not None and proj.baseline.tokens is None  # the default preset reads no tokens
    bumped = {"usage": {"input_tokens": 100, "output_tokens": 11}}
    _, (c,) = apply(proj, Attempt("r", "s", 2, bumped, provider="anthropic"), config)
    assert c.policy == "a" and c.token_delta == 1.0 and c.structure_equal  # the baseline prepared again


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"rules": [{"name": "x", "tokens_tolerance": -1}]}, r"rules\[0\]\.tokens_tolerance: Input should be greater"),
        ({"rules": [{"name": "x", "usage": "opnai"}]}, r"rules\[0\]\.usage: .*unknown usage preset 'opnai'"),
        ({"rules": [{"name": "x", "ignore": ["outputsnapshot.a"]}]}, r"rules\[0\]\.ignore: .*must start with"),
        ({"rules": [{"name": "x", "tolerance": 0.1}]}, r"rules\[0\]\.tolerance: Extra inputs are not permitted"),
        ({"rules": [{"provider": "openai"}]}, r"rules\[0\]\.name: Field required"),
        ({"rules": [{"name": "default"}]}, r"names the default policy"),
        ({"rules": [{"name": "x"}, {"name": "x"}]}, r"rule names must be unique .*\['x'\]"),
        ({"rules": [{"name": "x", "comparison_base": "last"}]}, r"comparison_base: Input should be 'first' or"),
        ({"default": {"cost_tolerance": "lots"}}, r"default\.cost_tolerance: Input should be a valid number"),
        ({"rule": []}, r"rule: Extra inputs are not permitted"),
    ],
)
def test_a_bad_policy_says_where_and_what(doc: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        policies.parse(doc, BASE)


def test_files_in_toml_and_yaml_read_the_same(tmp_path: Path) -> None:
    toml = tmp_path / "p.toml"
    toml.write_text('[default]\ntokens_tolerance = 0.02\n\n[[rules]]\nname = "a"\nprovider = "anthropic"\n'
                    'usage = "anthropic"\ntokens_tolerance = 0.2\n')  # fmt: skip
    yaml = tmp_path / "p.yaml"
    yaml.write_text("default:\n  tokens_tolerance: 0.02\nrules:\n  - name: a\n    provider: anthropic\n"
                    "    usage: anthropic\n    tokens_tolerance: 0.2\n")  # fmt: skip
    assert policies.load(toml, BASE).fingerprint() == policies.load(yaml, BASE).fingerprint()
    assert policies.load(toml, BASE).select("anthropic", None, "s").tokens_tolerance == 0.2


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("p.toml", "[[rules]\nname=1", "not valid TOML"),
        ("p.yaml", "rules: [", "not valid YAML"),
        ("p.json", "{}", "name it .toml, .yaml or .yml"),
        ("missing.toml", None, "cannot read it"),
    ],
)
def test_an_unreadable_file_is_one_clear_error(tmp_path: Path, name: str, text: str | None, message: str) -> None:
    path = tmp_path / name
    if text is not None:
        path.write_text(text)
    with pytest.raises(ConfigError, match=f"policy file {path}: {message}"):
        policies.load(path, BASE)


def test_settings_validate_the_policy_file_at_start(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text('[[rules]]\nname = "a"\ncost_tolerance = -2\n')
    with pytest.raises(ConfigError, match=r"rules\[0\]\.cost_tolerance"):
        load_settings(policy_file=path)
    path.write_text('[[rules]]\nname = "a"\ncost_tolerance = 2\n')
    assert (
        load_settings(policy_file=path, tokens_tolerance=0.3).compare_config().rules[0].config.tokens_tolerance == 0.3
    )


LLM_POLICY = """
[default]
tokens_tolerance = 0.05

[default.compare]
"output_snapshot.answer" = { kind = "text", threshold = 0.6 }
"**.confidence" = { kind = "number", abs = 0.05 }
"output_snapshot.sources" = "set"
"**.response_id" = "ignore"

[[rules]]
name = "strict-payments"
step = "refund-*"
compare = { "output_snapshot.amount" = "exact" }
"""


def test_comparators_per_path_in_a_policy_file(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text(LLM_POLICY)
    config = policies.load(path, BASE)
    default = config.select(None, None, "answer-1")
    assert [c.kind for c in default.comparators.comparators] == ["text", "number", "set"]
    assert default.ignore.paths == ("**.response_id",)  # an ignore comparator is an ignore rule
    base = {"answer": "Paris is the capital.", "confidence": 0.93, "sources": ["a", "b"], "response_id": "r1"}
    now = {"answer": "paris is the capital!", "confidence": 0.9, "sources": ["b", "a"], "response_id": "r2"}
    got = compare_attempts(Attempt("r", "answer-1", 1, base), Attempt("r", "answer-1", 2, now), config)
    assert got.verdict is Verdict.WITHIN_TOLERANCE and got.policy == "default"
    # a rule's comparators replace the default's whole: here everything is exact again
    refund = compare_attempts(Attempt("r", "refund-1", 1, base), Attempt("r", "refund-1", 2, now), config)
    assert refund.verdict is Verdict.DRIFT and refund.policy == "strict-payments"
    assert config.select(None, None, "refund-1").fingerprint() != default.fingerprint()


@pytest.mark.parametrize(
    ("compare", "message"),
    [
        ({"outputsnapshot.a": "text"}, r"default\.compare: .*comparator path 'outputsnapshot.a' must start with"),
        ({"output_snapshot.a": "fuzzy"}, r"default\.compare\.output_snapshot\.a"),
        ({"output_snapshot.a": {"kind": "text", "threshold": 2}}, r"threshold: Input should be less than or equal"),
        ({"output_snapshot.a": {"kind": "number", "tolerance": 1}}, r"tolerance: Extra inputs are not permitted"),
    ],
)
def test_a_bad_comparator_says_where_and_what(compare: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        policies.parse({"default": {"compare": compare}}, BASE)
