"""Name-based UUIDs (version 5, RFC 9562) as text, the ids of comparisons and their
re-emissions: ``str(uuid.uuid5(namespace, name))`` without the ``UUID`` object between.

The standard library's ``uuid5`` hashes the same bytes and then builds a ``UUID`` (an
int, checked and formatted in Python): five times the CPU of the hash, on every
comparison. The bytes and the bits set here are the RFC's; ``uuid.uuid5`` stays the
reference, and a property test holds the two equal on any namespace and name."""

from __future__ import annotations

import hashlib
import uuid


def uuid5_text(namespace: uuid.UUID, name: str) -> str:
    """``str(uuid.uuid5(namespace, name))``."""
    h = bytearray(hashlib.sha1(namespace.bytes + name.encode()).digest()[:16])
    h[6] = (h[6] & 0x0F) | 0x50  # version 5
    h[8] = (h[8] & 0x3F) | 0x80  # the RFC's variant
    x = h.hex()
    return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"
