"""A prepared attempt keeps its JSON as bytes (no parsed objects for the garbage
collector to walk in the step cache) and gives the same values back."""

from __future__ import annotations

import gc

from hypothesis import given
from hypothesis import strategies as st

from replaywatch.compare import ABSENT, CompareConfig, prepare
from replaywatch.compare.canonical import parse_json
from replaywatch.compare.structure import output_structure, same, tool_structure

from .strategies import json_values, snapshots

CONFIGS = [
    CompareConfig.build(0.0, 0.0, (), "first"),
    CompareConfig.build(0.0, 0.0, ("tool_events[*].trace", "output_snapshot.msg"), "first"),
]


@given(snapshots, st.one_of(st.just(ABSENT), json_values), st.sampled_from(CONFIGS))
def test_a_prepared_attempt_holds_bytes_and_gives_its_json_back(snapshot, tools, config) -> None:  # type: ignore[no-untyped-def]
    p = prepare(3, snapshot, tools, config)
    assert not [x for x in gc.get_referents(p) if isinstance(x, (dict, list))]
    assert same(p.output_snapshot, snapshot)
    if tools is ABSENT:
        assert p.tools_json is None and p.tool_fp is None and p.tool_events is ABSENT
    else:
        assert same(p.tool_events, tools)
        assert p.tool_fp is not None and same(parse_json(p.tool_fp), tool_structure(tools, config.ignore))
    assert same(parse_json(p.structure_fp), output_structure(snapshot, config.ignore))


def test_without_tool_ignore_rules_one_copy_of_the_tool_events_serves_both() -> None:
    p = prepare(1, {"a": 1}, [{"kind": "x", "trace": {"id": 1}}], CONFIGS[0])
    assert p.tools_json is p.tool_fp
    q = prepare(1, {"a": 1}, [{"kind": "x", "trace": {"id": 1}}], CONFIGS[1])
    assert q.tools_json is not None and q.tool_fp is not None and q.tools_json != q.tool_fp
