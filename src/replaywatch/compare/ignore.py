"""Ignore rules: paths left out of the structure and tool-event comparisons.

Live attempts carry span ids, clocks and request ids that always differ; an ignore
rule drops them before comparing. Syntax (documented in the README):

- A path starts at the attempt: its first segment is ``output_snapshot``,
  ``tool_events`` or ``**`` (both documents).
- Segments are joined by ``.``: ``name`` is an object key, ``*`` any object key,
  ``[N]`` array item N, ``[*]`` any array item, ``**`` any number of levels (zero
  or more keys or items). A key holding dots or brackets is written ``["a.b"]``.
- A matched object member is removed. A matched array item is replaced by null so
  that the items after it keep their positions.

Examples: ``tool_events[*].trace.span_id``, ``**.timestamp``,
``output_snapshot.meta["request.id"]``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from replaywatch.exceptions import IgnorePathError

# Token kinds
KEY: Final = 0
ANY_KEY: Final = 1
INDEX: Final = 2
ANY_ITEM: Final = 3
DEEP: Final = 4

Token = tuple[int, str | int | None]
Pattern = tuple[Token, ...]
State = tuple[int, int]
"""(pattern number, position in it)."""

ROOTS: Final = ("output_snapshot", "tool_events")

_SEGMENT = re.compile(
    r"""
    \[\s*(?:(?P<index>\d+)|(?P<anyitem>\*)|"(?P<qkey>(?:[^"\\]|\\.)*)")\s*\]   # [3] [*] ["k"]
    | (?P<deep>\*\*)
    | (?P<anykey>\*)
    | (?P<key>[^.\[\]"*]+)
    """,
    re.VERBOSE,
)


def parse_path(path: str) -> Pattern:
    """Parse one ignore path into tokens. Raises IgnorePathError naming the problem."""
    tokens: list[Token] = []
    pos = 0
    expect_segment = True
    while pos < len(path):
        if path[pos] == "." and not expect_segment:
            pos += 1
            expect_segment = True
            continue
        m = _SEGMENT.match(path, pos)
        if m is None or (m.group("key") is not None and not expect_segment):
            raise IgnorePathError(
                f"ignore path {path!r}: unexpected {path[pos:]!r} at character {pos}; "
                "use segments like name, *, **, [3], [*] or [\"a.b\"] joined by '.'"
            )
        if m.group("index") is not None:
            tokens.append((INDEX, int(m.group("index"))))
        elif m.group("anyitem") is not None:
            tokens.append((ANY_ITEM, None))
        elif m.group("qkey") is not None:
            tokens.append((KEY, re.sub(r"\\(.)", r"\1", m.group("qkey"))))
        elif m.group("deep") is not None:
            tokens.append((DEEP, None))
        elif m.group("anykey") is not None:
            tokens.append((ANY_KEY, None))
        else:
            tokens.append((KEY, m.group("key")))
        pos = m.end()
        expect_segment = False
    if not tokens or expect_segment:
        raise IgnorePathError(f"ignore path {path!r} is empty or ends with '.'")
    head_kind, head = tokens[0]
    if not ((head_kind == KEY and head in ROOTS) or head_kind == DEEP):
        raise IgnorePathError(f"ignore path {path!r} must start with output_snapshot, tool_events or **")
    if len(tokens) == 1 and head_kind == KEY:
        raise IgnorePathError(f"ignore path {path!r} would drop the whole document; name a part of it")
    return tuple(tokens)


@dataclass(frozen=True, slots=True)
class IgnoreRules:
    """Compiled ignore paths, split by the document they apply to."""

    paths: tuple[str, ...] = ()
    output: tuple[Pattern, ...] = ()
    tools: tuple[Pattern, ...] = ()
    output_rules: tuple[int, ...] = ()
    """The rule (its index in ``paths``) of each pattern of ``output``."""
    tools_rules: tuple[int, ...] = ()

    @classmethod
    def compile(cls, paths: tuple[str, ...] | list[str]) -> IgnoreRules:
        output: list[Pattern] = []
        tools: list[Pattern] = []
        output_rules: list[int] = []
        tools_rules: list[int] = []
        for n, raw in enumerate(paths):
            tokens = parse_path(raw)
            kind, head = tokens[0]
            if kind == DEEP:
                output.append(tokens)
                tools.append(tokens)
                output_rules.append(n)
                tools_rules.append(n)
            elif head == "output_snapshot":
                output.append(tokens[1:])
                output_rules.append(n)
            else:
                tools.append(tokens[1:])
                tools_rules.append(n)
        return cls(tuple(paths), tuple(output), tuple(tools), tuple(output_rules), tuple(tools_rules))

    def rules_of(self, patterns_matched: int, document: str) -> int:
        """Pattern bits of ``output`` or ``tools`` (``drop_ignored``'s mask) as rule bits."""
        owners = self.output_rules if document == "output" else self.tools_rules
        mask = 0
        for p, rule in enumerate(owners):
            if patterns_matched >> p & 1:
                mask |= 1 << rule
        return mask


def closure(patterns: tuple[Pattern, ...], states: frozenset[State]) -> frozenset[State]:
    """Add the states reached by letting a ``**`` match zero levels."""
    out = set(states)
    todo = list(states)
    while todo:
        p, i = todo.pop()
        pat = patterns[p]
        if i < len(pat) and pat[i][0] == DEEP and (p, i + 1) not in out:
            out.add((p, i + 1))
            todo.append((p, i + 1))
    return frozenset(out)


def initial(patterns: tuple[Pattern, ...]) -> frozenset[State] | None:
    """Start states at a document's root, or None when no rule applies to it."""
    if not patterns:
        return None
    return closure(patterns, frozenset((p, 0) for p in range(len(patterns))))


def advance(
    patterns: tuple[Pattern, ...], states: frozenset[State], key: str | None, index: int | None
) -> frozenset[State]:
    """The states after moving from a node to one child (an object key, or an array
    index), ``**`` closure applied; empty when no pattern goes on below."""
    nxt: set[State] = set()
    for p, i in states:
        pat = patterns[p]
        if i >= len(pat):
            continue
        kind, arg = pat[i]
        if kind == DEEP:
            nxt.add((p, i))
            continue
        if key is not None:
            ok = kind == ANY_KEY or (kind == KEY and arg == key)
        else:
            ok = kind == ANY_ITEM or (kind == INDEX and arg == index)
        if ok:
            nxt.add((p, i + 1))
    return closure(patterns, frozenset(nxt)) if nxt else frozenset()


def matched(patterns: tuple[Pattern, ...], states: frozenset[State]) -> int:
    """The patterns complete in ``states``, as a mask with bit ``p`` for pattern ``p``."""
    done = 0
    for p, i in states:
        if i == len(patterns[p]):
            done |= 1 << p
    return done


def step(
    patterns: tuple[Pattern, ...], states: frozenset[State], key: str | None, index: int | None
) -> tuple[int, frozenset[State] | None]:
    """Move from a node to one child (an object key, or an array index).

    Returns (the patterns that match the child, as a mask with bit ``p`` for pattern
    ``p``: non-zero when the child is ignored; states for the child's subtree, or None
    when no rule can match below it).
    """
    full = advance(patterns, states, key, index)
    if not full:
        return 0, None
    done = matched(patterns, full)
    if done:
        return done, None
    return 0, full


class Matcher:
    """``step`` over a set of patterns as a lazily built automaton: each set of states
    met is numbered once, and each move from it (by object key, or by array index) is
    worked out once and remembered. A document walk then costs a dictionary lookup per
    node, however many rules there are. Memory is bounded: a state remembers at most
    ``MOVES`` keys (a record's keys cannot grow it), and the states are sets of
    positions in the configured patterns (a record cannot add one).

    ``through``: a matched node's subtree is walked on (for comparators, where a deeper
    path may name a more specific one); otherwise a matched node ends the walk there
    (for ignore rules).
    """

    MOVES: Final = 512
    __slots__ = ("_ids", "_indexed", "_items", "_keys", "_sets", "patterns", "start", "through")

    def __init__(self, patterns: tuple[Pattern, ...], through: bool = False) -> None:
        self.patterns = patterns
        self.through = through
        self._sets: list[frozenset[State]] = []
        self._ids: dict[frozenset[State], int] = {}
        self._keys: list[dict[str, tuple[int, int]]] = []
        self._items: list[dict[int, tuple[int, int]]] = []
        self._indexed: list[bool] = []
        first = initial(patterns)
        self.start = -1 if first is None else self._intern(first)

    def _intern(self, states: frozenset[State]) -> int:
        n = self._ids.get(states)
        if n is None:
            n = len(self._sets)
            self._ids[states] = n
            self._sets.append(states)
            self._keys.append({})
            self._items.append({})
            self._indexed.append(any(i < len(self.patterns[p]) and self.patterns[p][i][0] == INDEX for p, i in states))
        return n

    def _move(self, state: int, key: str | None, index: int | None) -> tuple[int, int]:
        if not self.through:
            done, sub = step(self.patterns, self._sets[state], key, index)
            return done, -1 if sub is None else self._intern(sub)
        full = advance(self.patterns, self._sets[state], key, index)
        on = frozenset(s for s in full if s[1] < len(self.patterns[s[0]]))
        return matched(self.patterns, full), self._intern(on) if on else -1

    def key(self, state: int, key: str) -> tuple[int, int]:
        """(patterns matched by the member ``key``, its state or -1 when no rule goes on)."""
        moves = self._keys[state]
        hit = moves.get(key)
        if hit is None:
            hit = self._move(state, key, None)
            if len(moves) < self.MOVES:
                moves[key] = hit
        return hit

    def item(self, state: int, index: int) -> tuple[int, int]:
        """(patterns matched by array item ``index``, its state or -1)."""
        slot = index if self._indexed[state] else -1
        moves = self._items[state]
        hit = moves.get(slot)
        if hit is None:
            hit = self._move(state, None, index)
            if len(moves) < self.MOVES:
                moves[slot] = hit
        return hit


_MATCHERS: dict[tuple[tuple[Pattern, ...], bool], Matcher] = {}


def matcher(patterns: tuple[Pattern, ...], through: bool = False) -> Matcher:
    """The automaton of ``patterns``, built once per set of patterns (at most 256 kept)."""
    m = _MATCHERS.get((patterns, through))
    if m is None:
        if len(_MATCHERS) >= 256:
            _MATCHERS.clear()
        m = _MATCHERS[patterns, through] = Matcher(patterns, through)
    return m
