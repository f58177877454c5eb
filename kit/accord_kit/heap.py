"""A service's long-lived heap kept out of the cyclic garbage collector's full collections.

A service holds a large heap that lives as long as it runs (the metrics service's views, window
evaluations and signal facts; the gateway's read model), and its work makes objects that outlive
the collector's young generations every round. CPython collects the oldest generation whenever
the objects that reached it grew by a quarter since the last such collection, and each of those
collections walks the whole heap: in a metrics round over 1,000 agreements that was ≈ 100 ms
every four rounds or so, a quarter of the rounds' CPU (services/metrics/README.md, "The
collector and the long-lived heap").

`settle` collects everything once (`gc.unfreeze`, a full `gc.collect`) and then moves what is
left out of the collector's view (`gc.freeze`): later collections walk only what was made since.
Reference counting still frees a frozen object when nothing refers to it any more; only a
reference cycle among frozen objects that became garbage waits for the next `settle`, which
collects it — so what can be held too long is bounded by what turned into cyclic garbage within
one interval. The runtime settles each service's heap every `<SERVICE>_HEAP_SETTLE_SECONDS`
(`heap_task`), the first time one interval after it started serving.

`building` pauses the collector while a service builds what it will hold, then settles: the
metrics service's first round after start (`first_built`). Its later rounds run with the collector
paused too (`paused`), without the settle: a round makes its temporaries by the hundred thousand
(a live stream's catch-up: a tuple a row, a list of them), and every collection during it walked
them, young and old; paused, they are freed by reference counting before any collection sees
them (a live stream judged every 5 s: the collector 2.57 → 0.85 s of the service's CPU). (The
gateway's snapshot load was measured with it too, and did not get faster: it is left out.) The
gateway also freezes its read model itself after each warm (`projection.warm_task`) and never
thawed it: its settles are what collect the cycles among what it froze.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from accord_kit.logging import get_logger

log = get_logger("accord.heap")
T = TypeVar("T")


@dataclass(frozen=True)
class Settled:
    collected: int  # unreachable objects the full collection found
    frozen: int  # objects out of the collector's view afterwards
    seconds: float


def settle() -> Settled:
    """Collect everything once, then keep what is left out of later collections; and give the
    C allocator's free memory back to the system (`trim`)."""
    started = time.perf_counter()
    gc.unfreeze()
    collected = gc.collect()
    gc.freeze()
    trim()
    return Settled(collected, gc.get_freeze_count(), time.perf_counter() - started)


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's `malloc_trim`, where the C library has it (None elsewhere: macOS, musl)."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


_trim = _malloc_trim()


def trim() -> bool:
    """Return the free memory of the C allocator's heaps to the system (glibc's `malloc_trim(0)`:
    the free pages inside its heaps too, not only at their top). What a large build freed — the
    parsed messages and rows of a first round, objects of 512 bytes and more, which Python leaves
    to the C allocator — otherwise stays in the process's resident set. False where the C library
    has no such call."""
    if _trim is None:
        return False
    _trim(0)
    return True


_building = 0  # how many `paused` and `building` blocks are under way (the collector paused while any is)
_building_lock = threading.Lock()


def _pause() -> None:
    global _building
    with _building_lock:
        _building += 1
        if _building == 1:
            gc.disable()


def _resume() -> bool:
    """A pause's end; whether it was the last under way (the collector running again)."""
    global _building
    with _building_lock:
        _building -= 1
        if _building:
            return False
        gc.enable()
        return True


@contextmanager
def paused() -> Iterator[None]:
    """The collector's automatic collections paused meanwhile (a metrics round after the first:
    its temporaries freed by reference counting before any collection walks them). Blocks may
    overlap (threads, or `building`): the collector is paused from the first one's start to the
    last one's end. Cyclic garbage made meanwhile, by this work or by other threads, waits for the
    first collection after it."""
    _pause()
    try:
        yield
    finally:
        _resume()


@contextmanager
def building() -> Iterator[None]:
    """The collector paused while a service builds what it will hold (a metrics service's first
    round after start, converting its open windows' inputs), then the heap settled. Such work
    only adds objects that live on: every full collection meanwhile walks a heap that grew by a
    quarter since the last one, and finds nothing (services/metrics/README.md, "The collector and
    the long-lived heap"). Cyclic garbage made meanwhile, by this work or by other threads, waits
    for the settle at its end. Blocks may overlap (threads, or `paused`): the collector is paused
    from the first one's start to the last one's end, and settles if that is this one."""
    _pause()
    try:
        yield
    finally:
        if _resume():
            done = settle()
            log.info("heap_built", collected=done.collected, frozen=done.frozen, ms=round(done.seconds * 1000, 1))


def first_built(work: Callable[[], T]) -> Callable[[], T]:
    """`work` whose first call runs inside `building` (a periodic task's first round after start),
    and every later one inside `paused` (its rounds after it)."""
    first = True

    def run() -> T:
        nonlocal first
        if not first:
            with paused():
                return work()
        first = False
        with building():
            return work()

    return run


def heap_task(interval: float) -> Callable[[asyncio.Event], Coroutine[Any, Any, None]]:
    """A runtime task settling the heap every `interval` seconds until the service stops (the
    first time one interval after it starts: a short-lived process never pays for it)."""

    async def run(stop: asyncio.Event) -> None:
        while True:
            try:
                await asyncio.wait_for(stop.wait(), timeout=interval)
                return
            except TimeoutError:
                pass
            done = settle()  # holds the interpreter for one full collection, as any full collection does
            log.info(
                "heap_settled",
                collected=done.collected,
                frozen=done.frozen,
                ms=round(done.seconds * 1000, 1),
            )

    return run
