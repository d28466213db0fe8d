"""Cohorts: the attempts whose re-runs are alike enough to share an envelope.

A cohort is (provider, provider version, step kind). The kind is read from the
attempt's ``spec_snapshot`` at a configurable path (``REPLAYWATCH_COHORT_KIND_PATH``,
``type`` by default; dotted for nested fields, such as ``meta.kind``); an attempt whose
spec names none (or whose spec is larger than ``MAX_SPEC``) takes the name of the
policy that compares it. Written
``provider|version|kind``, ``-`` for what the attempt does not say.
"""

from __future__ import annotations

from typing import Final

from replaywatch.compare.canonical import parse_json

POOLED: Final = "(pooled)"
"""The cohort of the attempts beyond a partition's ``max_cohorts``."""
MAX_KIND: Final = 100
"""Characters of a kind kept (a cohort name is a label, not a document)."""
MAX_SPEC: Final = 65_536
"""Characters of a spec read for its kind: a larger spec names none (parsing megabytes
per record to find one label would cost more than the comparison)."""


def kind_of(spec_snapshot: str | None, path: str) -> str | None:
    """The step kind that ``spec_snapshot`` (JSON text) names at ``path``: a string or
    a number, else None (no spec, not JSON, nothing there). Never raises: the spec is
    not compared, so what it holds cannot make a record bad."""
    if not spec_snapshot or len(spec_snapshot) > MAX_SPEC:
        return None
    try:
        node = parse_json(spec_snapshot)
    except Exception:
        return None
    for part in path.strip(".").split("."):
        if type(node) is not dict or part not in node:
            return None
        node = node[part]
    if type(node) in (int, float):
        node = str(node)
    if type(node) is not str or not node:
        return None
    return node[:MAX_KIND]


def cohort_of(provider: str | None, provider_version: str | None, kind: str | None, policy: str) -> str:
    """The cohort of an attempt (see the module)."""
    return "|".join(((provider or "-")[:MAX_KIND], (provider_version or "-")[:MAX_KIND], kind or policy))
