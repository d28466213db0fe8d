"""Structure: a snapshot with its usage keys and ignored paths removed, JSON equality,
and the JSON Patch (RFC 6902) between two structures.

``strip_usage`` is the hot path of the engine: one walk that copies the snapshot
without its usage keys *and* finds the usage numbers with the reference's search
order (see ``usage.find_number``, its specification).

Every walk here uses an explicit stack, not recursion: the contract accepts documents
nested 1,024 levels deep, beyond what Python's recursion limit lets a recursive walk
reach (a 600-level snapshot used to crash the consumer).

The patch generator is our own, small and deterministic on purpose: its output is
hashed into a content address, so it must not change with a library upgrade, and it
must tell ``true`` from ``1`` (Python's ``==`` does not).
"""

from __future__ import annotations

from typing import Any, Final, NamedTuple

from replaywatch import native
from replaywatch.compare import budget, ignore
from replaywatch.compare.attestations import ATTESTATION_KEY
from replaywatch.compare.canonical import Json
from replaywatch.compare.usage import REFERENCE, UsagePreset, as_number, sum_parts

_CONTAINERS = (dict, list)
_TOP_DROP: dict[frozenset[str], frozenset[str]] = {}
"""A preset's usage keys and the top-level attestation ids, by preset (a few presets)."""
_TOP: Final = frozenset({ATTESTATION_KEY})
_NUMBERS = (int, float)


def _own(d: dict[str, Any], keys: tuple[str, ...]) -> float | None:
    for key in keys:
        if key in d:
            n = as_number(d[key])
            if n is not None:
                return n
    return None


def strip_usage(snapshot: Json, usage: UsagePreset = REFERENCE) -> tuple[Json, float | None, float | None]:
    """(snapshot without usage keys and top-level attestation ids, tokens, cost).

    One walk, with an explicit stack so that any depth the contract accepts is walked:
    it copies the snapshot without the preset's usage keys *and* finds the usage
    numbers in the reference's search order (an object's own keys, then its values in
    document order; arrays item by item), looking into the dropped usage subtrees too.
    The tokens are a total key's number, else the sum of the token parts found
    (``usage.find_tokens`` is the specification).

    The top-level ``attestation_ids`` are left out of the structure: they have a rule
    of their own (compared as sets), and counting an order-only change as structural
    drift would undo that choice.
    """
    stripped, tokens, cost, _ = _walk(snapshot, usage, ())
    return stripped, tokens, cost


def strip_and_drop(
    snapshot: Json, usage: UsagePreset, patterns: tuple[ignore.Pattern, ...]
) -> tuple[Json, float | None, float | None, int]:
    """``drop_ignored(strip_usage(snapshot, usage)[0], patterns)`` in one walk, with the
    usage numbers: (structure, tokens, cost, the patterns matched). The usage numbers
    are searched for in ignored subtrees too, as ``strip_usage`` does before the rules
    apply (a property test holds the two forms equal)."""
    return _walk(snapshot, usage, patterns)


def _walk(
    snapshot: Json, usage: UsagePreset, patterns: tuple[ignore.Pattern, ...]
) -> tuple[Json, float | None, float | None, int]:
    """The native walk where it is on and takes the input, else the reference (``_strip``)."""
    fast = native.usage(usage, _TOP)
    if fast is not None:
        automaton = native.automaton(patterns) if patterns else None
        if automaton is not None or not patterns:
            try:
                stripped, tokens, cost, matched, parts, units = native.strip(snapshot, fast, automaton)
            except native.Mismatch:
                pass
            else:
                budget.current.spend(units)
                if tokens is None and usage.token_parts:
                    tokens = sum_parts(parts)
                return stripped, tokens, cost, matched
    reference = ignore.matcher(patterns)
    return _strip(snapshot, usage, reference if reference.start >= 0 else None)


class Walked(NamedTuple):
    """What the walks make of a snapshot and its tool events read as documents."""

    structure_fp: bytes
    snapshot_json: bytes
    tokens: float | None
    cost: float | None
    attestation_ids: tuple[str, ...]
    tool_fp: bytes | None
    tools_json: bytes | None
    ignored: int


def walk_documents(
    snapshot: object, tools: object, usage: UsagePreset, rules: ignore.IgnoreRules, key: str
) -> Walked | None:
    """The walks of ``strip_and_drop`` and ``drop_ignored`` over a snapshot and its tool
    events (None: none) read as ``native.Document``s, with their canonical and compact
    bytes, natively: what ``engine.prepare`` makes of them without parsing them into
    Python objects. ``key``: names ``usage`` and ``rules`` (the settings' ``prep_key``).
    None when the native path leaves them to the reference (a value that is not a
    document, a rule set its automaton does not take)."""
    plan = native.once(("walks", key), _plan, usage, rules) if native.active() else None
    if plan is None or not native.is_document(snapshot):
        return None
    if tools is None:
        tools_doc = None
    elif native.is_document(tools):
        tools_doc = tools
    else:
        return None
    fast, automaton, tools_automaton = plan
    fp, snapshot_json, tokens, cost, matched, parts, ids, tool_fp, tools_json, tools_matched, units = native.prepare(
        snapshot, fast, automaton, tools_doc, tools_automaton
    )
    budget.current.spend(units)
    if tokens is None and usage.token_parts:
        tokens = sum_parts(parts)
    ignored = rules.rules_of(matched, "output") if matched else 0
    if tools_matched:
        ignored |= rules.rules_of(tools_matched, "tools")
    return Walked(fp, snapshot_json, tokens, cost, tuple(ids), tool_fp, tools_json, ignored)


def _plan(
    usage: UsagePreset, rules: ignore.IgnoreRules
) -> tuple[native.Usage, native.Automaton | None, native.Automaton | None] | None:
    """What ``walk_documents`` hands the native code for these settings; None when the
    native path is off or its automaton does not take the rules."""
    fast = native.usage(usage, _TOP)
    automaton = native.automaton(rules.output) if rules.output else None
    tools_automaton = native.automaton(rules.tools) if rules.tools else None
    if fast is None or (rules.output and automaton is None) or (rules.tools and tools_automaton is None):
        return None
    return fast, automaton, tools_automaton


def _strip(
    snapshot: Json, usage: UsagePreset, automaton: ignore.Matcher | None
) -> tuple[Json, float | None, float | None, int]:
    token_keys, cost_keys, groups = usage.token_keys, usage.cost_keys, usage.token_parts
    parts: list[float | None] = [None] * len(groups)
    missing_parts = len(groups)
    tokens: float | None = None
    cost: float | None = None
    matched = 0
    root: list[Json] = [None]
    # (value, the container its copy goes in (None: a dropped subtree, only searched), key or index there,
    # the ignore rules' state there (-1: none reaches it))
    stack: list[tuple[Json, Any, Any, int]] = [(snapshot, root, 0, -1 if automaton is None else automaton.start)]
    push, pop = stack.append, stack.pop
    drop_below, part_keys = usage.strip, usage.part_keys
    drop_top = _TOP_DROP.get(drop_below) or _TOP_DROP.setdefault(drop_below, drop_below | {ATTESTATION_KEY})
    charge = budget.current.spend
    while stack:
        value, parent, slot, here = pop()
        t = type(value)
        if t is dict:
            charge(len(value) + 1)
            if tokens is None:
                tokens = _own(value, token_keys)
                if missing_parts and tokens is None and not part_keys.isdisjoint(value):
                    for g, group in enumerate(groups):
                        if parts[g] is None and (n := _own(value, group)) is not None:
                            parts[g] = n
                            missing_parts -= 1
            if cost is None:
                cost = _own(value, cost_keys)
            if parent is None:  # inside a dropped subtree: only searched
                if tokens is None or cost is None:
                    for v in reversed(value.values()):
                        if type(v) is dict or type(v) is list:
                            push((v, None, None, -1))
                continue
            drop = drop_top if value is snapshot else drop_below
            copy: dict[str, Any] = {}
            parent[slot] = copy
            for k, v in reversed(value.items()):  # reversed: popped in document order
                sub = -1
                if here >= 0 and k not in drop:
                    done, sub = automaton.key(here, k)  # type: ignore[union-attr]
                    if done:  # an ignored member: not kept, only searched for usage numbers
                        matched |= done
                        if type(v) is dict or type(v) is list:
                            push((v, None, None, -1))
                        continue
                tv = type(v)
                if tv is dict or tv is list:
                    push((v, None if k in drop else copy, k, sub))
                elif k not in drop:
                    copy[k] = v
        elif t is list:
            charge(len(value) + 1)
            if parent is None:
                if tokens is None or cost is None:
                    kinds = set(map(type, value))
                    if dict in kinds or list in kinds:
                        for v in reversed(value):
                            if type(v) is dict or type(v) is list:
                                push((v, None, None, -1))
                continue
            items = list(value)
            parent[slot] = items
            if here >= 0:
                for i in range(len(items) - 1, -1, -1):
                    done, sub = automaton.item(here, i)  # type: ignore[union-attr]
                    v = items[i]
                    tv = type(v)
                    if done:  # an ignored item: null in its place, only searched
                        matched |= done
                        items[i] = None
                        if tv is dict or tv is list:
                            push((v, None, None, -1))
                    elif tv is dict or tv is list:
                        push((v, items, i, sub))
                continue
            kinds = set(map(type, items))  # in C: a list of scalars needs no walk
            if dict in kinds or list in kinds:
                for i in range(len(items) - 1, -1, -1):
                    tv = type(items[i])
                    if tv is dict or tv is list:
                        push((items[i], items, i, -1))
        elif parent is not None:
            parent[slot] = value
    if tokens is None and groups:
        tokens = sum_parts([n for n in parts if n is not None])
    return root[0], tokens, cost, matched


def drop_ignored(value: Json, patterns: tuple[ignore.Pattern, ...]) -> tuple[Json, int]:
    """Copy ``value`` without the paths that ignore rules match, and say which patterns
    matched: bit ``p`` of the mask is pattern ``p``. A matched object member is removed;
    a matched array item is replaced by null. A subtree that no rule can reach is
    shared, not copied. The native walk where it is on and takes the input, else the
    reference (``_drop_ignored``)."""
    automaton = native.automaton(patterns) if patterns else None
    if automaton is not None:
        try:
            kept, matched, units = native.drop_ignored(value, automaton)
        except native.Mismatch:
            pass
        else:
            budget.current.spend(units)
            return kept, matched
    return _drop_ignored(value, patterns)


def _drop_ignored(value: Json, patterns: tuple[ignore.Pattern, ...]) -> tuple[Json, int]:
    """``drop_ignored`` in Python (explicit stack: any depth): the reference."""
    automaton = ignore.matcher(patterns)
    if automaton.start < 0:
        return value, 0
    by_key, by_item = automaton.key, automaton.item
    matched = 0
    root: list[Json] = [value]
    stack: list[tuple[Json, Any, Any, int]] = [(value, root, 0, automaton.start)]
    charge = budget.current.spend
    while stack:
        node, parent, slot, here = stack.pop()
        t = type(node)
        if t is dict:
            charge(len(node) + 1)
            out: dict[str, Any] = {}
            for k, v in node.items():
                done, sub = by_key(here, k)
                if done:
                    matched |= done
                else:
                    out[k] = v
                    if sub >= 0:
                        stack.append((v, out, k, sub))
            parent[slot] = out
        elif t is list:
            charge(len(node) + 1)
            items: list[Any] = list(node)
            for i, v in enumerate(node):
                done, sub = by_item(here, i)
                if done:
                    matched |= done
                    items[i] = None
                elif sub >= 0:
                    stack.append((v, items, i, sub))
            parent[slot] = items
    return root[0], matched


def output_structure(snapshot: Json, rules: ignore.IgnoreRules, usage: UsagePreset = REFERENCE) -> Json:
    """The part of an output snapshot that must stay equal (rule 3 plus ignore rules)."""
    return strip_and_drop(snapshot, usage, rules.output)[0]


def tool_structure(tool_events: Json, rules: ignore.IgnoreRules) -> Json:
    """Tool events as compared: ignore rules applied."""
    return drop_ignored(tool_events, rules.tools)[0]


def _scalars_equal(x: Json, y: Json) -> bool:
    """JSON equality of two values that are not both containers: numbers by value
    (1 == 1.0), a boolean never a number, anything else by type and value."""
    tx, ty = type(x), type(y)
    if tx is bool or ty is bool:
        return tx is ty and x == y
    if tx in _NUMBERS and ty in _NUMBERS:
        return bool(x == y)
    return tx is ty and tx not in _CONTAINERS and bool(x == y)


def _flat_lists_equal(x: list[Any], y: list[Any]) -> bool:
    """Whether two lists of scalars are equal, decided in C: the same type at each
    position (so ``true`` never meets ``1``) and equal values. False says nothing: the
    caller then compares item by item (a list holding containers, or ``1`` and ``1.0``)."""
    types = list(map(type, x))
    return dict not in types and list not in types and types == list(map(type, y)) and x == y


def same(a: Json, b: Json) -> bool:
    """JSON equality: objects regardless of key order, arrays in order, numbers by
    value (1 == 1.0), and a boolean is never a number. Explicit stack: any depth;
    linear in the smaller document (each pair of nodes is visited once)."""
    charge = budget.current.spend
    stack = [(a, b)]
    while stack:
        x, y = stack.pop()
        tx, ty = type(x), type(y)
        if tx is dict:
            if ty is not dict or x.keys() != y.keys():
                return False
            charge(len(x))
            stack.extend((x[k], y[k]) for k in x)
        elif tx is list:
            if ty is not list or len(x) != len(y):
                return False
            charge(len(x))
            if not _flat_lists_equal(x, y):
                stack.extend(zip(x, y, strict=True))
        elif not _scalars_equal(x, y):
            return False
    return True


def escape_token(token: str) -> str:
    """A key as an RFC 6901 pointer token."""
    return token.replace("~", "~0").replace("/", "~1")


def json_patch(baseline: Json, current: Json) -> list[dict[str, Any]]:
    """RFC 6902 operations that turn ``baseline`` into ``current``.

    Objects are walked by sorted key; arrays item by item, with trailing items added
    or removed (removals from the end first, so each index is valid when applied).
    An explicit stack of work, in the order the operations are written: any depth.

    Each pair of nodes is visited once, top down, and equal subtrees simply write no
    operation: the walk is linear in the documents (asking "equal?" at every level
    before descending made it quadratic in the depth). Its work, the paths it writes
    included, is charged to the record's CPU budget.
    """
    charge = budget.current.spend
    ops: list[dict[str, Any]] = []
    # work: an operation to write, or a (baseline, current, path) pair to compare
    work: list[dict[str, Any] | tuple[Json, Json, str]] = [(baseline, current, "")]
    while work:
        item = work.pop()
        if type(item) is dict:
            ops.append(item)
            charge(len(item["path"]))
            continue
        old, new, path = item
        todo: list[dict[str, Any] | tuple[Json, Json, str]] = []
        if type(old) is dict and type(new) is dict:
            charge(len(old) + len(new))
            for key in sorted(old.keys() | new.keys()):
                if key not in new:
                    todo.append({"op": "remove", "path": f"{path}/{escape_token(key)}"})
                elif key not in old:
                    todo.append({"op": "add", "path": f"{path}/{escape_token(key)}", "value": new[key]})
                else:
                    a, b = old[key], new[key]
                    if type(a) in _CONTAINERS or type(b) in _CONTAINERS or not _scalars_equal(a, b):
                        todo.append((a, b, f"{path}/{escape_token(key)}"))
        elif type(old) is list and type(new) is list:
            common = min(len(old), len(new))
            charge(len(old) + len(new))
            if len(old) == len(new) and _flat_lists_equal(old, new):
                continue
            for i in range(common):
                a, b = old[i], new[i]
                if type(a) in _CONTAINERS or type(b) in _CONTAINERS or not _scalars_equal(a, b):
                    todo.append((a, b, f"{path}/{i}"))
            todo += [{"op": "remove", "path": f"{path}/{i}"} for i in range(len(old) - 1, common - 1, -1)]
            todo += [{"op": "add", "path": f"{path}/{i}", "value": new[i]} for i in range(common, len(new))]
        elif type(old) in _CONTAINERS or type(new) in _CONTAINERS or not _scalars_equal(old, new):
            todo.append({"op": "replace", "path": path, "value": new})
        work.extend(reversed(todo))
    return ops


def pointer_get(doc: Json, pointer: str) -> Json:
    """The value at an RFC 6901 JSON Pointer in ``doc`` (the pointers ``json_patch`` writes)."""
    node = doc
    for token in pointer.split("/")[1:] if pointer else ():
        key = token.replace("~1", "/").replace("~0", "~")
        node = node[int(key)] if type(node) is list else node[key]
    return node


def patch_before(baseline: Json, patch: list[dict[str, Any]]) -> dict[str, Json]:
    """The recorded value at each path the patch replaces or removes: what a person
    reading the patch needs beside it (the patch itself only says what comes instead)."""
    charge = budget.current.spend
    before: dict[str, Json] = {}
    for op in patch:
        if op["op"] in ("replace", "remove"):
            charge(len(op["path"]))
            before[op["path"]] = pointer_get(baseline, op["path"])
    return before
