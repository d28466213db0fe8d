"""The native path: the input record's Avro decode, its snapshot and tool events read
from their JSON text and made into what a comparison keeps of them, and the output
event's Avro encoding, in Rust (``native/``, built by ``pip install`` where cargo is).

Each native function has a pure-Python twin that stays the reference
(fastavro's reader and writer, orjson's ``loads`` and ``dumps``, ``structure._strip``,
``structure._drop_ignored``, ``engine.prepare``); property tests hold the two equal on
every input class the engine accepts. An input the native code does not take as the
reference would (``Mismatch``: an object key that is not a string, more than 64 ignore
patterns, a value its Avro schema does not describe, JSON its reader leaves to orjson)
is handed to the twin, so the answer, and any error, is the reference's own.

``REPLAYWATCH_NATIVE`` chooses (``use``): ``auto`` (the default) takes the native path
where it is built, ``on`` refuses to start without it, ``off`` runs the reference only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, TypeGuard, TypeVar

from replaywatch.exceptions import ConfigError

if TYPE_CHECKING:
    from replaywatch._native import Automaton as Automaton
    from replaywatch._native import Avro
    from replaywatch._native import Document as Document
    from replaywatch._native import Usage as Usage
    from replaywatch.compare.ignore import Pattern
    from replaywatch.compare.usage import UsagePreset

try:
    from replaywatch import _native as _built
except ImportError:  # built without cargo: the reference runs
    _built = None  # type: ignore[assignment]

MODES: Final = ("auto", "on", "off")
Mismatch: type[Exception] = ValueError if _built is None else _built.Mismatch
_DOCUMENT: type | None = None if _built is None else _built.Document
_on = _built is not None
T = TypeVar("T")
_made: dict[tuple[object, ...], Any] = {}
"""Native objects by what they were made of (a kind, then its inputs)."""


def built() -> bool:
    """The native module was built with this install."""
    return _built is not None


def use(mode: str) -> bool:
    """Take the native path (``auto``: where built; ``on``: or refuse) or not (``off``);
    whether it is taken."""
    global _on
    if mode not in MODES:
        raise ConfigError(f"REPLAYWATCH_NATIVE={mode!r}: use one of {', '.join(MODES)}")
    if mode == "on" and _built is None:
        raise ConfigError(
            "REPLAYWATCH_NATIVE=on, but this install has no native module: install Rust (cargo) and "
            "reinstall replaywatch (pip install .), or set REPLAYWATCH_NATIVE=auto to run the Python path"
        )
    _on = mode != "off" and _built is not None
    return _on


def active() -> bool:
    return _on


def once(key: tuple[object, ...], make: Callable[..., T], *args: object) -> T:
    """``make(*args)``, made on the first use of ``key`` and kept (at most 1,024)."""
    try:
        made: T = _made[key]
        return made
    except KeyError:
        pass
    if len(_made) >= 1024:
        _made.clear()
    made = _made[key] = make(*args)
    return made


def _automaton(patterns: tuple[Pattern, ...]) -> Automaton | None:
    assert _built is not None
    try:
        return _built.Automaton(patterns)
    except _built.Mismatch:
        return None


def _usage(preset: UsagePreset, top: frozenset[str]) -> Usage:
    assert _built is not None
    return _built.Usage(list(preset.token_keys), list(preset.cost_keys), [list(g) for g in preset.token_parts],
                        sorted(preset.part_keys), preset.strip, preset.strip | top)  # fmt: skip


def automaton(patterns: tuple[Pattern, ...]) -> Automaton | None:
    """The native automaton of ignore patterns; None when the native path is off or
    leaves these patterns to the reference."""
    if _built is None or not _on:
        return None
    return once(("automaton", patterns), _automaton, patterns)


def usage(preset: UsagePreset, top: frozenset[str]) -> Usage | None:
    """A usage preset as the native walk reads it (``top``: the keys left out at the top
    level besides the preset's); None when the native path is off."""
    if _built is None or not _on:
        return None
    return once(("usage", preset, top), _usage, preset, top)


def avro(schema: str) -> Avro | None:
    """The native Avro codec of a schema (its JSON text, logical types left out); None
    when the native path is off."""
    if _built is None or not _on:
        return None
    return once(("avro", schema), _built.Avro, schema)


def strip(
    snapshot: object, usage: Usage, automaton: Automaton | None
) -> tuple[Any, float | None, float | None, int, list[float], int]:
    """``structure._strip`` natively: (structure, tokens, cost, patterns matched, the token
    parts found in group order, units of work to charge)."""
    assert _built is not None, "the native path is off"
    return _built.strip(snapshot, usage, automaton)


def drop_ignored(value: object, automaton: Automaton) -> tuple[Any, int, int]:
    """``structure._drop_ignored`` natively: (copy, patterns matched, units of work)."""
    assert _built is not None, "the native path is off"
    return _built.drop_ignored(value, automaton)


DOCUMENT_CHARS: Final = 1 << 20
"""The longest JSON text read as a ``Document``: its tree and the copy a walk makes of it
take up to 32 bytes per character of a text of tiny numbers (``[0,0,...]``), against 4
for orjson's objects, so a longer text (the contract takes 16 MB) is read by orjson: a
document holds 32 MB at most."""


def document(text: str) -> Document | None:
    """A JSON text read natively, when the native path is on and takes it: an object or
    an array that orjson would read to the same value (``Document.value``), of at most
    ``DOCUMENT_CHARS``. None: read it with orjson (``canonical.parse_json``), which also
    says what is wrong with it."""
    if _built is None or not _on or len(text) > DOCUMENT_CHARS:
        return None
    try:
        return _built.document(text)
    except _built.Mismatch:
        return None


def is_document(value: object) -> TypeGuard[Document]:
    """Whether ``value`` is a ``Document`` (JSON not parsed into Python objects)."""
    return type(value) is _DOCUMENT


def value(node: Any) -> Any:
    """``node`` as parsed JSON: a document's value, anything else as it is."""
    return node.value() if is_document(node) else node


Prepared = tuple[bytes, bytes, float | None, float | None, int, list[float], list[str], bytes | None, bytes | None,
                 int, int]  # fmt: skip
"""What ``prepare`` gives (see it)."""


def prepare(
    snapshot: Document, usage: Usage, automaton: Automaton | None, tools: Document | None,
    tools_automaton: Automaton | None,
) -> Prepared:  # fmt: skip
    """``engine.prepare``'s work on documents natively: (structure's canonical bytes,
    compact snapshot, tokens, cost, output patterns matched, token parts found, the
    attestation ids distinct and sorted, the tool events' compared canonical bytes,
    their compact bytes, tool patterns matched, units of work to charge)."""
    assert _built is not None, "the native path is off"
    return _built.prepare(snapshot, usage, automaton, tools, tools_automaton)
