"""Free local ports, for servers and stage instances started side by side."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A TCP port nothing listens on now (for a server or a stage's /metrics)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


__all__ = ["free_port"]
