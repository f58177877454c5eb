"""Group commit: concurrent writers' records share one transaction and one fsync.

With one durable commit per write (SQLite in WAL mode with ``synchronous=FULL``), a store
takes at most one write per fsync, however many callers are waiting. :class:`GroupCommit`
is the classic leader/follower scheme instead:

- a writer that finds no commit in progress leads at once: it takes every write queued at
  that moment (at least its own), applies them in one transaction, commits (one fsync) and
  hands each caller its outcome; there is no waiting for company when the store is idle;
- a writer that arrives while a commit is in progress queues. When the commit ends, the
  first queued writer leads the next group, which holds every write queued meanwhile.

Every caller still gets its own outcome. Each write is applied inside a savepoint of the
group's transaction: a write that fails with an integrity error (an optimistic-concurrency
conflict, a duplicate request, a tracking position already recorded) is rolled back to its
savepoint and only its caller gets the error; the group's other writes are committed. Any
other failure (the store locked by another process past the timeout, a disk error, a failed
commit) rolls the whole group back and every caller in it gets that error: nothing of the
group was stored.

Writes are applied in queue order, so notification ids (and the hash chain computed from
the chain's head inside the same transaction) follow commit order. Nothing is acknowledged
early: a caller returns only after the commit of the transaction holding its write has
returned, i.e. after that transaction's fsync.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from eventsourcing.persistence import (
    DatabaseError,
    DataError,
    IntegrityError,
    InterfaceError,
    InternalError,
    NotSupportedError,
    OperationalError,
    PersistenceError,
    ProgrammingError,
    StoredEvent,
)

__all__ = ["GroupCommit", "GroupCommitStats", "Write", "fresh_error", "sqlite_error"]


@dataclass(eq=False)
class Write:
    """One caller's records (and keyword arguments, e.g. a tracking record) and its outcome."""

    stored_events: Sequence[StoredEvent]
    kwargs: dict[str, Any]
    result: Sequence[int] | None = None
    error: BaseException | None = None
    lead: bool = False
    ready: threading.Event = field(default_factory=threading.Event)

    def outcome(self) -> Sequence[int] | None:
        if self.error is not None:
            raise self.error
        return self.result


@dataclass
class GroupCommitStats:
    """Counts since the recorder was made (read without a lock: for tests and benchmarks)."""

    commits: int = 0  # transactions committed or attempted, one per group
    writes: int = 0  # writes (Application.save calls) submitted through them
    largest: int = 0  # most writes in one group
    isolated: int = 0  # writes rolled back to their savepoint inside a group


class GroupCommit:
    """The queue and the leader hand-off; `apply` applies one group and sets every write's
    outcome (it must not raise for a write's own failure)."""

    def __init__(self, apply: Callable[[list[Write]], None]) -> None:
        self._apply = apply
        self._lock = threading.Lock()
        self._queue: list[Write] = []
        self._busy = False
        self.stats = GroupCommitStats()

    @property
    def queued(self) -> int:
        """Writes waiting for the commit in progress to end."""
        with self._lock:
            return len(self._queue)

    def submit(self, stored_events: Sequence[StoredEvent], kwargs: dict[str, Any]) -> Sequence[int] | None:
        write = Write(stored_events, kwargs)
        with self._lock:
            self._queue.append(write)
            if not self._busy:
                self._busy = write.lead = True
        if not write.lead:
            write.ready.wait()  # set when a leader has committed this write, or hands over the lead
            if not write.lead:
                return write.outcome()
        with self._lock:
            group, self._queue = self._queue, []
        try:
            self._apply(group)
        except BaseException as e:  # the group could not be applied: none of it was stored
            for w in group:
                w.result, w.error = None, e if w is write else fresh_error(e)
            raise
        finally:
            with self._lock:
                s = self.stats
                s.commits += 1
                s.writes += len(group)
                s.largest = max(s.largest, len(group))
                if self._queue:  # those arrived during this commit: the first leads them
                    following = self._queue[0]
                    following.lead = True
                    following.ready.set()
                else:
                    self._busy = False
            for w in group:
                if w is not write:
                    w.ready.set()
        return write.outcome()


_SQLITE_ERRORS: tuple[tuple[type[sqlite3.Error], type[PersistenceError]], ...] = (
    (sqlite3.InterfaceError, InterfaceError),
    (sqlite3.DataError, DataError),
    (sqlite3.OperationalError, OperationalError),
    (sqlite3.IntegrityError, IntegrityError),
    (sqlite3.InternalError, InternalError),
    (sqlite3.ProgrammingError, ProgrammingError),
    (sqlite3.NotSupportedError, NotSupportedError),
    (sqlite3.DatabaseError, DatabaseError),
    (sqlite3.Error, PersistenceError),
)


def fresh_error(e: BaseException) -> BaseException:
    """A new instance of `e` (caused by it), so that callers in different threads never
    raise the same exception object."""
    try:
        copy = type(e)(*e.args)
    except Exception:  # an exception type that cannot be made again from its args
        return e
    copy.__cause__ = e
    return copy


def sqlite_error(e: BaseException, *, fresh: bool = False) -> BaseException:
    """The eventsourcing exception a SQLite transaction raises for `e` (as SQLiteTransaction
    does); with `fresh`, a new instance even when `e` is one already (see fresh_error)."""
    if isinstance(e, PersistenceError) or not isinstance(e, sqlite3.Error):
        return fresh_error(e) if fresh else e
    for raw, ours in _SQLITE_ERRORS:
        if isinstance(e, raw):
            error = ours(e)
            error.__cause__ = e
            return error
    return e  # pragma: no cover - sqlite3.Error is the last entry
