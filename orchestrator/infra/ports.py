"""Free local ports, for servers and stage instances started side by side."""

from __future__ import annotations

import random
import socket
from collections.abc import Collection
from pathlib import Path

_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
#: Ports below this are left alone: well-known and registered services live there.
_LOWEST = 10_000
_TRIES = 50


def _ephemeral_low() -> int:
    """The first port the kernel hands to outgoing connections (32768 on Linux by default)."""
    try:
        return int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


def port_free(port: int) -> bool:
    """Whether a server could bind `port` on 127.0.0.1 now."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port(avoid: Collection[int] = ()) -> int:
    """A TCP port nothing listens on now (for a server or a stage's /metrics), not one of `avoid`.

    Drawn below the kernel's ephemeral range: a port the kernel picked for us from that range
    could be handed to some process's outgoing connection before our child binds it, and a
    stage then died with "address already in use".
    """
    rng = random.Random()
    high = _ephemeral_low()
    if high > _LOWEST + _TRIES:
        for _ in range(_TRIES):
            port = rng.randrange(_LOWEST, high)
            if port not in avoid and port_free(port):
                return port
    for _ in range(_TRIES):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in avoid:
            return port
    raise OSError("no free local port found")


def free_ports(count: int, avoid: Collection[int] = ()) -> list[int]:
    """`count` different free ports, none of them in `avoid`.

    Nothing binds a port between `free_port` calls, so ports drawn one by one for servers started
    together can repeat: two stage instances once drew the same /metrics port, the second died
    with "address already in use" and the first answered its readiness probe.
    """
    taken = set(avoid)
    ports: list[int] = []
    for _ in range(count):
        port = free_port(taken)
        taken.add(port)
        ports.append(port)
    return ports


__all__ = ["free_port", "free_ports", "port_free"]
