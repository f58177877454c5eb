"""Work in a worker thread that is waited for even when its caller is cancelled.

`asyncio.to_thread` cannot stop its thread: cancelled, it returns at once while the function
runs on. A read or write of the store still running when a service stops then meets the
store's connections closed under it (the application is closed after its tasks stop) — in
CPython's sqlite3 that is a crash, not an error."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")


async def finish_in_thread(fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
    """`asyncio.to_thread(fn, …)`, except that a cancelled caller waits until `fn` has returned
    (its result dropped) before the cancellation goes on."""
    work = asyncio.ensure_future(asyncio.to_thread(fn, *args, **kwargs))
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        while not work.done():
            try:
                await asyncio.wait([work])
            except asyncio.CancelledError:
                continue  # cancelled again: the thread is still to be waited for
        if not work.cancelled():
            work.exception()  # retrieved: a failure of work nobody wants any more is not logged as lost
        raise
