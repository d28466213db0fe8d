"""Usage numbers (tokens, cost), the usage presets that say where they are, and the
tolerance rule, as the reference executor has them.

A *preset* names the keys that hold usage. ``reference`` is the reference's (the
default): a token total under ``tokens``, ``token_count`` or ``total_tokens`` and a
cost under ``cost``, ``cost_usd`` or ``total_cost``. The others add a provider's
usage block to it (``openai``, ``gen_ai``, ``anthropic``, ``gemini``, ``bedrock``;
``all`` adds every one):

- a *total* key gives the tokens outright;
- *parts* (input, output, cache reads, ...) give them as their sum when no total key
  is present: each part is the first number found under one of its keys;
- every usage key, and the detail objects that only count usage, are left out of the
  compared structure.

Numbers are searched the reference's way (``find_number``): an object's own keys
first, in the order of the keys, then its values in document order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Final

from replaywatch.compare.canonical import Json
from replaywatch.exceptions import ConfigError

TOKEN_KEYS: Final = ("tokens", "token_count", "total_tokens")
COST_KEYS: Final = ("cost", "cost_usd", "total_cost")
USAGE_KEYS: Final = frozenset(TOKEN_KEYS + COST_KEYS)


@dataclass(frozen=True, slots=True)
class UsagePreset:
    """Where an attempt's usage is: token totals, token parts, cost keys, and the keys
    left out of the structure (all of these, plus detail objects that count usage)."""

    name: str
    token_keys: tuple[str, ...] = TOKEN_KEYS
    token_parts: tuple[tuple[str, ...], ...] = ()
    """Groups of alternative keys (say input: ``prompt_tokens`` or ``input_tokens``);
    the tokens are the sum of the groups found when no total key is."""
    cost_keys: tuple[str, ...] = COST_KEYS
    details: tuple[str, ...] = ()
    """Keys of objects that only break usage down (``prompt_tokens_details``): left out."""
    strip: frozenset[str] = field(init=False)
    part_keys: frozenset[str] = field(init=False)
    """Every key of ``token_parts``: an object holding none of them is not searched for parts."""

    def __post_init__(self) -> None:
        parts = frozenset(k for group in self.token_parts for k in group)
        object.__setattr__(self, "part_keys", parts)
        object.__setattr__(self, "strip", frozenset({*self.token_keys, *self.cost_keys, *self.details}) | parts)


_OPENAI_IN: Final = ("prompt_tokens", "input_tokens")  # Chat Completions, Responses
_OPENAI_OUT: Final = ("completion_tokens", "output_tokens")
_OPENAI_DETAILS: Final = (
    "prompt_tokens_details",
    "completion_tokens_details",
    "input_tokens_details",
    "output_tokens_details",
)
# flat attribute names as exported (the second: the deprecated name), then the leaf of the
# same names nested as objects ({"gen_ai": {"usage": {"input_tokens": ...}}})
_GEN_AI_IN: Final = ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens", "input_tokens")
_GEN_AI_OUT: Final = ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens", "output_tokens")
# the current semantic conventions count cached and reasoning tokens inside input and
# output: they are left out of the structure, never added
_GEN_AI_DETAILS: Final = (
    "gen_ai.usage.cache_read.input_tokens", "gen_ai.usage.cache_creation.input_tokens",
    "gen_ai.usage.reasoning.output_tokens",
)  # fmt: skip
_GEN_AI_COST: Final = ("gen_ai.usage.cost",)
_ANTHROPIC_CACHE: Final = (("cache_creation_input_tokens",), ("cache_read_input_tokens",))
_ANTHROPIC_DETAILS: Final = ("cache_creation", "server_tool_use")
# Gemini's usageMetadata: thoughts are not counted in candidates (added); cached content
# is counted in the prompt (left out, not added)
_GEMINI_TOTAL: Final = ("totalTokenCount",)
_GEMINI_PARTS: Final = (("promptTokenCount",), ("candidatesTokenCount",), ("thoughtsTokenCount",))
_GEMINI_DETAILS: Final = (
    "cachedContentTokenCount", "toolUsePromptTokenCount", "promptTokensDetails", "candidatesTokensDetails",
    "cacheTokensDetails", "toolUsePromptTokensDetails", "thoughtsTokensDetails",
)  # fmt: skip
# Bedrock Converse's usage: cache reads and writes are not counted in inputTokens
_BEDROCK_TOTAL: Final = ("totalTokens",)
_BEDROCK_PARTS: Final = (("inputTokens",), ("outputTokens",), ("cacheReadInputTokens",), ("cacheWriteInputTokens",))

PRESETS: Final[dict[str, UsagePreset]] = {
    "reference": UsagePreset("reference"),
    "openai": UsagePreset("openai", token_parts=(_OPENAI_IN, _OPENAI_OUT), details=_OPENAI_DETAILS),
    "gen_ai": UsagePreset(
        "gen_ai", token_parts=(_GEN_AI_IN, _GEN_AI_OUT), cost_keys=COST_KEYS + _GEN_AI_COST, details=_GEN_AI_DETAILS
    ),
    "gemini": UsagePreset(
        "gemini", token_keys=TOKEN_KEYS + _GEMINI_TOTAL, token_parts=_GEMINI_PARTS, details=_GEMINI_DETAILS
    ),
    "bedrock": UsagePreset("bedrock", token_keys=TOKEN_KEYS + _BEDROCK_TOTAL, token_parts=_BEDROCK_PARTS),
    "anthropic": UsagePreset(
        "anthropic",
        token_parts=(("input_tokens",), ("output_tokens",), *_ANTHROPIC_CACHE),
        details=_ANTHROPIC_DETAILS,
    ),
    "all": UsagePreset(
        "all",
        token_keys=TOKEN_KEYS + _GEMINI_TOTAL + _BEDROCK_TOTAL,
        token_parts=(
            _OPENAI_IN + _GEN_AI_IN + _GEMINI_PARTS[0] + _BEDROCK_PARTS[0],
            _OPENAI_OUT + _GEN_AI_OUT + _GEMINI_PARTS[1] + _BEDROCK_PARTS[1],
            *_ANTHROPIC_CACHE,
            _GEMINI_PARTS[2],
            _BEDROCK_PARTS[2],
            _BEDROCK_PARTS[3],
        ),
        cost_keys=COST_KEYS + _GEN_AI_COST,
        details=_OPENAI_DETAILS + _ANTHROPIC_DETAILS + _GEN_AI_DETAILS + _GEMINI_DETAILS,
    ),
}
REFERENCE: Final = PRESETS["reference"]


def preset(name: str) -> UsagePreset:
    """The preset of that name; ConfigError naming the known ones otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown usage preset {name!r}; use one of {', '.join(PRESETS)}") from None


def as_number(value: Json) -> float | None:
    """A JSON number as float; None for anything else (booleans are not numbers)."""
    t = type(value)
    if t is float:
        return value  # type: ignore[no-any-return]
    if t is int:
        try:
            return float(value)
        except OverflowError:  # wider than a double: not a usable number
            return None
    return None


def find_number(value: Json, keys: tuple[str, ...]) -> float | None:
    """The first numeric value under one of ``keys``, searched depth-first.

    In each object its own keys are looked at first, in the order of ``keys``; only
    then are its values searched, in document order. Arrays are searched item by item.
    A non-numeric value under a key is passed over and the search goes on. An explicit
    stack, so any depth the contract accepts is searched.
    """
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for key in keys:
                if key in node:
                    num = as_number(node[key])
                    if num is not None:
                        return num
            children = list(node.values())
        elif isinstance(node, list):
            children = node
        else:
            continue
        stack.extend(c for c in reversed(children) if isinstance(c, (dict, list)))
    return None


def find_tokens(value: Json, usage: UsagePreset = REFERENCE) -> float | None:
    """The tokens of a snapshot under a preset: a total key's number, else the sum of
    the parts found, else None. (The specification of ``structure.strip_usage``'s
    search, which finds the same numbers in the walk that strips them.)"""
    total = find_number(value, usage.token_keys)
    if total is not None or not usage.token_parts:
        return total
    parts = [n for group in usage.token_parts if (n := find_number(value, group)) is not None]
    return sum_parts(parts)


def sum_parts(parts: list[float]) -> float | None:
    """Token parts added up; None when none was found (or the sum is beyond a double)."""
    if not parts:
        return None
    total = sum(parts)
    return total if math.isfinite(total) else None


def delta(baseline: float | None, current: float | None) -> float | None:
    """current - baseline, only when both are known."""
    if baseline is None or current is None:
        return None
    return current - baseline


def within_tolerance(d: float | None, baseline: float | None, tolerance: float) -> bool:
    """Relative to a non-zero baseline value, absolute against 0; no delta is within."""
    if d is None or baseline is None:
        return True
    if baseline != 0:
        return abs(d / baseline) <= tolerance
    return abs(d) <= tolerance
