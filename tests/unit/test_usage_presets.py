"""Usage presets on each provider's documented usage block."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from replaywatch.compare import CompareConfig, Verdict, compare_attempts, parse_json
from replaywatch.compare.engine import Attempt, prepare
from replaywatch.compare.structure import strip_usage
from replaywatch.compare.usage import PRESETS, find_number, find_tokens, preset
from replaywatch.exceptions import ConfigError
from tests.unit.strategies import scalars

USAGE_KEYS = sorted({k for p in PRESETS.values() for k in p.strip} | {"a", "usage", "msg"})
usage_docs = st.recursive(
    scalars | st.integers(0, 10**6),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.sampled_from(USAGE_KEYS), children, max_size=5)
    ),
    max_leaves=16,
)

# Chat Completions (platform.openai.com/docs/api-reference/chat/object)
OPENAI_CHAT = {
    "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
    "object": "chat.completion",
    "model": "gpt-4o-2024-08-06",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Paris."}, "finish_reason": "stop"}],
    "usage": {
        "prompt_tokens": 19,
        "completion_tokens": 10,
        "total_tokens": 29,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
    },
}
# Responses API: input/output tokens and their details
OPENAI_RESPONSES = {
    "id": "resp_67ccd2bed1ec8190",
    "object": "response",
    "output": [{"type": "message", "content": [{"type": "output_text", "text": "Paris."}]}],
    "usage": {
        "input_tokens": 36,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 87,
        "output_tokens_details": {"reasoning_tokens": 0},
    },
}
# Messages API (docs.anthropic.com/en/api/messages): no total; cache reads and writes apart
ANTHROPIC = {
    "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5",
    "content": [{"type": "text", "text": "Paris."}],
    "stop_reason": "end_turn",
    "usage": {
        "input_tokens": 2095,
        "output_tokens": 503,
        "cache_creation_input_tokens": 120,
        "cache_read_input_tokens": 1800,
        "cache_creation": {"ephemeral_5m_input_tokens": 120, "ephemeral_1h_input_tokens": 0},
        "server_tool_use": {"web_search_requests": 0},
    },
}
# OpenTelemetry GenAI semantic conventions: span attributes, flat dotted names
GEN_AI = {
    "answer": "Paris.",
    "attributes": {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.usage.input_tokens": 19,
        "gen_ai.usage.output_tokens": 10,
    },
}


# Gemini generateContent: the total; without it, prompt + candidates + thoughts (cached
# content is counted inside the prompt, never added)
GEMINI = {
    "candidates": [{"content": {"parts": [{"text": "Paris."}], "role": "model"}, "finishReason": "STOP"}],
    "usageMetadata": {"promptTokenCount": 120, "candidatesTokenCount": 40, "thoughtsTokenCount": 300,
                      "cachedContentTokenCount": 100, "totalTokenCount": 460,
                      "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 120}]},
}  # fmt: skip
GEMINI_NO_TOTAL = {"candidates": [], "usageMetadata": {k: v for k, v in GEMINI["usageMetadata"].items()  # type: ignore[attr-defined]
                                                        if k != "totalTokenCount"}}  # fmt: skip
# Bedrock Converse: cache reads and writes are not in inputTokens
BEDROCK = {
    "output": {"message": {"role": "assistant", "content": [{"text": "Paris."}]}},
    "usage": {"inputTokens": 30, "outputTokens": 12, "cacheReadInputTokens": 200, "cacheWriteInputTokens": 50},
}
GEN_AI_CURRENT = {
    "attributes": {"gen_ai.usage.input_tokens": 300, "gen_ai.usage.output_tokens": 90,
                   "gen_ai.usage.cache_read.input_tokens": 200, "gen_ai.usage.cache_creation.input_tokens": 40,
                   "gen_ai.usage.reasoning.output_tokens": 60, "gen_ai.usage.cost": 0.0123},
}  # fmt: skip


@pytest.mark.parametrize(
    ("name", "doc", "tokens"),
    [
        ("gemini", GEMINI, 460),
        ("gemini", GEMINI_NO_TOTAL, 120 + 40 + 300),
        ("bedrock", BEDROCK, 30 + 12 + 200 + 50),
        ("gen_ai", GEN_AI_CURRENT, 300 + 90),  # cached and reasoning tokens are inside these
        ("all", GEMINI_NO_TOTAL, 460),
        ("all", BEDROCK, 292),
        ("openai", OPENAI_CHAT, 29),  # the total, not the parts
        ("openai", OPENAI_RESPONSES, 36 + 87),  # no total: input + output
        ("anthropic", ANTHROPIC, 2095 + 503 + 120 + 1800),  # input counts no cached tokens
        ("gen_ai", GEN_AI, 19 + 10),
        ("all", OPENAI_CHAT, 29),
        ("all", OPENAI_RESPONSES, 123),
        ("all", ANTHROPIC, 4518),
        ("all", GEN_AI, 29),
    ],
)
def test_each_preset_reads_its_providers_usage(name: str, doc: dict[str, object], tokens: float) -> None:
    stripped, found, cost = strip_usage(doc, preset(name))
    assert found == tokens
    assert cost == (0.0123 if doc is GEN_AI_CURRENT else None)
    usage = stripped.get("usage", stripped.get("attributes", stripped.get("usageMetadata")))
    # what is left of the usage block is no usage number: a change there is no structural drift
    assert all("tokens" not in k for k in usage), usage


def test_gen_ai_names_nested_as_objects_are_read_too() -> None:
    stripped, tokens, _ = strip_usage({"a": 1, "gen_ai": {"usage": {"input_tokens": 7, "output_tokens": 3}}},
                                      preset("gen_ai"))  # fmt: skip
    assert tokens == 10 and stripped == {"a": 1, "gen_ai": {"usage": {}}}


@pytest.mark.parametrize("doc", [OPENAI_CHAT, OPENAI_RESPONSES, ANTHROPIC, GEN_AI])
def test_the_reference_preset_keeps_todays_behaviour(doc: dict[str, object]) -> None:
    stripped, tokens, _ = strip_usage(doc, preset("reference"))
    assert tokens == find_number(doc, ("tokens", "token_count", "total_tokens"))
    assert stripped["usage" if "usage" in doc else "attributes"] != {}


def _bump(doc: dict[str, object], key: str, by: int) -> dict[str, object]:
    out = parse_json(__import__("orjson").dumps(doc))
    block = out["usage"] if "usage" in out else out["attributes"]
    block[key] += by
    return out  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("name", "doc", "key"),
    [
        ("openai", OPENAI_RESPONSES, "output_tokens"),
        ("anthropic", ANTHROPIC, "cache_read_input_tokens"),
        ("gen_ai", GEN_AI, "gen_ai.usage.output_tokens"),
    ],
)
def test_a_one_token_change_is_a_token_delta_not_structural_drift(name: str, doc: dict[str, object], key: str) -> None:
    before, after = Attempt("r", "s", 1, doc), Attempt("r", "s", 2, _bump(doc, key, 1))
    under_reference = compare_attempts(before, after, CompareConfig.build(0.05, 0.05))
    assert under_reference.verdict is Verdict.DRIFT and not under_reference.structure_equal
    under_preset = compare_attempts(before, after, CompareConfig.build(0.05, 0.05, usage=name))
    assert under_preset.structure_equal and under_preset.token_delta == 1.0
    assert under_preset.verdict is Verdict.WITHIN_TOLERANCE


@given(usage_docs, st.sampled_from(sorted(PRESETS)))
def test_the_stripping_walk_finds_what_the_search_finds(doc: object, name: str) -> None:
    p = preset(name)
    _, tokens, cost = strip_usage(doc, p)
    assert tokens == find_tokens(doc, p)
    assert cost == find_number(doc, p.cost_keys)


def test_parts_are_summed_only_without_a_total() -> None:
    p = preset("anthropic")
    assert find_tokens({"usage": {"input_tokens": 3, "output_tokens": 4}, "tokens": 100}, p) == 100
    assert find_tokens({"input_tokens": 3}, p) == 3
    assert find_tokens({"input_tokens": True, "output_tokens": "4"}, p) is None
    assert find_tokens({"input_tokens": 1.5e308, "output_tokens": 1.5e308}, p) is None  # beyond a double


def test_an_unknown_preset_names_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="unknown usage preset 'opnai'; use one of reference, openai"):
        CompareConfig.build(usage="opnai")


def test_prepared_attempts_carry_the_preset_they_were_prepared_under() -> None:
    a = prepare(1, ANTHROPIC, None, CompareConfig.build(usage="anthropic"))
    b = prepare(1, ANTHROPIC, None, CompareConfig.build())
    assert a.tokens == 4518 and b.tokens is None
    assert a.prepared_with != b.prepared_with


def test_the_fingerprint_names_a_preset_but_keeps_todays_without_one() -> None:
    assert CompareConfig.build(0.01).fingerprint() == CompareConfig.build(0.01, usage="reference").fingerprint()
    assert CompareConfig.build(0.01).fingerprint() != CompareConfig.build(0.01, usage="openai").fingerprint()
    assert CompareConfig.build(0.01).fingerprint() == CompareConfig.build(0.01, policy="renamed").fingerprint()
