"""The worked policy of the README on the corpus of LLM attempt pairs (``tests/corpus.py``,
in three providers' shapes): at most 2% false alerts on benign re-runs and at least 95%
of regressions caught, where exact comparison is either noisy or blind."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from tests.corpus import BENIGN, REGRESSIONS, corpus

BENCH = Path(__file__).resolve().parents[2] / "bench" / "signal_quality.py"


def quality() -> ModuleType:
    spec = importlib.util.spec_from_file_location("signal_quality", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("seed", [2026, 7])
def test_the_worked_policy_meets_the_goals_where_exact_comparison_cannot(seed: int) -> None:
    bench = quality()
    pairs = corpus(seed, per_kind=10)
    assert len(pairs) >= 100 and {p.provider for p in pairs} == {"openai", "anthropic", "gemini"}
    configs = bench.configurations()
    worked = bench.measure(pairs, configs["worked"])
    assert worked["false_alert_rate"] <= 0.02, worked["false_alerts_by_kind"]
    assert worked["recall"] >= 0.95, worked["missed_by_kind"]
    noisy = bench.measure(pairs, configs["exact, all kept"])
    blind = bench.measure(pairs, configs["exact, volatile ignored"])
    assert noisy["false_alert_rate"] > 0.5 and blind["recall"] < 0.7


def test_the_corpus_has_every_kind_the_goals_name() -> None:
    kinds = {p.kind for p in corpus(1, per_kind=1)}
    assert kinds == set(BENIGN) | set(REGRESSIONS) and len(REGRESSIONS) == 10
