"""Canonical JSON and content addresses."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given

from replaywatch.compare import Attempt, CompareConfig, compare_attempts
from replaywatch.compare.canonical import canonical_bytes, parse_json
from replaywatch.exceptions import InvalidJsonError

from .strategies import json_values


def test_sorted_keys_no_whitespace_utf8() -> None:
    assert canonical_bytes({"b": 1, "a": [1, {"d": "é", "c": None}]}) == '{"a":[1,{"c":null,"d":"é"}],"b":1}'.encode()


def test_wide_integers_survive() -> None:
    assert canonical_bytes({"n": 10**30}) == b'{"n":1000000000000000000000000000000}'
    # read as a double, as serde_json (the reference's parser) does
    assert parse_json('{"n": 1000000000000000000000000000000}') == {"n": 1e30}


@pytest.mark.parametrize("text", ["NaN", '{"a": Infinity}', "[-Infinity]", "{", "", '{"a":1}x'])
def test_non_json_is_refused(text: str) -> None:
    with pytest.raises(InvalidJsonError):
        parse_json(text)


@given(json_values)
def test_round_trip(value: object) -> None:
    assert parse_json(canonical_bytes(value)) == value


def test_same_diff_same_sha() -> None:
    a = Attempt("r", "s", 1, {"attestation_ids": ["x", "y"]})
    b = Attempt("r", "s", 2, {"attestation_ids": ["z"]})
    b_reordered = Attempt("r", "s", 7, {"attestation_ids": ["z"], "other": 1})
    d1 = compare_attempts(a, b, CompareConfig()).diff
    d2 = compare_attempts(a, b_reordered, CompareConfig()).diff
    assert d1 is not None and d2 is not None
    assert d1.sha256 == d2.sha256 == hashlib.sha256(d1.body).hexdigest()
