"""The long-lived heap kept out of the collector's full collections (accord_kit.heap): a settle
collects what became cyclic garbage and freezes what is left, a cycle that turns to garbage
while frozen waits for the next settle (never longer), a running service settles its heap
every `<SERVICE>_HEAP_SETTLE_SECONDS`, the first time one interval after it starts, and the
collector is paused while a service builds what it will hold (overlapping blocks: until the
last one ends), then the heap is settled; a settle gives the C allocator's free pages back."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest

from accord_kit import heap
from accord_kit.clock import FakeClock
from accord_kit.heap import Settled, settle
from accord_kit.settings import ServiceSettings, SettingsError
from accord_kit.testing.counter import build_counter_service
from accord_kit.testing.nats import NatsServer
from accord_kit.testing.service import make_keys, running_service, service_environ
from accord_kit.testing.streams import eventually


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def a_cycle() -> tuple[Node, weakref.ref[Node]]:
    a, b = Node(), Node()
    a.other, b.other = b, a
    return a, weakref.ref(a)


@pytest.fixture(autouse=True)
def thawed() -> Iterator[None]:
    """Whatever a test froze is back in the collector's view after it."""
    yield
    gc.unfreeze()


def test_a_settle_collects_cyclic_garbage_and_freezes_what_is_left() -> None:
    garbage, garbage_ref = a_cycle()
    kept, kept_ref = a_cycle()
    del garbage
    done = settle()
    assert garbage_ref() is None and done.collected >= 2
    assert kept_ref() is kept and done.frozen == gc.get_freeze_count() > 0

    # Frozen: a full collection no longer walks it, so a cycle that turns to garbage now stays ...
    del kept
    gc.collect()
    assert kept_ref() is not None
    # ... until the next settle, which collects it.
    settle()
    assert kept_ref() is None


def _rss_kib() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def test_a_settle_gives_the_c_allocators_free_pages_back() -> None:
    """Objects of 512 bytes and more come from the C allocator, which keeps the pages they free
    inside its heap (only its top goes back by itself): 80 MiB of them freed under one still
    held stay resident until a settle, which hands them back (glibc's `malloc_trim`)."""
    if heap._trim is None:
        pytest.skip("the C library has no malloc_trim (not glibc): nothing to give back this way")
    held = [bytes(2048) for _ in range(40_000)]
    top = bytes(2048)  # allocated after them: the heap's top stays in use
    before = _rss_kib()
    del held
    freed = _rss_kib()
    assert before - freed < 40 * 1024  # free() kept the pages
    settle()
    assert freed - _rss_kib() > 40 * 1024, "the freed pages went back"
    del top


def test_reference_counting_still_frees_a_frozen_object_nothing_refers_to() -> None:
    lone = Node()
    lone_ref = weakref.ref(lone)
    settle()
    del lone
    assert lone_ref() is None


def spy_settles(monkeypatch: pytest.MonkeyPatch) -> list[Settled]:
    """What each settle of the heap task did (info lines are not logged under test)."""
    done: list[Settled] = []

    def settling() -> Settled:
        done.append(settle())
        return done[-1]

    monkeypatch.setattr(heap, "settle", settling)
    return done


async def test_the_task_settles_every_interval_the_first_time_one_interval_after_it_starts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settled = spy_settles(monkeypatch)
    stop = asyncio.Event()
    gc.unfreeze()
    task = asyncio.create_task(heap.heap_task(0.3)(stop))
    await asyncio.sleep(0.1)
    assert gc.get_freeze_count() == 0 and not settled  # not at once
    await eventually(lambda: len(settled) >= 2, timeout=10, what="two settles")
    stop.set()
    await asyncio.wait_for(task, timeout=5)  # it stops with the service
    assert all(s.frozen > 0 and s.seconds >= 0 for s in settled)
    assert gc.get_freeze_count() > 0


async def test_a_running_service_settles_its_heap(
    nats_server: NatsServer, tmp_path: Path, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settled = spy_settles(monkeypatch)
    service = f"counter{unique.lower()}"
    environ = service_environ(
        service, tmp_path, nats_server.url, "sqlite", **{f"{service.upper()}_HEAP_SETTLE_SECONDS": "0.2"}
    )
    settings = ServiceSettings.from_env(service, environ)
    async with running_service(build_counter_service, settings, make_keys(tmp_path / "keys"), clock=FakeClock()):
        await eventually(lambda: bool(settled), timeout=10, what="a settle")
        assert gc.get_freeze_count() > 0


def test_building_pauses_the_collector_until_the_last_overlapping_block_ends_then_settles() -> None:
    gc.unfreeze()
    assert gc.isenabled()
    with heap.building():
        assert not gc.isenabled()
        made, made_ref = a_cycle()
        del made  # garbage made meanwhile waits for the settle at the end
        with heap.building():  # overlapping (another thread's): the collector stays paused ...
            assert not gc.isenabled()
        assert not gc.isenabled()  # ... until the last one ends
        also, also_ref = a_cycle()
        del also
    assert gc.isenabled() and also_ref() is None and made_ref() is None
    assert gc.get_freeze_count() > 0  # settled: what is left is frozen


def test_building_settles_even_when_the_work_fails() -> None:
    gc.unfreeze()
    with pytest.raises(RuntimeError, match="boom"), heap.building():
        raise RuntimeError("boom")
    assert gc.isenabled() and gc.get_freeze_count() > 0


def test_first_built_runs_the_first_call_building_and_every_later_one_paused(monkeypatch: pytest.MonkeyPatch) -> None:
    """The first round builds (paused, then settled); each later one runs paused, not settled."""
    settles: list[Settled] = []

    def counted() -> Settled:
        settles.append(Settled(0, 0, 0.0))
        return settles[-1]

    monkeypatch.setattr(heap, "settle", counted)
    seen: list[bool] = []

    def work() -> int:
        seen.append(gc.isenabled())
        return len(seen)

    run = heap.first_built(work)
    assert [run(), run(), run()] == [1, 2, 3]
    assert seen == [False, False, False] and gc.isenabled()
    assert len(settles) == 1  # the first call's


def test_a_pause_leaves_cyclic_garbage_to_the_first_collection_after_it_and_overlaps() -> None:
    """Paused: no automatic collection (garbage cycles wait), overlapping blocks keep it paused
    until the last ends, a building one among them too; the collector runs again after, even
    when the work failed."""
    gc.collect()
    with heap.paused():
        assert not gc.isenabled()
        made, made_ref = a_cycle()
        del made
        with heap.building():
            assert not gc.isenabled()
        assert not gc.isenabled() and made_ref() is not None  # the building block was not the last
    assert gc.isenabled()
    gc.collect()
    assert made_ref() is None
    with pytest.raises(RuntimeError, match="boom"), heap.paused():
        raise RuntimeError("boom")
    assert gc.isenabled()


def test_the_interval_is_a_setting(tmp_path: Path) -> None:
    def settings(**environ: str) -> ServiceSettings:
        return ServiceSettings.from_env("billing", {"ACCORD_VAR_DIR": str(tmp_path), **environ})

    assert settings().heap_settle_seconds == 300
    assert settings(BILLING_HEAP_SETTLE_SECONDS="60").heap_settle_seconds == 60
    assert settings(BILLING_HEAP_SETTLE_SECONDS="0").heap_settle_seconds == 0  # never: Python's own collector alone
    for bad, why in (("-1", "between 0 and 86400"), ("often", "a number")):
        with pytest.raises(SettingsError, match=f"BILLING_HEAP_SETTLE_SECONDS.*{why}"):
            settings(BILLING_HEAP_SETTLE_SECONDS=bad)
