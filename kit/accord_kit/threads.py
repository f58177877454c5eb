"""Work in a worker thread that is waited for even when its caller is cancelled.

`asyncio.to_thread` cannot stop its thread: cancelled, it returns at once while the function
runs on. A read or write of the store still running when a service stops then meets the
store's connections closed under it (the application is closed after its tasks stop) — in
CPython's sqlite3 that is a crash, not an error. So a cancelled caller waits for its thread,
and a service about to close its store waits for every such thread of its loop (`settle`):
the gRPC server's stop cancels calls past their grace without waiting for their tasks."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar
from weakref import WeakKeyDictionary

P = ParamSpec("P")
R = TypeVar("R")

# Each event loop's work under way in worker threads.
_running: WeakKeyDictionary[asyncio.AbstractEventLoop, set[asyncio.Future[Any]]] = WeakKeyDictionary()


async def finish_in_thread(fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
    """`asyncio.to_thread(fn, …)`, except that a cancelled caller waits until `fn` has returned
    (its result dropped) before the cancellation goes on."""
    work = asyncio.ensure_future(asyncio.to_thread(fn, *args, **kwargs))
    running = _running.setdefault(asyncio.get_running_loop(), set())
    running.add(work)
    work.add_done_callback(running.discard)
    return await outlasting_cancellation(work)


async def outlasting_cancellation(work: asyncio.Future[R]) -> R:
    """`work`'s result; a cancelled caller waits until `work` is done (its result dropped) before
    the cancellation goes on — for work that goes on whatever the caller does (a thread, another
    process)."""
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        while not work.done():
            try:
                await asyncio.wait([work])
            except asyncio.CancelledError:
                continue  # cancelled again: the work is still to be waited for
        if not work.cancelled():
            work.exception()  # retrieved: a failure of work nobody wants any more is not logged as lost
        raise


async def settle(timeout: float) -> int:
    """Wait (at most `timeout` seconds) until no work of this loop runs in a worker thread;
    returns how many still run."""
    running = _running.get(asyncio.get_running_loop())
    if running:
        await asyncio.wait(list(running), timeout=timeout)
    return len(running or ())
