"""Rule 1 (usage numbers) and rule 2 (tolerance), with their edges."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from replaywatch.compare.usage import COST_KEYS, TOKEN_KEYS, delta, find_number, within_tolerance


def test_own_keys_before_children_and_key_order() -> None:
    doc = {"nested": {"tokens": 1}, "total_tokens": 3, "token_count": 2}
    assert find_number(doc, TOKEN_KEYS) == 2  # token_count precedes total_tokens; own keys first


def test_first_key_in_precedence_wins() -> None:
    assert find_number({"total_tokens": 3, "tokens": 7}, TOKEN_KEYS) == 7


def test_children_in_document_order() -> None:
    assert find_number({"b": {"tokens": 1}, "a": {"tokens": 2}}, TOKEN_KEYS) == 1
    assert find_number({"a": {"tokens": 2}, "b": {"tokens": 1}}, TOKEN_KEYS) == 2


def test_depth_first_not_breadth_first() -> None:
    doc = {"a": {"deep": {"tokens": 1}}, "b": {"tokens": 2}}
    assert find_number(doc, TOKEN_KEYS) == 1


def test_booleans_are_not_numbers_and_search_goes_on() -> None:
    assert find_number({"tokens": True, "token_count": 4}, TOKEN_KEYS) == 4
    assert find_number({"tokens": False}, TOKEN_KEYS) is None


def test_non_numeric_value_is_passed_over() -> None:
    assert find_number({"tokens": "12", "x": {"tokens": 5}}, TOKEN_KEYS) == 5
    assert find_number({"tokens": None}, TOKEN_KEYS) is None
    # a container under a usage key is searched like any value
    assert find_number({"tokens": {"total_tokens": 9}}, TOKEN_KEYS) == 9


def test_arrays_item_by_item() -> None:
    assert find_number([{"x": 1}, {"cost": 0.5}, {"cost": 0.7}], COST_KEYS) == 0.5
    assert find_number({"items": [[], [{"cost_usd": 2}]]}, COST_KEYS) == 2
    assert find_number([], COST_KEYS) is None
    assert find_number({"items": []}, COST_KEYS) is None


def test_scalars_have_no_usage() -> None:
    assert find_number(5, TOKEN_KEYS) is None
    assert find_number(None, TOKEN_KEYS) is None


def test_integer_too_wide_for_a_double_is_passed_over() -> None:
    assert find_number({"tokens": 10**400, "token_count": 3}, TOKEN_KEYS) == 3


def test_delta_needs_both_sides() -> None:
    assert delta(1.0, 3.0) == 2.0
    assert delta(None, 3.0) is None
    assert delta(1.0, None) is None


def test_tolerance_relative_to_recorded() -> None:
    assert within_tolerance(1.0, 100.0, 0.01)
    assert not within_tolerance(1.01, 100.0, 0.01)
    assert within_tolerance(-1.0, 100.0, 0.01)
    assert within_tolerance(-1.0, -100.0, 0.01)


def test_tolerance_against_zero_is_absolute() -> None:
    assert within_tolerance(0.0, 0.0, 0.0)
    assert not within_tolerance(0.5, 0.0, 0.0)
    assert within_tolerance(0.5, 0.0, 0.5)
    assert within_tolerance(-0.5, 0.0, 0.5)


def test_no_delta_is_within() -> None:
    assert within_tolerance(None, None, 0.0)
    assert within_tolerance(None, 5.0, 0.0)


@pytest.mark.parametrize(
    ("delta", "recorded", "tol", "within"),
    [
        (5.0, 100.0, 0.05, True), (5.01, 100.0, 0.05, False), (-5.0, 100.0, 0.05, True),  # 5% of 100
        (5.0, -100.0, 0.05, True), (60.0, 1000.0, 0.05, False), (0.0, 7.0, 0.0, True),  # relative to |base|
        (0.5, 0.0, 0.5, True), (0.51, 0.0, 0.5, False),  # absolute against a base of 0
    ],
)  # fmt: skip
def test_tolerance_on_hand_computed_cases(delta: float, recorded: float, tol: float, within: bool) -> None:
    assert within_tolerance(delta, recorded, tol) is within


@given(st.floats(-1e9, 1e9), st.floats(-1e9, 1e9), st.floats(0, 10), st.floats(0, 10))
def test_tolerance_is_monotone_and_blind_to_the_sign(recorded: float, current: float, tol: float, more: float) -> None:
    d = current - recorded
    assert not math.isnan(d)
    if within_tolerance(d, recorded, tol):
        assert within_tolerance(d, recorded, tol + more)  # a wider tolerance never turns within into drift
    assert within_tolerance(d, recorded, tol) == within_tolerance(-d, recorded, tol)
    assert within_tolerance(0.0, recorded, 0.0)
