"""A TCP proxy in front of PostgreSQL that loses the reply of some commits.

It reads the client's side of the wire protocol just enough to see which prepared
statements call ``commit_batch`` (Parse) and when one of them runs (Bind). Every
``every``-th such run, it holds back what the server answers until ReadyForQuery (by
then the implicit transaction has committed), then drops the answer and both
connections: the client sees a dead connection after a commit that went through.
"""

from __future__ import annotations

import socket
import struct
import threading

from tests.tcp_proxy import TcpProxy, close_all


class _ClientReader:
    """Splits the client's byte stream into protocol messages."""

    def __init__(self) -> None:
        self.buf = b""
        self.started = False  # past the (untyped) startup messages

    def feed(self, data: bytes) -> list[tuple[bytes, bytes]]:
        self.buf += data
        out: list[tuple[bytes, bytes]] = []
        while True:
            if not self.started:
                if len(self.buf) < 8:
                    return out
                (length,) = struct.unpack(">I", self.buf[:4])
                if len(self.buf) < length:
                    return out
                code = struct.unpack(">I", self.buf[4:8])[0]
                self.buf = self.buf[length:]
                if code == 196608:  # StartupMessage (protocol 3.0); SSL/GSS requests come before it
                    self.started = True
                continue
            if len(self.buf) < 5:
                return out
            kind = self.buf[:1]
            (length,) = struct.unpack(">I", self.buf[1:5])
            if len(self.buf) < 1 + length:
                return out
            out.append((kind, self.buf[5 : 1 + length]))
            self.buf = self.buf[1 + length :]


class CommitReplyDropper(TcpProxy):
    def __init__(self, target_port: int, *, every: int = 3) -> None:
        self.every = every
        self.commits = 0
        self.dropped = 0
        self._statements: set[bytes] = set()
        self._lock = threading.Lock()
        super().__init__(target_port)

    def connection(self) -> threading.Event:
        return threading.Event()  # armed: the next reply on this connection is lost

    def _is_commit(self, kind: bytes, body: bytes) -> bool:
        if kind == b"P":  # Parse: statement name, query
            name, rest = body.split(b"\0", 1)
            if b"commit_batch" in rest.split(b"\0", 1)[0]:
                with self._lock:
                    self._statements.add(name)
        elif kind == b"B":  # Bind: portal, statement
            _, rest = body.split(b"\0", 1)
            statement = rest.split(b"\0", 1)[0]
            with self._lock:
                return statement in self._statements
        return False

    def upstream(self, src: socket.socket, dst: socket.socket, armed: threading.Event) -> None:
        reader = _ClientReader()
        try:
            while data := src.recv(65536):
                for kind, body in reader.feed(data):
                    if self._is_commit(kind, body):
                        with self._lock:
                            self.commits += 1
                            if self.commits % self.every == 0:
                                armed.set()
                dst.sendall(data)
        except OSError:
            pass
        finally:
            close_all(src, dst)

    def downstream(self, src: socket.socket, dst: socket.socket, armed: threading.Event) -> None:
        held = b""
        try:
            while data := src.recv(65536):
                if not armed.is_set():
                    dst.sendall(data)
                    continue
                held += data
                if _has_ready_for_query(held):  # committed: lose the reply and the connection
                    with self._lock:
                        self.dropped += 1
                    return
        except OSError:
            pass
        finally:
            close_all(src, dst)


def _has_ready_for_query(data: bytes) -> bool:
    pos = 0
    while pos + 5 <= len(data):
        kind = data[pos : pos + 1]
        (length,) = struct.unpack(">I", data[pos + 1 : pos + 5])
        if kind == b"Z":
            return True
        pos += 1 + length
    return False
