"""Ports for the engines this worker starts: never two on one port, never one
another program already holds."""

from __future__ import annotations

import socket


class PortsExhausted(Exception):
    pass


class PortAllocator:
    def __init__(self, host: str, first: int, last: int) -> None:
        self._host = host
        self._first = first
        self._last = last
        self._next = first
        self._taken: set[int] = set()

    def allocate(self) -> int:
        """A port free now, handed out to nobody else until ``release``.

        Round robin over the range, so a port just released (and perhaps
        still in TIME_WAIT, or still being read by a slow client) is the last
        to be reused.
        """
        size = self._last - self._first + 1
        for _ in range(size):
            port = self._next
            self._next = self._first + (self._next - self._first + 1) % size
            if port not in self._taken and _bindable(self._host, port):
                self._taken.add(port)
                return port
        raise PortsExhausted(f"no free port between {self._first} and {self._last}")

    def release(self, port: int) -> None:
        self._taken.discard(port)


def _bindable(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True
