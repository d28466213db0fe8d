"""A TCP proxy on 127.0.0.1 for tests: one thread accepts, two threads per connection
pump bytes each way. Subclasses change what a pump does (delay it, hold back a reply)."""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import Any


def close_all(*sockets: socket.socket) -> None:
    for s in sockets:
        with contextlib.suppress(OSError):
            s.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            s.close()


class TcpProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self._server = socket.socket()
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind(("127.0.0.1", 0))
        self._server.listen(128)
        self.port = self._server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._server.close()

    def connection(self) -> Any:
        """State shared by the two pumps of one connection."""
        return None

    def upstream(self, src: socket.socket, dst: socket.socket, state: Any) -> None:
        """Client to server."""
        self.pump(src, dst)

    def downstream(self, src: socket.socket, dst: socket.socket, state: Any) -> None:
        """Server to client."""
        self.pump(src, dst)

    def forward(self, data: bytes, dst: socket.socket) -> None:
        dst.sendall(data)

    def pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                self.forward(data, dst)
        except OSError:
            pass
        finally:
            close_all(src, dst)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            state = self.connection()
            threading.Thread(target=self.upstream, args=(client, upstream, state), daemon=True).start()
            threading.Thread(target=self.downstream, args=(upstream, client, state), daemon=True).start()
