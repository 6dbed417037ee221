"""Waiting for one thing or a stop: the loop head of every level-triggered controller."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable


async def first_of(work: Awaitable[object], stop: asyncio.Event) -> bool:
    """Wait until `work` completes or `stop` is set, cancelling the other; True when the
    work completed and stop is not set."""
    waiter = asyncio.ensure_future(work)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
        stopper.cancel()
    return waiter.done() and not waiter.cancelled() and not stop.is_set()


async def woken(event: asyncio.Event, stop: asyncio.Event) -> bool:
    """Wait until `event` or `stop` is set; True when woken by the event, not stopping."""
    return await first_of(event.wait(), stop)
