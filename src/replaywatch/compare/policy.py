"""Policies: comparison settings per provider, provider version and step.

A policy file (TOML or YAML, ``REPLAYWATCH_POLICY_FILE``) holds ordered rules. A rule
matches an attempt on its ``provider`` (exact), ``provider_version`` (glob) and
``step`` (a glob of the step id); what a rule leaves out matches anything. The first
rule that matches gives the attempt's settings; none matching, the default policy
does. A rule sets any of ``tokens_tolerance``, ``cost_tolerance``, ``usage`` (a
preset), ``ignore`` (paths), ``comparison_base``, ``compare``, ``tool_mode``,
``latency_tolerance`` and ``adaptive``; what it leaves out comes from
the default, which is the file's ``[default]`` table over the ``REPLAYWATCH_*``
settings. Example (TOML)::

    [default]
    tokens_tolerance = 0.01

    [[rules]]
    name = "anthropic-sonnet"
    provider = "anthropic"
    provider_version = "claude-sonnet-*"
    tokens_tolerance = 0.10
    usage = "anthropic"

Globs are ``fnmatch``'s, case-sensitive: ``*``, ``?``, ``[abc]``. A rule with a
``provider_version`` pattern does not match an attempt that names no version.

The file is validated at start: every problem is reported with its place in the file
(``rules[2].tokens_tolerance``), and the watcher does not start with a bad file.
"""

from __future__ import annotations

import fnmatch
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from replaywatch.compare.comparators import Comparator
from replaywatch.compare.embeddings import embedding_model
from replaywatch.compare.engine import CompareConfig
from replaywatch.compare.graded import PathComparators
from replaywatch.compare.ignore import IgnoreRules, parse_path
from replaywatch.compare.usage import PRESETS, preset
from replaywatch.exceptions import ConfigError, IgnorePathError

DEFAULT = "default"


@dataclass(frozen=True, slots=True)
class PolicyRule:
    """One rule of a policy file: what it matches, and the settings it gives."""

    name: str
    provider: str | None
    provider_version: str | None
    step: str | None
    config: CompareConfig
    _version: re.Pattern[str] | None = None
    _step: re.Pattern[str] | None = None

    @classmethod
    def of(cls, name: str, provider: str | None, provider_version: str | None, step: str | None,
           config: CompareConfig) -> PolicyRule:  # fmt: skip
        def glob(pattern: str | None) -> re.Pattern[str] | None:
            return None if pattern is None else re.compile(fnmatch.translate(pattern))

        return cls(name, provider, provider_version, step, config, glob(provider_version), glob(step))

    def matches(self, provider: str | None, provider_version: str | None, step_id: str) -> bool:
        if self.provider is not None and provider != self.provider:
            return False
        if self._version is not None and (provider_version is None or not self._version.match(provider_version)):
            return False
        return self._step is None or self._step.match(step_id) is not None

    def describe(self) -> dict[str, Any]:
        """What the rule matches and its settings' fingerprint (in the policy set's)."""
        return {
            "name": self.name,
            "provider": self.provider,
            "provider_version": self.provider_version,
            "step": self.step,
            "settings": self.config.settings_fingerprint,
        }


KindName = Literal["exact", "text", "words", "semantic", "number", "set", "ignore"]


class _Comparator(BaseModel):
    """A comparator as a policy writes it: ``{kind = "text", threshold = 0.8}``, or its
    kind alone (``"set"``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: KindName
    threshold: float | None = Field(default=None, ge=0, le=1)
    abs: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    rel: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    model: str | None = None
    """``semantic``: the model (``REPLAYWATCH_SEMANTIC_MODEL`` by default)."""

    def build(self) -> Comparator:
        embed = embedding_model(self.model) if self.kind == "semantic" else None
        return Comparator(self.kind, self.threshold, self.abs, self.rel, embed)


def comparators_of(spec: Mapping[str, _Comparator | str]) -> tuple[PathComparators, tuple[str, ...]]:
    """(the comparators by path, the paths of kind ``ignore``: ignore rules)."""
    items: list[tuple[str, Comparator]] = []
    ignored: list[str] = []
    for path, given in spec.items():
        c = _Comparator(kind=given) if isinstance(given, str) else given
        if c.kind == "ignore":
            ignored.append(path)
        else:
            items.append((path, c.build()))
    return PathComparators.compile(items), tuple(ignored)


_FLAG = re.compile(r"^(?P<path>.+)=(?P<kind>exact|text|words|semantic|number|set|ignore)(?::(?P<params>.*))?$")


def comparator_flags(flags: list[str]) -> dict[str, Any]:
    """``--compare PATH=KIND[:name=value,...]`` flags as a policy's ``compare`` table."""
    table: dict[str, Any] = {}
    for flag in flags:
        m = _FLAG.match(flag)
        if m is None:
            raise ConfigError(f"--compare {flag!r}: write PATH=KIND or PATH=KIND:threshold=0.8 "
                              "(kinds: exact, text, words, semantic, number, set, ignore)")  # fmt: skip
        entry: dict[str, Any] = {"kind": m["kind"]}
        for item in filter(None, (m["params"] or "").split(",")):
            name, eq, value = (part.strip() for part in item.partition("="))
            if not eq:
                raise ConfigError(f"--compare {flag!r}: parameter {item!r} needs a value (name=value)")
            try:
                entry[name] = value if name == "model" else float(value)
            except ValueError:
                raise ConfigError(f"--compare {flag!r}: {value!r} is not a number") from None
        table[m["path"]] = entry
    return table


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    tokens_tolerance: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    cost_tolerance: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    usage: str | None = None
    ignore: tuple[str, ...] | None = None
    comparison_base: Literal["first", "previous"] | None = None
    tool_mode: Literal["strict", "unordered", "subset", "superset"] | None = None
    latency_tolerance: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    adaptive: bool | None = None
    """After its cohorts' warm-up, their learned noise envelopes decide (``envelope``)."""
    compare: dict[str, _Comparator | KindName] | None = None
    """Comparators by path (the ignore rules' syntax); ``ignore`` ones join ``ignore``."""

    @field_validator("compare")
    @classmethod
    def _compare_paths(cls, spec: dict[str, Any] | None) -> dict[str, Any] | None:
        for path in spec or {}:
            try:
                parse_path(path)
            except IgnorePathError as exc:
                raise ValueError(str(exc).replace("ignore path", "comparator path")) from None
        return spec

    @field_validator("usage")
    @classmethod
    def _usage(cls, name: str | None) -> str | None:
        if name is not None and name not in PRESETS:
            raise ValueError(f"unknown usage preset {name!r}; use one of {', '.join(PRESETS)}")
        return name

    @field_validator("ignore")
    @classmethod
    def _paths(cls, paths: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if paths is not None:
            try:
                IgnoreRules.compile(paths)
            except IgnorePathError as exc:
                raise ValueError(str(exc)) from None
        return paths

    def over(self, base: CompareConfig, name: str) -> CompareConfig:
        """These settings over ``base``'s, under the policy ``name``. A rule's ``compare``
        replaces the default's whole (as its ``ignore`` does)."""
        ignore = base.ignore if self.ignore is None else IgnoreRules.compile(self.ignore)
        comparators = base.comparators
        if self.compare is not None:
            comparators, ignored = comparators_of(self.compare)
            if ignored:
                ignore = IgnoreRules.compile(tuple(dict.fromkeys((*ignore.paths, *ignored))))
        return replace(
            base,
            tokens_tolerance=base.tokens_tolerance if self.tokens_tolerance is None else self.tokens_tolerance,
            cost_tolerance=base.cost_tolerance if self.cost_tolerance is None else self.cost_tolerance,
            usage=base.usage if self.usage is None else preset(self.usage),
            ignore=ignore,
            base=base.base if self.comparison_base is None else self.comparison_base,
            policy=name,
            rules=(),
            comparators=comparators,
            tool_mode=base.tool_mode if self.tool_mode is None else self.tool_mode,
            latency_tolerance=base.latency_tolerance if self.latency_tolerance is None else self.latency_tolerance,
            adaptive=base.adaptive if self.adaptive is None else self.adaptive,
        )


class _Rule(_Settings):
    name: str = Field(min_length=1, max_length=200)
    provider: str | None = Field(default=None, min_length=1)
    provider_version: str | None = Field(default=None, min_length=1)
    step: str | None = Field(default=None, min_length=1)

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        if name == DEFAULT:
            raise ValueError(f"{DEFAULT!r} names the default policy; give the rule another name")
        return name


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    default: _Settings = _Settings()
    rules: tuple[_Rule, ...] = ()


def _read(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"policy file {path}: cannot read it ({exc})") from None
    try:
        if path.suffix == ".toml":
            return tomllib.loads(text)
        if path.suffix in (".yaml", ".yml"):
            return yaml.safe_load(text) or {}
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"policy file {path}: not valid {path.suffix[1:].upper()}: {exc}") from None
    raise ConfigError(f"policy file {path}: name it .toml, .yaml or .yml so that its format is known")


def _where(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(the file)"


def parse(doc: Any, base: CompareConfig, source: str = "policy") -> CompareConfig:
    """The default settings ``base`` with the policies of a parsed policy document.
    Raises ConfigError listing every problem with its place in the document."""
    try:
        parsed = _File.model_validate(doc)
    except ValidationError as exc:
        problems = "; ".join(f"{_where(e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{source}: {problems}") from None
    names = [r.name for r in parsed.rules]
    if dupes := sorted({n for n in names if names.count(n) > 1}):
        raise ConfigError(f"{source}: rule names must be unique (they name the policy on events): {dupes}")
    default = parsed.default.over(base, DEFAULT)
    rules = tuple(
        PolicyRule.of(r.name, r.provider, r.provider_version, r.step, r.over(default, r.name)) for r in parsed.rules
    )
    return replace(default, rules=rules)


def load(path: Path, base: CompareConfig) -> CompareConfig:
    """The default settings ``base`` with the policies of the file at ``path``."""
    return parse(_read(path), base, f"policy file {path}")
