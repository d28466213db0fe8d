"""Types of the native module (``native/src/lib.rs``)."""

from typing import Any

class Mismatch(ValueError): ...

class Automaton:
    start: int
    def __init__(self, patterns: tuple[tuple[tuple[int, str | int | None], ...], ...]) -> None: ...

class Usage:
    def __init__(
        self,
        token_keys: list[str],
        cost_keys: list[str],
        groups: list[list[str]],
        part_keys: list[str],
        strip: frozenset[str],
        strip_top: frozenset[str],
    ) -> None: ...

class Avro:
    def __init__(self, schema: str) -> None: ...
    def encode(self, record: dict[str, Any]) -> bytes: ...
    def decode(self, value: bytes, start: int) -> tuple[dict[str, Any], int]: ...

def strip(
    snapshot: Any, usage: Usage, automaton: Automaton | None = None
) -> tuple[Any, float | None, float | None, int, list[float], int]: ...
def drop_ignored(value: Any, automaton: Automaton) -> tuple[Any, int, int]: ...

class Document:
    def value(self) -> Any: ...
    def attestation_bytes(self) -> int: ...

def document(text: str) -> Document: ...
def prepare(
    snapshot: Document,
    usage: Usage,
    automaton: Automaton | None = None,
    tools: Document | None = None,
    tools_automaton: Automaton | None = None,
) -> tuple[
    bytes, bytes, float | None, float | None, int, list[float], list[str], bytes | None, bytes | None, int, int
]: ...
