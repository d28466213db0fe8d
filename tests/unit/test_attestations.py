"""Rule 4: attestation ids, compared as sets (see the README)."""

from __future__ import annotations

from replaywatch.compare import Attempt, CompareConfig, Verdict, compare_attempts
from replaywatch.compare.attestations import extract


def cmp(a: object, b: object):  # type: ignore[no-untyped-def]
    return compare_attempts(Attempt("r", "s", 1, a), Attempt("r", "s", 2, b), CompareConfig())


def test_absent_is_empty() -> None:
    assert extract({}) == ()
    assert cmp({}, {"attestation_ids": []}).verdict is Verdict.WITHIN_TOLERANCE


def test_only_top_level_counts() -> None:
    assert extract({"inner": {"attestation_ids": ["x"]}}) == ()


def test_non_array_and_non_strings_count_as_no_ids() -> None:
    assert extract({"attestation_ids": "x"}) == ()
    assert extract({"attestation_ids": ["a", 1, None, "b"]}) == ("a", "b")


def test_order_only_change_is_not_a_divergence() -> None:
    r = cmp({"attestation_ids": ["a", "b"]}, {"attestation_ids": ["b", "a"]})
    assert r.verdict is Verdict.WITHIN_TOLERANCE
    assert r.missing_attestations == () and r.unexpected_attestations == ()


def test_repeated_id_is_not_a_divergence() -> None:
    assert cmp({"attestation_ids": ["a"]}, {"attestation_ids": ["a", "a"]}).verdict is Verdict.WITHIN_TOLERANCE


def test_missing_and_unexpected() -> None:
    r = cmp({"attestation_ids": ["c", "a", "b"]}, {"attestation_ids": ["d", "b"]})
    assert r.verdict is Verdict.ATTESTATION_DIVERGENCE
    assert r.missing_attestations == ("a", "c")
    assert r.unexpected_attestations == ("d",)


def test_empty_to_some() -> None:
    r = cmp({"attestation_ids": []}, {"attestation_ids": ["x"]})
    assert r.verdict is Verdict.ATTESTATION_DIVERGENCE
    assert r.missing_attestations == () and r.unexpected_attestations == ("x",)


def test_attestation_ids_are_left_out_of_structure() -> None:
    # they have their own rule; an order-only change must not come back as drift
    r = cmp({"attestation_ids": ["a"], "m": 1}, {"attestation_ids": ["b"], "m": 1})
    assert r.structure_equal
    assert cmp({"attestation_ids": ["a", "b"]}, {"attestation_ids": ["b", "a"]}).structure_equal
    # but only the top-level key: a nested one is ordinary structure
    assert not cmp({"x": {"attestation_ids": ["a"]}}, {"x": {"attestation_ids": ["b"]}}).structure_equal
