"""Waiting that a shutdown cuts short: every loop of a worker, ticker or simulator sleeps this way."""

from __future__ import annotations

import asyncio


async def sleep_unless(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep, waking early when `stop` is set; True when stopping."""
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        return False
    return True


__all__ = ["sleep_unless"]
