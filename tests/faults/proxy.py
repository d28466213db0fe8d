"""A TCP proxy that can add latency to every chunk it forwards (slow S3)."""

from __future__ import annotations

import socket
import time

from tests.tcp_proxy import TcpProxy


class SlowProxy(TcpProxy):
    def __init__(self, target_host: str, target_port: int) -> None:
        self.delay = 0.0
        super().__init__(target_port, target_host)

    def forward(self, data: bytes, dst: socket.socket) -> None:
        if self.delay:
            time.sleep(self.delay)
        dst.sendall(data)
