"""A view's read of PostgreSQL every few seconds, on a connection of its own, whatever the database does.

Several views (routing risk, deployed policies, unresolved exceptions) are kept current by reading
tables now and then rather than from a topic. They share the loop: one connection, opened again after
a failure; a failed read is logged and tried again at the next turn, the view keeping its last read
meanwhile, because the database being away is no reason for a stage to stop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import asyncpg
import structlog

from orchestrator.runtime.pause import sleep_unless
from orchestrator.settings import Settings

Read = Callable[[asyncpg.Connection], Awaitable[object]]


async def read_periodically(
    settings: Settings,
    stop: asyncio.Event,
    read: Read,
    every_s: float,
    *,
    what: str,
    log: structlog.typing.FilteringBoundLogger,
    conn: asyncpg.Connection | None = None,
    wait_first: bool = False,
    quiet: tuple[type[BaseException], ...] = (),
) -> None:
    """`read` every `every_s` seconds until `stop`. `conn`: one already open (it is closed at the end);
    `wait_first`: the caller has just read; `quiet`: failures that are expected and not worth a line
    (a table not migrated yet)."""
    first = True
    while not stop.is_set():
        if wait_first or not first:
            await sleep_unless(stop, every_s)
            if stop.is_set():
                break
        first = False
        try:
            if conn is None or conn.is_closed():
                conn = await asyncpg.connect(settings.database_url, command_timeout=30)
            await read(conn)
        except quiet:
            pass
        except Exception as exc:
            log.warning(f"{what} failed; retrying", error=repr(exc))
            conn = None
    if conn is not None:
        await conn.close()


__all__ = ["read_periodically"]
