"""The signal index: recording signals (dedupe, corrections), indexing them, and re-reading them from the store."""

from __future__ import annotations

import base64
import hashlib
import itertools
import operator
import threading
import time
from array import array
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from eventsourcing.application import AggregateNotFoundError

from accord.events.v1 import events_pb2
from accord.metrics.v1 import events_pb2 as metrics_events
from accord.metrics.v1 import signals_pb2
from accord_kit.application import topic_pages
from accord_kit.context import Principal
from accord_kit.envelope import unpack
from accord_kit.logging import get_logger
from accord_kit.timeline import Interval
from accord_metrics import signals as sig
from accord_metrics.codec import batch_message
from accord_metrics.domain import (
    AgreementView,
    KnownService,
    NotTheProviderError,
    SignalBatch,
    SignalCorrection,
    UnknownServiceError,
)
from accord_metrics.evaluation import INPUT_LISTS, ONGOING, SignalSet, fcr_method
from accord_metrics.signal_store import LIST_CODE, LISTS, Facts, IndexMovedError, Row, SignalStore
from accord_metrics.signals import validate

if TYPE_CHECKING:
    from accord_metrics.recorder import RecordingProcess
    from accord_metrics.views import AgreementViews as _Host
else:
    _Host = object

log = get_logger("accord.metrics.signals")
BATCH_TOPIC = SignalBatch.Recorded.TOPIC
CORRECTION_TOPIC = SignalCorrection.Corrected.TOPIC
SIGNAL_TOPICS = [BATCH_TOPIC, CORRECTION_TOPIC]  # every recorded signal content, in log order
# Signal events a pass over the store (`stored_signals`) reads at a time: a batch is up to 10,000
# signals, ≈ 0.75 MiB as stored, so a page of 500 could hold ≈ 380 MiB of stored rows at once.
STORED_PAGE = 50
FAR_FUTURE = ONGOING


@dataclass(frozen=True)
class Recorded:
    accepted: int
    duplicates: int
    corrections: int = 0
    # What a recording stored, for a process it is told to (`accord_metrics.recorder`): the log
    # positions of its events (0, 0: none) and its changes for the next round — (service, earliest
    # instant in µs since the epoch, the lists changed) — as the recording process noted them.
    first_position: int = 0
    last_position: int = 0
    changes: tuple[tuple[str, int, tuple[str, ...]], ...] = ()
    # The index rows it wrote, each (service, *Row) as the store holds it: what a process told of
    # them catches its kept selections up from, not reading them back (`SignalIndex._apply_told`).
    rows: Sequence[tuple[Any, ...]] = field(default=(), compare=False, repr=False)


@dataclass(frozen=True)
class Told:
    """A batch another process recorded, as it told this one (`SignalIndex.stored_elsewhere`):
    the log positions of its events, its changes for the next round, and its signal ids by service
    (whose contents may be new: converted again when selected)."""

    first: int
    last: int
    changes: tuple[tuple[str, int, tuple[str, ...]], ...]
    ids: dict[str, list[str]]
    rows: Sequence[tuple[Any, ...]] = ()  # the index rows it wrote, each (service, *Row)


NEW, DUPLICATE, COMPLETION, CORRECTION = "new", "duplicate", "completion", "correction"
# Where each kind of signal goes among the formula inputs (a probe is a one-request count).
_LIST_OF = {
    "outage": "outages", "maintenance": "maintenance", "requests": "requests", "probe": "requests",
    "incident": "incidents", "call": "calls", "ticket": "tickets", "task": "tasks", "lead": "leads", "deal": "deals",
}  # fmt: skip


# The signals availability (time- and request-based, so its burn rates) reads.
_BUDGETED_INPUTS = frozenset({"outage", "maintenance", "requests", "probe"})


def content_digest(s: signals_pb2.Signal) -> str:
    """The digest of a signal's content (deterministic wire format): what tells a re-send
    (same digest) from a correction (same id, another digest). Its provenance is not part of
    its content: the same signal re-sent by another way (NATS after gRPC, the CLI after a
    tool) is a duplicate, not a correction — and the digests of signals stored before
    provenance existed are unchanged."""
    if s.HasField("provenance"):
        bare = signals_pb2.Signal()
        bare.CopyFrom(s)
        bare.ClearField("provenance")
        s = bare
    return hashlib.sha256(s.SerializeToString(deterministic=True)).hexdigest()


def changed_fields(old: signals_pb2.Signal, new: signals_pb2.Signal) -> list[str]:
    """The fields of a signal's body that differ between two contents, e.g. ["outage.end"]."""
    kind = str(new.WhichOneof("kind"))
    a, b = getattr(old, kind), getattr(new, kind)
    names = sorted({f.name for f, _ in a.ListFields()} | {f.name for f, _ in b.ListFields()})
    return [f"{kind}.{n}" for n in names if getattr(a, n) != getattr(b, n)]


# The formula inputs a window selects by time (`ServiceSignals.select`), and the instant each is
# indexed by: a call by when it entered the queue, a request count by its start (a probe: its
# instant), an outage by its start (with its end, below). Every other kind is read whole.
_BY_TIME = frozenset({"calls", "requests", "outages"})
# A `Row`'s rank, as a sort key in C (200,000 rows in no order: 1.1–1.3 → 0.18 µs a row with a lambda).
_ROW_RANK = operator.itemgetter(3)
_SLACK_US = 1_000  # a selection's margin (µs) either side: a superset, which the formulas filter again
# The replacements in place a kept selection logs per list (`_Selection.edits`): a running
# evaluation further behind folds its inputs again.
EDITS_KEPT = 256
# The rows written kept for catching kept selections up, at most (`ServiceSignals._written`): ≈ 420 B
# each (a call's with a UUID for its id, measured), ≈ 20 MiB at most; a 5 s round at 10,000 signals/s.
WRITTEN_KEPT = 50_000
# The lists an open window's burn rates read (`evaluation.burn_rates`): the only ones it selects
# from its longest look-back before its start (`ServiceSignals.select`'s `since`).
_BURN_READS = frozenset({"outages", "requests"})
# The lists a window selects by the instant an item settles (`_settled_us`: after it no window
# starting later counts it — a ticket's last stop, a task's completion, a lead's first follow-up
# after its hand-off, a deal's closing; FAR_FUTURE while one is missing) and its earliest instant
# ("ticket.compliance" and "task.turnaround" v2 digest the items due, `mttr` v2 the incidents
# that reach the window, the lead and deal formulas the items they count, so a window passed only
# these gives what every item would). Windows recorded with v1 of the ticket, task and MTTR
# formulas (whose digest covers every item passed) read them whole.
_BY_SETTLED = frozenset({"tickets", "tasks", "leads", "deals", "incidents"})


def _us(ts: Any) -> int:
    return int(ts.seconds) * 1_000_000 + int(ts.nanos) // 1_000


class ServiceSignals:
    """One service's signals: the small facts kept in memory — the signal ids held (the next
    one's rank), the outages under way, the latest instant a budgeted signal reaches, the longest
    outage — and the formula inputs converted for the windows a round judges; everything per
    signal (its latest content, the digests of its earlier contents, its place by time) is in the
    store's signal index (`SignalStore`), read when a window selects it. A signal's latest content
    replaces its earlier one in place (its first recording's rank) among the formula inputs."""

    def __init__(self, service_id: str, store: SignalStore, facts: Facts | None = None,
                 ongoing: dict[str, tuple[int, int]] | None = None) -> None:  # fmt: skip
        facts = facts or Facts()
        self.service_id = service_id
        self.store = store
        self.count = facts.count  # signal ids held: the next one's rank (the order of first recordings)
        # What tells whether an open window's evaluation can change with time alone (judging.py):
        # the outages still under way (no end reported) and the latest instant any other signal an
        # availability (its burn rates) reads reaches.
        self.ongoing: dict[str, tuple[int, int]] = dict(ongoing or {})  # signal id → (its start in µs, rank)
        self.reaches_us: int | None = facts.reaches  # `reaches`, in µs since the epoch
        self.longest_outage = facts.longest_outage  # µs: the longest outage with a reported end
        # Signal id → its latest content as a formula input, for those kept converted apart from the
        # kept selections (`selections`, whose inputs are kept converted too: see `converted`).
        self._converted: dict[str, Any] = {}
        # The inputs the evaluation round under way converted or selected apart from the kept
        # selections it reused (see begin_round): what is kept after it, with the selections it used.
        self.selected: dict[str, Any] | None = None
        self._reused = False  # the round under way selected inputs of a kept selection
        # The inputs the round under way converted bringing kept selections up to date (`_catch_up`),
        # by signal id: another kept selection catching up with the same ids takes them from here.
        # Held by the selections themselves after the round — not kept apart (`_converted`) too.
        self._caught: dict[str, Any] = {}
        # The thread running that round: only it keeps selections, brings kept ones up to date and
        # is handed their lists themselves (see `select`).
        self._round_thread: int | None = None
        # The inputs of the kept selections by list, then by signal id: a list's made when an input
        # of it is first looked up in a round (`_kept_inputs`), forgotten at its end; the ids
        # changed since are taken out.
        self._kept_index: dict[str, dict[str, Any]] = {}
        # What windows selected by time (`select`), kept between rounds and brought up to date with
        # the ids whose rows changed since (`_Selection`); those no round used are released.
        self.selections: dict[_SelectionKey, _Selection] = {}
        self.regrouped: set[int] = set()  # the groups the last `select` read again for its own changes
        self._used: set[_SelectionKey] = set()
        # The rows this process wrote for ids it marked changed in kept selections, as written (its
        # latest content: the store's, once committed — recording and catching up both hold the
        # application's lock, and a failed write drops them: `SignalIndex._record_once`), so catching
        # a kept selection up does not read back from the store what was just written. An id
        # another process indexed is forgotten (`forget`); at most `WRITTEN_KEPT` rows are kept,
        # those beyond are read from the store as before; a round's end keeps only those still
        # marked in a kept selection. Each with the message it was written from, when kept (a
        # catch-up converts it rather than parsing the row's content again), else None.
        self._written: dict[str, tuple[Row, signals_pb2.Signal | None]] = {}

    def facts(self) -> Facts:
        return Facts(self.count, self.longest_outage, self.reaches_us)

    def classify(self, s: signals_pb2.Signal, where: str, held: Row | None) -> str:
        """NEW; DUPLICATE (a content this id was already recorded with: a retry, never a
        step back); COMPLETION (the end of an outage first reported as under way); or
        CORRECTION (another content). A correction must keep the signal's kind. `held`: the
        id's row in the index (None: an unknown id)."""
        if held is None:
            return NEW
        digest = content_digest(s)
        before = signals_pb2.Signal.FromString(held.content)
        if digest == content_digest(before) or digest in held.earlier_digests():
            return DUPLICATE
        kind, was = s.WhichOneof("kind"), before.WhichOneof("kind")
        if kind != was:
            raise sig.InvalidSignalError(
                f"{where}.signal_id: {s.signal_id!r} was recorded as a {was} signal; a correction keeps its kind "
                f"(not {kind}) — use a new signal id"
            )
        if (
            kind == "outage"
            and not before.outage.HasField("end")
            and s.outage.HasField("end")
            and changed_fields(before, s) == ["outage.end"]
        ):
            return COMPLETION
        return CORRECTION

    @property
    def reaches(self) -> datetime | None:
        """The latest instant a signal availability reads (its burn rates) reaches, outages under
        way aside (`ongoing`)."""
        return None if self.reaches_us is None else _EPOCH + timedelta(microseconds=self.reaches_us)

    def project(
        self, items: list[signals_pb2.Signal], held: dict[str, Row], contents: list[bytes] | None = None,
        reads: Sequence[sig.Read | None] | None = None, ours: bool = True,
    ) -> tuple[list[Row], int, frozenset[str]]:  # fmt: skip
        """One stored batch's signals as index rows, given the rows `held` for their ids (updated
        in place with the new ones): each new id takes the next rank, a later content keeps its
        id's rank and adds the digest of the content it replaces. Updates the facts; returns the
        rows, the earliest instant (µs) the batch's signals and the contents they replace reach —
        the windows from there on change — and the lists (`LISTS`) those are in. `contents`: the
        signals serialised, when the caller has them (else serialised here); `reads`: what
        `signals.validate` read of each (else read here, `read_signal`); `ours`: the messages
        are this process's (no one changes them later), so the rows kept written keep them too.
        Each signal's kind, body and instants are read once."""
        out: dict[str, Row] = {}
        reach: int | None = None
        codes: set[int] = set()  # the lists of the signals and of the contents they replace
        # A row of a list read whole; a call (read whole by first-contact resolution); the earliest
        # instant (µs) a row of a list selected by when it settles reaches, any content of it.
        whole = calls = False
        settled_reach: int | None = None
        count, longest, reaches, ongoing = self.count, self.longest_outage, self.reaches_us, self.ongoing
        make_row = tuple.__new__
        for n, s in enumerate(items):
            got = None if reads is None else reads[n]
            _, sid, kind, first, key, last, asked, _ = read_signal(s) if got is None else got
            code, _, by_time, budgeted, by_settled = _KIND[kind]
            whole = whole or not (by_time or by_settled)
            calls = calls or code == _CALLS_CODE
            if reach is None or first < reach:
                reach = first
            before = held.get(sid)
            codes.add(code)
            if before is None:
                rank = count
                count += 1
                earlier = b""
            else:
                codes.add(before.list_code)
                previous = signals_pb2.Signal.FromString(before.content)
                replaced = _earliest_us(previous)
                if replaced < reach:
                    reach = replaced
                rank, first = before.rank, min(first, before.earliest)
                earlier = before.earlier + bytes.fromhex(content_digest(previous))
            under_way = 0
            if budgeted:  # the latest instant it reaches (`read_signal`); an outage under way is ongoing instead
                if kind == "outage":
                    if last is None:
                        under_way = 1
                        ongoing[sid] = (key, rank)
                    else:
                        ongoing.pop(sid, None)
                        if last - key > longest:  # an outage's key is its start
                            longest = last - key
                if last is not None and (reaches is None or last > reaches):
                    reaches = last
            # An answered call's customer-and-reason group: what first-contact resolution's chains
            # of contacts are read by (`_chains`).
            grp = None if asked is None else call_group(*asked)
            # A Row made as `Row(…)` makes it, without its constructor's Python frame (≈ 0.3 µs a row).
            row = make_row(Row, (sid, code, key, rank, under_way, first, earlier,
                                 s.SerializeToString() if contents is None else contents[n], grp))  # fmt: skip
            held[sid] = out[sid] = row
            if by_settled and (settled_reach is None or first < settled_reach):
                settled_reach = first  # the row's earliest, over every content: what selects it
        self.count, self.longest_outage, self.reaches_us = count, longest, reaches
        if out:  # what was converted or selected of these ids is read again
            for held_inputs in (self._converted, self.selected, *self._kept_index.values(), self._caught):
                if held_inputs:
                    for sid in out:
                        held_inputs.pop(sid, None)
            # Marked changed in the kept selections it can change: not in a selection by time that
            # ends before everything the batch reaches (its signals and the contents they replace
            # — a row is selected by a time key at or after that), unless it reads the row's list
            # whole (a ticket, task, lead, deal or incident: a selection by when they settle that
            # starts after every content its row had). Recording marks the open windows' selections, not every closed
            # window's a round judged (a backfill's round keeps thousands: each batch marked in each
            # of them was quadratic in time and memory).
            # (A call before a first-contact resolution's selection may chain to its calls: it is
            # before the selection's end, so marked, and `_catch_up` reads its group's chain again.)
            marked = False
            for (_, all_calls, _, _, whole_settled, _), kept in self.selections.items():
                if (
                    whole
                    or (calls and all_calls)
                    or reach is None
                    or reach <= kept.hi_us
                    or (settled_reach is not None and (whole_settled or settled_reach <= kept.hi_us))
                ):
                    kept.changed.update(out)
                    marked = True
            if marked and len(self._written) < WRITTEN_KEPT:
                if ours and len(out) == len(items):  # each id once: its row and the message it was made of
                    self._written.update(zip(out, zip(out.values(), items, strict=True), strict=True))
                else:
                    self._written.update((sid, (row, None)) for sid, row in out.items())
        return list(out.values()), _EPOCH_US if reach is None else reach, frozenset(LISTS[c - 1] for c in codes)

    def keep_written(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """The rows another process wrote (each (service, *Row), in the order written: a later one of
        an id replaces an earlier), kept as the rows this process writes are (`_written`), for the kept
        selections that are to catch up with them (`forget` marked them changed in each)."""
        if self.selections and len(self._written) < WRITTEN_KEPT:
            make_row = tuple.__new__
            self._written.update((r[1], (make_row(Row, r[1:]), None)) for r in rows)

    def drop_written(self) -> None:
        """Keep none of the rows written (a write failed: they may not be the store's)."""
        self._written = {}

    def forget(self, signal_ids: Iterable[str]) -> None:
        """These ids have a new content (indexed by another process): convert them again. (A told
        batch's thousand ids at a time: each place they may be held looked at only when it holds any,
        and each kept selection marked in one step.)"""
        ids = signal_ids if isinstance(signal_ids, list) else list(signal_ids)
        for held in (self._converted, self._caught, self._written, self.selected, *self._kept_index.values()):
            if held:
                pop = held.pop
                for sid in ids:
                    pop(sid, None)
        for kept in self.selections.values():
            kept.changed.update(ids)

    def select(
        self, span: Interval | None = None, all_calls: bool = False, since: datetime | None = None,
        whole_settled: bool = False, repeat: int | None = None, peers: tuple[str, ...] = (),
        regroup: frozenset[int] = frozenset(),
    ) -> SignalSet:  # fmt: skip
        """The formula inputs, each list in the order its signals were first recorded: all of
        them, or (`span`) the calls and request counts from `span`'s start to its end, the
        outages that reach into it or are under way, and the tickets, tasks, leads, deals and
        incidents first recorded before its end that did not settle before its start
        (`_settled_us`) — a superset of what any window within `span` (and its burn rates'
        look-backs) reads; every other kind whole. `all_calls`: every call. `repeat` (µs; with
        `span`, not `all_calls`): the calls first-contact resolution with this repeat window reads
        — from `repeat` before the calls' start, and each customer-and-reason group's contacts
        before that which chain to them (`_chains`): what tells its first contacts from repeats
        exactly. `peers` (with `repeat`): the services whose calls chain with this one's — a window
        of several services' calls, one customer's contacts chaining across them: the chains are
        read over all of them, and this selection holds the contacts kept of them that are this
        service's (`_chains`); `regroup`: groups whose chains a peer's changes reached, read again
        here too (`SignalIndex.signal_sources`). `regrouped` tells the groups this call read again
        for this service's own changes. `whole_settled`: every ticket, task, lead, deal and incident (a window recorded
        with v1 of the ticket, task or MTTR formulas, whose digest covers every item passed).
        `since`: where the lists the burn rates do not read (`_BURN_READS`: the calls) start,
        after `span`'s start — an open window's start, its span starting at its longest
        look-back. Read from the store's index. A selection by time is kept (`_Selection`):
        selecting the same span again reads only the rows of the ids that changed since."""
        self.regrouped = set()
        if span is not None:
            repeat = None if all_calls else repeat
            peers = peers if repeat is not None else ()
            key = self._key(span, all_calls, repeat, since, whole_settled, peers)
            # The round's own thread; any other (a query during a round) neither keeps a selection
            # nor changes a kept one, whose lists the round may be reading outside the lock.
            mine = self._in_round()
            kept = self.selections.get(key)
            if kept is not None and (kept.changed or regroup or peers) and not mine:
                # Selected afresh for this caller alone (with peers: a peer's changes reach it
                # only as the round brings the peers' selections up to date together).
                kept = None
            if mine:
                self._used.add(key)
            if kept is None:
                chains: dict[int, list[tuple[int, str]]] = {}
                # Its inputs converted as the rows are read (held only by it when a round keeps it;
                # otherwise, `apart`, kept apart as well: `_inputs`).
                rows = self._select(span, all_calls, since, whole_settled, repeat, chains, peers, apart=not mine)
                kept = _Selection(rows, _instant_us(span.end) + _SLACK_US)
                kept.chains = chains
                if mine:  # kept only by a round (which releases what it did not use)
                    self.selections[key] = kept
                    for name, (_, ids, items) in kept.lists.items():  # found in the lists indexed this round too
                        index = self._kept_index.get(name)
                        if index is not None:
                            index.update(zip(ids, items, strict=True))
            elif kept.changed or regroup:
                self._catch_up(kept, span, all_calls, since, whole_settled, repeat, peers, regroup)
            out = SignalSet()
            for name, (_, _, items) in kept.lists.items():
                # Its inputs stay converted as the kept selection itself (a round keeps the
                # selections it used): not copied into `selected` every round. The round is
                # handed the kept lists themselves, not copies (a copy a round cost a pointer and
                # a reference count an input of the window — ≈ 0.2 µs each at a contact centre's
                # density, the objects spread over the heap): they change only in this thread's
                # next `select` (`_catch_up`, `_rechain`), and what reads them — the formulas,
                # the running forms, the burn rates — reads them, never changes them, and keeps
                # nothing of them but their length and lineage. Any other caller gets copies.
                if mine:
                    if items:
                        self._reused = True
                    setattr(out, name, items)
                else:
                    getattr(out, name).extend(items)
            # Where its lists came from: what tells a running evaluation its new inputs (running.py).
            out.lineage = {
                name: ((kept.serial, kept.changes.get(name, 0), len(kept.lists[name][0]) if name in kept.lists else 0),)
                for name in _BY_TIME
            }
            if mine:  # its replacements in place, for the round's running evaluations
                out.edits = {name: (kept.edits.get(name, ()),) for name in _BY_TIME}
            return out
        out = SignalSet()
        for name, columns in self._select(span, all_calls, since, whole_settled).items():
            getattr(out, name).extend(columns.items)
        return out

    def _key(
        self, span: Interval, all_calls: bool, repeat: int | None, since: datetime | None, whole_settled: bool,
        peers: tuple[str, ...],
    ) -> _SelectionKey:  # fmt: skip
        return (span, all_calls, repeat, since, whole_settled, peers)

    def keeps_chained(self, span: Interval, repeat: int, since: datetime | None, peers: tuple[str, ...]) -> bool:
        """Whether a selection of first-contact resolution's calls chained over `peers` is kept."""
        return self._key(span, False, repeat, since, False, peers) in self.selections

    def release_chained(self, span: Interval, repeat: int, since: datetime | None, peers: tuple[str, ...]) -> None:
        """That selection released (made afresh when next selected): by the round alone."""
        if self._in_round():
            self.selections.pop(self._key(span, False, repeat, since, False, peers), None)

    def release(self, span: Interval) -> None:
        """The selections of `span` released by the round under way, which judged the closed
        window they were read for and holds its inputs no longer (`judging`'s closed inputs
        budget): not kept after the round, made afresh if selected again. By the round alone. Their
        inputs leave the round's index of kept inputs too, where that index holds them (an input
        another kept selection shares stays held by it; a later selection of its row converts it
        again)."""
        if not self._in_round():
            return
        for key in [k for k in self.selections if k[0] == span]:
            kept = self.selections.pop(key)
            self._used.discard(key)
            for name, (_, ids, items) in kept.lists.items():
                index = self._kept_index.get(name)
                if index is not None:
                    for sid, item in zip(ids, items, strict=True):
                        if index.get(sid) is item:
                            del index[sid]

    def _select(
        self, span: Interval | None, all_calls: bool, since: datetime | None = None, whole_settled: bool = False,
        repeat: int | None = None, chains: dict[int, list[tuple[int, str]]] | None = None,
        peers: tuple[str, ...] = (), apart: bool = True,
    ) -> dict[str, _Columns]:  # fmt: skip
        """`select`'s rows by list, in rank order: ranks, signal ids and formula inputs — each row's
        content converted as it is read (`_inputs` with this `apart`), a page at a time: a restart's
        first round selects every signal of the open windows, whose contents held all at once
        until converted left the process's heap larger (the memory they took, spread among the
        inputs kept, is not given back). `chains` (with `repeat`) gains the contacts kept of the
        chains before the calls' bottom (`_chains`, over `peers` when given), by group."""
        found: dict[str, _Columns] = defaultdict(_Columns)

        def into(name: str) -> Callable[[list[tuple[int, str, bytes]]], None]:
            columns = found[name]  # listed, read empty or not
            return lambda rows: columns.add(rows, self._inputs(rows, name, apart=apart))

        whole = [n for n in LISTS if self._whole(n, span, all_calls, whole_settled)]
        for name, rows in self.store.whole(self.service_id, whole).items():
            into(name)(rows)
        if span is not None:
            lo, hi = _instant_us(span.start) - _SLACK_US, _instant_us(span.end) + _SLACK_US
            for name in sorted(_BY_TIME - set(whole)):
                bottom = self._bottom(name, lo, since, repeat)
                self.store.in_range(self.service_id, name, bottom, hi, into(name))
                if name == "calls" and repeat is not None:
                    firsts = self.store.group_firsts(peers or (self.service_id,), bottom, bottom + repeat)
                    into(name)(self._chains(firsts, bottom, repeat, {} if chains is None else chains, peers))
            for name in sorted(_BY_SETTLED - set(whole)):
                self.store.unsettled(self.service_id, name, lo, hi, into(name))
            if self.ongoing:
                inside = set(found["outages"].ids) if "outages" in found else set()
                missing = [i for i, (k, _) in self.ongoing.items() if k <= hi and i not in inside]
                under_way = self.store.lookup(self.service_id, missing)
                into("outages")([(r.rank, r.signal_id, r.content) for r in under_way.values()])
        for columns in found.values():
            columns.in_rank_order()  # the order of first recordings
        return dict(found)

    @staticmethod
    def _whole(name: str, span: Interval | None, all_calls: bool, whole_settled: bool) -> bool:
        """Whether `_select` reads the list `name` whole."""
        if span is None or (name == "calls" and all_calls):
            return True
        if name in _BY_SETTLED:
            return whole_settled
        return name not in _BY_TIME

    def _catch_up(
        self, kept: _Selection, span: Interval, all_calls: bool, since: datetime | None, whole_settled: bool,
        repeat: int | None = None, peers: tuple[str, ...] = (), extra: frozenset[int] = frozenset(),
    ) -> None:  # fmt: skip
        """A kept selection brought up to date: each id whose row changed since is placed (by its
        rank), replaced or removed by the rule `_select` selects by — the rows `_select` would
        read now, in the same order. With `repeat`, the chains of the groups a changed call was or
        is in before the calls' selection reaches `repeat` past its bottom are read again (noted in
        `regrouped`), and those of the groups `extra` (a peer's changes reached them)."""
        changed, kept.changed = kept.changed, set()
        rows: dict[str, Row] = {}
        parsed: dict[str, signals_pb2.Signal | None] = {}  # the messages rows written were made of
        missing: list[str] = []
        written = self._written
        for sid in changed:  # each changed id's row: as this process wrote it, else read
            row_written = written.get(sid)
            if row_written is None:
                missing.append(sid)
            else:
                rows[sid], parsed[sid] = row_written
        if missing:
            rows.update(self.store.lookup(self.service_id, sorted(missing)))
        lo, hi = _instant_us(span.start) - _SLACK_US, _instant_us(span.end) + _SLACK_US
        regroup: set[int] = set()  # the groups whose chains are read again
        calls_bottom = self._bottom("calls", lo, since, repeat)
        # Each list's rows in rank order (new ones are appended), and whether each is inside —
        # worked out a list at a time: its bottom and rule once, not once a row.
        by_list: dict[int, list[Row]] = {}
        for row in sorted(rows.values(), key=_ROW_RANK):
            got = by_list.get(row.list_code)
            if got is None:
                by_list[row.list_code] = [row]
            else:
                got.append(row)
        placed: list[tuple[str, list[Row], list[bool]]] = []
        for code, of_list in by_list.items():
            name = LISTS[code - 1]
            if self._whole(name, span, all_calls, whole_settled):
                inside = [True] * len(of_list)
            elif name in _BY_SETTLED:
                inside = [row.time_key >= lo and row.earliest <= hi for row in of_list]
            else:
                bottom = self._bottom(name, lo, since, repeat)
                if name == "outages":
                    inside = [
                        bottom <= row.time_key <= hi or (row.ongoing == 1 and row.time_key <= hi) for row in of_list
                    ]
                else:
                    inside = [bottom <= row.time_key <= hi for row in of_list]
            placed.append((name, of_list, inside))
        # The inputs of those inside converted together (a batch's calls in one loop, its outages in
        # another: `_convert_all`), not one call of `_inputs` a row.
        within = [
            (row.rank, row.signal_id, row.content)
            for _, of_list, inside in placed
            for row, is_inside in zip(of_list, inside, strict=True)
            if is_inside
        ]
        fresh = iter(
            self._inputs(
                within, None, apart=False, parsed=[parsed.get(e[1]) for e in within] if parsed else None,
                converted=self._caught,
            )
        )  # fmt: skip
        lists = kept.lists
        for name, of_list, inside in placed:
            columns = lists.get(name)
            if columns is None:
                columns = lists[name] = (array("q"), [], [])
            ranks, ids, items = columns
            if all(inside) and (not ranks or of_list[0].rank > ranks[-1]):
                # A live stream's catch-up: every row new, after each one held — appended together,
                # no bisection a row; none a change (an input placed after every other one).
                if repeat is not None and name == "calls":
                    top = calls_bottom + repeat
                    regroup.update(row.grp for row in of_list if row.grp is not None and row.time_key < top)
                ranks.extend([row.rank for row in of_list])
                ids.extend([row.signal_id for row in of_list])
                items.extend([next(fresh) for _ in of_list])
                continue
            for row, is_inside in zip(of_list, inside, strict=True):
                item = next(fresh) if is_inside else None
                self._place_caught_up(kept, name, row, is_inside, item, repeat, calls_bottom, regroup)
        if repeat is not None and (regroup or extra):
            self.regrouped = regroup
            self._rechain(kept, regroup | extra, calls_bottom, repeat, peers)

    def _place_caught_up(
        self, kept: _Selection, name: str, row: Row, inside: bool, item: Any, repeat: int | None,
        calls_bottom: int, regroup: set[int],
    ) -> None:  # fmt: skip
        """One row of `_catch_up` placed in its list by its rank: its input `item` (when `inside`)
        replacing the one held or inserted, or the one held removed; a change counted and logged."""
        sid = row.signal_id
        ranks, ids, items = kept.lists[name]
        at = bisect_left(ranks, row.rank)
        there = at < len(ranks) and ranks[at] == row.rank
        if there and inside and _same_input(items[at], item):
            # Held as it is: no change. A selection made afresh reads the index as it is then,
            # which may hold batches this process had not noted yet (stored by the recording
            # process, or another instance, after the round read the log); noting them later
            # marks their ids changed here. Counted as replacements in place, a live stream's
            # first round after a restart or a window's opening logged tens of thousands — more
            # than the log keeps — and the next round folded the whole window again (seconds at
            # a contact centre's density): services/metrics/README.md, "Rows read twice are no
            # change".
            return
        if repeat is not None and name == "calls":
            # A chain is read from the calls before `repeat` past the bottom (`_chains`): the
            # group a call is in now, and the one its content held here was in, when either is there.
            if row.grp is not None and row.time_key < calls_bottom + repeat:
                regroup.add(row.grp)
            if there and (was := _group_before(items[at], calls_bottom + repeat)) is not None:
                regroup.add(was)
        # Anything but an input placed after every other one is a change — but an outage under
        # way replaced in its place (its end reported: a completion): the running forms never
        # folded it, and look at it again by its place (`running.Running.under_way`,
        # `burning.BurnIndex`), so its completion is folded as an append would be.
        completed = there and inside and name == "outages" and items[at].end >= ONGOING
        change = (there or (inside and at < len(ranks))) and not completed
        if change:
            kept.changes[name] = kept.changes.get(name, 0) + 1
        if not inside:
            if there:
                del ranks[at], ids[at], items[at]
            return
        if there:
            if change:  # a replacement in place (a correction): logged for the running forms
                log = kept.edits.setdefault(name, [])
                log.append((kept.changes[name], at, items[at], item))
                if len(log) > EDITS_KEPT:
                    del log[: len(log) - EDITS_KEPT]
            ids[at], items[at] = sid, item
        else:
            ranks.insert(at, row.rank)
            ids.insert(at, sid)
            items.insert(at, item)

    def _chains(
        self, firsts: dict[int, int], bottom: int, repeat: int, chains: dict[int, list[tuple[int, str]]],
        peers: tuple[str, ...] = (),
    ) -> list[tuple[int, str, bytes]]:  # fmt: skip
        """The calls before `bottom` that first-contact resolution with this repeat window needs
        to tell the first contacts from `bottom` on (given every call from there): per group whose
        earliest call from `bottom` is `firsts[group]`, the first contact of the episode under way
        at `bottom` — every later contact within `repeat` of it is its repeat, the first one after
        starts the next episode, and it is decided before any window from `bottom` + `repeat` on.
        Episodes are anchored at their first contact, so which contact that is depends on the
        contacts before it without bound: the group's contacts are read back, each within `repeat`
        of the next, to one with none within `repeat` before it — a first contact whatever came
        earlier — and its episodes followed from there. Added to `chains` by group as (rank, id);
        returns (rank, id, content). Read by time (`SignalStore.group_calls`), a step further back
        for the groups still chained, each step twice as long as the one before: a chain of a year
        is read in a few queries, and one contact of it is kept (one a customer and reason: a
        group's calls read back to a call with none of the group within `repeat` before it hold
        every contact each of its customers and reasons chains to, so two sharing a group are
        each followed exactly). With `peers` (this service among them), the chains are read over
        all of their calls — one customer's contacts chain across services — and of the contacts
        kept those of this service are added and returned (each peer's selection holds its own)."""
        of = peers or (self.service_id,)
        read: dict[int, list[tuple[int, str, bytes, int, int, str]]] = defaultdict(list)
        pending = {g: e for g, e in firsts.items() if e - repeat < bottom}  # group → its earliest call read
        ceiling, reach = bottom, repeat
        while pending:
            floor = min(pending.values()) - reach
            found: dict[int, list[tuple[int, str, bytes, int, int, str]]] = defaultdict(list)
            for r in self.store.group_calls(of, sorted(pending), floor, ceiling):
                found[r[4]].append(r)
            step = _walked_back(pending, found, repeat, floor, _ROW_TIME, read)
            pending, ceiling, reach = step, floor, reach * 2
        out: list[tuple[int, str, bytes]] = []
        for g, rows in read.items():
            # Per customer and reason (two sharing a group: each followed on its own), in the
            # order `contact.first_contacts` takes them.
            anchors: dict[tuple[str, str], tuple[int, str, bytes, int, int, str]] = {}
            for r in sorted(rows, key=lambda r: (r[3], r[1])):  # as `contact.first_contacts` orders them
                body = signals_pb2.Signal.FromString(r[2]).call
                anchor = anchors.get((body.customer_id, body.reason))
                if anchor is None or r[3] - anchor[3] > repeat:
                    anchors[(body.customer_id, body.reason)] = r
            for anchor in anchors.values():
                if anchor[5] != self.service_id:
                    continue  # a peer's: its own selection holds it
                out.append(anchor[:3])
                chains.setdefault(g, []).append((anchor[0], anchor[1]))
        return out

    def _rechain(
        self, kept: _Selection, groups: set[int] | frozenset[int], bottom: int, repeat: int, peers: tuple[str, ...] = ()
    ) -> None:  # fmt: skip
        """The chains of these groups in a kept selection read again (`_chains`, over `peers` when
        given): the calls they held before `bottom` taken out, those they hold now placed by rank."""
        ranks, ids, items = kept.lists.setdefault("calls", (array("q"), [], []))
        changes = 0
        for g in groups:
            for rank, sid in kept.chains.pop(g, ()):
                at = bisect_left(ranks, rank)
                if at < len(ranks) and ranks[at] == rank and ids[at] == sid:
                    del ranks[at], ids[at], items[at]
                    changes += 1
        firsts = self.store.group_firsts(peers or (self.service_id,), bottom, bottom + repeat, sorted(groups))
        entries = sorted(self._chains(firsts, bottom, repeat, kept.chains, peers), key=_rank)
        for entry, item in zip(entries, self._inputs(entries), strict=True):
            at = bisect_left(ranks, entry[0])
            if at < len(ranks) and ranks[at] == entry[0]:
                ids[at], items[at] = entry[1], item
            else:
                ranks.insert(at, entry[0])
                ids.insert(at, entry[1])
                items.insert(at, item)
            changes += 1
        if changes:
            kept.changes["calls"] = kept.changes.get("calls", 0) + changes

    def _bottom(self, name: str, lo: int, since: datetime | None, repeat: int | None = None) -> int:
        """The lowest instant (µs) a list selected by time from `lo` (a span's start, less the
        margin) is selected from: an outage reaching into the span may start its longest before;
        a list the burn rates do not read starts at `since` (less the margin) when given; the
        calls of first-contact resolution (`repeat`) its repeat window before that (a first
        contact is decided up to it after its arrival)."""
        if name == "outages":
            return lo - self.longest_outage
        if name == "calls" and repeat is not None:
            return self._bottom(name, lo, since) - repeat
        if since is not None and name not in _BURN_READS:
            return max(lo, _instant_us(since) - _SLACK_US)
        return lo

    def begin_round(self) -> None:
        """An evaluation round starts: the inputs it selects are those kept after it."""
        self.selected = {}
        self._reused = False
        self._round_thread = threading.get_ident()
        self._used = set()
        self._kept_index = {}
        self._caught = {}

    def end_round(self, ended_after: datetime | None = None, now: datetime | None = None) -> None:
        """An evaluation round ended: when it selected any of this service's inputs, only those
        stay converted (its open windows', and those of closed windows it judged, until the next
        round that selects any) — the others are converted again from their latest content if a
        window needs them. What stays converted is bounded by what a round judges, not by
        history; a round that judged none of the service's windows keeps what was converted.
        `ended_after`, `now`: selections whose span ended between them stay too (a window closed
        that recently keeps its selection for late signals: `Metrics.closed_kept`)."""
        if self.selected or self._reused:
            self._converted = self.selected or {}
            # The selections it used stay (its open windows' spans), their inputs with them, and
            # those of windows that ended since `ended_after`; the others are released.
            self.selections = {
                k: v for k, v in self.selections.items()
                if k in self._used or (ended_after is not None and now is not None and ended_after < k[0].end <= now)
            }  # fmt: skip
        self.selected = None
        self._reused = False
        self._round_thread = None
        self._kept_index = {}
        self._caught = {}
        if self._written:
            marked = [k.changed for k in self.selections.values() if k.changed]
            if marked:
                self._written = {sid: r for sid, r in self._written.items() if any(sid in m for m in marked)}
            else:  # every selection caught up (as a round leaves them): none is kept
                self._written = {}

    @property
    def converted(self) -> dict[str, Any]:
        """Signal id → its latest content as a formula input, for every input kept converted: those
        of the kept selections (but the ids changed since) and the others kept. Made anew: to read."""
        out = self._index_kept()
        out.update(self._converted)
        return out

    def _kept_inputs(self, name: str) -> dict[str, Any]:
        """The inputs of list `name` of the kept selections by signal id, but those whose rows
        changed since (`_Selection.changed`, and `project`/`forget` after this was made): made once
        a round, when an input of that list is first looked up, rather than refilled from the
        selections every round — and that list's alone: the outages a new month's burn-rate
        look-backs read are not looked up among the month's calls (services/metrics/README.md,
        "The kept inputs indexed a list at a time")."""
        index = self._kept_index.get(name)
        if index is None:
            index = self._kept_index[name] = self._index_kept((name,))
        return index

    def _index_kept(self, names: Sequence[str] | None = None) -> dict[str, Any]:
        """The inputs of the kept selections' lists `names` (None: every list) by signal id, but
        those whose rows changed since."""
        index: dict[str, Any] = {}
        for kept in self.selections.values():
            for name, (_, ids, items) in kept.lists.items():
                if names is None or name in names:
                    index.update(zip(ids, items, strict=True))
        for kept in self.selections.values():
            for sid in kept.changed:
                index.pop(sid, None)
        return index

    def overlapping(self, span: Interval) -> list[signals_pb2.Signal]:
        """The latest contents of the outages (selected by time: `select`) and maintenance
        signals that may overlap `span` — a superset, in no order, for the caller to filter."""
        lo = _instant_us(span.start) - _SLACK_US - self.longest_outage
        hi = _instant_us(span.end) + _SLACK_US
        found = {e[1]: e[2] for e in self.store.in_range(self.service_id, "outages", lo, hi)}
        for r in self.store.lookup(self.service_id, [i for i in self.ongoing if i not in found]).values():
            found[r.signal_id] = r.content
        for _, sid, content in self.store.whole(self.service_id, ["maintenance"]).get("maintenance", []):
            found[sid] = content
        return [signals_pb2.Signal.FromString(c) for c in found.values()]

    def _inputs(
        self, entries: list[tuple[int, str, bytes]], kept_list: str | None = None, apart: bool = True,
        parsed: Sequence[signals_pb2.Signal | None] | None = None, converted: dict[str, Any] | None = None,
    ) -> list[Any]:  # fmt: skip
        """The formula inputs of these rows: those converted already (kept apart, or — when
        `kept_list` names their list — in that list of a kept selection), the others converted
        from their contents (in bulk: `_convert_all`) and kept converted — apart, and among what
        the round under way selected, unless `apart` is false: the rows of a selection the round
        keeps, which holds its inputs itself (a restart's first round selects every signal of the
        open windows: two dicts of them beside the selection held ≈ 100 B an input more).
        `parsed`: per row, its content as a message already (the one it was written from), or None.
        `converted`: where the inputs are looked up and kept instead (`_caught`: a catch-up's)."""
        if converted is None:
            converted = self._converted if apart else {}
        if converted:
            get = converted.get
            out: list[Any] = [get(e[1]) for e in entries]
            todo = [i for i, item in enumerate(out) if item is None]
        else:  # none held to look up (a round's first catch-up): each converted
            out = [None] * len(entries)
            todo = list(range(len(entries)))
        if todo and kept_list is not None and self.selections:
            kept_get = self._kept_inputs(kept_list).get
            for i in todo:
                out[i] = kept_get(entries[i][1])
            todo = [i for i in todo if out[i] is None]
        parse = signals_pb2.Signal.FromString
        for at in range(0, len(todo), _CONVERT_CHUNK):  # a chunk at a time: few parsed messages held at once
            chunk = todo[at : at + _CONVERT_CHUNK]
            ids = [entries[i][1] for i in chunk]
            if parsed is None:
                messages = [parse(entries[i][2]) for i in chunk]
            else:
                messages = [parse(entries[i][2]) if (m := parsed[i]) is None else m for i in chunk]
            for i, item in zip(chunk, _convert_all(messages, ids), strict=True):
                out[i] = converted[entries[i][1]] = item
        if self.selected is not None and apart and self._in_round():
            self.selected.update(zip([e[1] for e in entries], out, strict=True))
        return out

    def _in_round(self) -> bool:
        """Whether the caller is the evaluation round under way (its thread): what another
        thread selects meanwhile is neither kept nor counted among what the round selected."""
        return self.selected is not None and self._round_thread == threading.get_ident()


_Key = TypeVar("_Key")
_Contact = TypeVar("_Contact")
_ROW_TIME = operator.itemgetter(3)  # a row of `SignalStore.group_calls`: its time key
_CONTACT_AT = operator.itemgetter(0)  # a contact of `SignalIndex.chain_anchors`: its instant


def _walked_back(
    pending: Mapping[_Key, int], found: Mapping[_Key, list[_Contact]], repeat: int, floor: int,
    instant: Callable[[_Contact], int], walked: dict[_Key, list[_Contact]],
) -> dict[_Key, int]:  # fmt: skip
    """Each chain of contacts walked back (first-contact resolution's; `pending`: each chain's
    earliest contact walked so far, µs) over the contacts `found` before it, read from `floor` on:
    each contact within `repeat` of the next added to `walked`, back to one with none within `repeat`
    before it, where the chain ends. Returns the chains that may go on before `floor`, with their
    earliest contact."""
    further: dict[_Key, int] = {}
    for key, earliest in pending.items():
        gap = False
        for contact in sorted(found.get(key, ()), key=instant, reverse=True):
            if earliest - instant(contact) > repeat:
                gap = True  # none within the repeat window before `earliest`: the chain ends
                break
            walked[key].append(contact)
            earliest = instant(contact)
        if not gap and earliest - repeat < floor:  # it may go on before what was read
            further[key] = earliest
    return further


class _Columns:
    """One list's rows as a selection holds them: ranks (machine integers), signal ids and
    formula inputs, in step — no tuple a row (≈ 64 B each while a selection is made)."""

    __slots__ = ("ids", "items", "ranks")

    def __init__(self) -> None:
        self.ranks: array[int] = array("q")
        self.ids: list[str] = []
        self.items: list[Any] = []

    def add(self, rows: list[tuple[int, str, bytes]], items: list[Any]) -> None:
        """These rows, their inputs `items`, after those held."""
        self.ranks.extend([r[0] for r in rows])
        self.ids.extend([r[1] for r in rows])
        self.items.extend(items)

    def in_rank_order(self) -> None:
        """The rows put in the order of their ranks (read by time, they mostly are already)."""
        ranks = self.ranks
        if all(map(operator.lt, ranks, itertools.islice(ranks, 1, None))):
            return
        order = sorted(range(len(ranks)), key=ranks.__getitem__)
        self.ranks = array("q", [ranks[i] for i in order])
        self.ids = [self.ids[i] for i in order]
        self.items = [self.items[i] for i in order]


class _Selection:
    """One selection by time of a service's formula inputs (`ServiceSignals.select`), kept: per
    list, the ranks, signal ids and inputs in rank order, and the ids whose rows changed since
    it was last brought up to date."""

    def __init__(self, lists: dict[str, _Columns], hi_us: int) -> None:
        """`lists`: per list, its rows in rank order (`ServiceSignals._select`)."""
        self.hi_us = hi_us  # the latest time key (µs) a row it selects by time can have
        # The ranks as machine integers (8 B each, not an int object and a pointer).
        self.lists: dict[str, tuple[array[int], list[str], list[Any]]] = {
            name: (c.ranks, c.ids, c.items) for name, c in lists.items()
        }
        self.changed: set[str] = set()
        # Which selection this is, and per list how often an input in it was replaced (but an
        # outage under way replaced in its place: see `_catch_up`), removed or placed before its
        # end since it was made: with the lists' lengths, what tells a running
        # evaluation that its inputs were only appended to (`SignalSet.lineage`, running.py).
        self.serial = next(_SELECTIONS)
        self.changes: dict[str, int] = {}
        # Per list, the latest replacements in place among those changes (`EDITS_KEPT` at most):
        # (its change's number, place, input before, input after) — `SignalSet.edits`.
        self.edits: dict[str, list[tuple[int, int, Any, Any]]] = {}
        # First-contact resolution's (`ServiceSignals.select`'s `repeat`): the contacts it holds from
        # before its calls' bottom — of each chain, the first contact of the episode under way — by
        # group (`_chains`), as (rank, id).
        self.chains: dict[int, list[tuple[int, str]]] = {}


_SELECTIONS = itertools.count(1)
# A kept selection's key: span, all calls, first-contact resolution's repeat window (µs), the
# calls' start, the lists read whole by formulas of old versions, the services whose calls chain
# with its own (first-contact resolution of several services). Not the service's longest outage,
# though a selection's outages are read from that long before its span (`_bottom`): when it grows,
# the outages a fresh read would add either reach into the span — longer than the longest before,
# so recorded or corrected since the selection was made: among its changed ids, placed by
# `_catch_up` with the bottom as it is now — or end before the span, where no window within it nor
# any of its burn-rate look-backs reads them (each formula is given the outages that end after its
# start: `evaluation._overlapping`, `burn_rates`). Keyed by it, a longer outage than any made every
# selection of the service anew: the span read again, with a new lineage for every list, and every
# running form over it folded the window again (services/metrics/README.md, "A longer outage keeps
# the selection").
_SelectionKey = tuple[Interval, bool, int | None, datetime | None, bool, tuple[str, ...]]


def call_group(customer_id: str, reason: str) -> int:
    """An answered call's customer-and-reason group as the index holds it: 8 bytes of a BLAKE2b
    digest of both, a signed 64-bit integer. Two groups sharing one only read more calls. The
    groups of the customers calling lately are kept (`_GROUPS`): a customer calls again."""
    asked = (customer_id, reason)
    got = _GROUPS.get(asked)
    if got is None:
        key = f"{len(customer_id)}:{customer_id}{reason}".encode()
        got = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big", signed=True)
        if len(_GROUPS) >= _GROUPS_KEPT:
            _GROUPS.clear()
        _GROUPS[asked] = got
    return got


# The groups worked out lately, by (customer id, reason): ≈ 240 B each (a short id, measured), ≈ 4 MiB full.
_GROUPS: dict[tuple[str, str], int] = {}
_GROUPS_KEPT = 16_384


def group_key(content: bytes) -> int | None:
    """`call_group` of a stored content (None: not an answered call)."""
    s = signals_pb2.Signal.FromString(content)
    if s.WhichOneof("kind") != "call" or not s.call.HasField("answered_at"):
        return None
    return call_group(s.call.customer_id, s.call.reason)


def _same_input(held: Any, read: Any) -> bool:
    """Whether a formula input read again is the one held: of one type, equal, and equal in
    every field's text too (a Decimal of `1.0` equals one of `1.00`, but the digests encode each
    as written)."""
    return type(held) is type(read) and held == read and repr(held) == repr(read)


def _group_before(item: Any, before: int) -> int | None:
    """The group of a call input (`Call`) answered and arrived before `before` (µs), else None."""
    if item.answered_at is None or _instant_us(item.entered_queue) >= before:
        return None
    return call_group(item.customer_id, item.reason)


class _Services(dict[str, ServiceSignals]):
    """service id → its ServiceSignals (made, with no signal, when first asked for)."""

    def __init__(self, store: SignalStore) -> None:
        super().__init__()
        self.store = store

    def __missing__(self, service_id: str) -> ServiceSignals:
        entry = self[service_id] = ServiceSignals(service_id, self.store)
        return entry


def _rank(entry: tuple[int, str, bytes]) -> int:
    return entry[0]


def _instant_us(t: datetime) -> int:
    return (t - _EPOCH) // timedelta(microseconds=1)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _input(s: signals_pb2.Signal) -> Any:
    """One signal as its formula input (what `_add` appends to its list)."""
    return _CONVERT[str(s.WhichOneof("kind"))](s)


@dataclass
class _Absorbed:
    """Signals re-read from the store in one pass, held only as formula inputs (a month of a
    million signals is held once): a signal's later content replaces its earlier one in place.
    With `reach`, only the signals it says a window may read are held: one whose later content
    no longer does is dropped (`_GONE` in its place until `done`)."""

    signals: SignalSet = field(default_factory=SignalSet)
    at: dict[str, tuple[str, int]] = field(default_factory=dict)  # signal id → (SignalSet list, index)
    reach: Reach | None = None

    def absorb(self, items: list[signals_pb2.Signal], pages: ReadPages | None = None, service_id: str = "") -> None:
        """These signals read, in the order stored; `pages`: the map of the pass's pages being made,
        told their reaches (of service `service_id`) as they are worked out here."""
        reach = self.reach
        for s in items:
            name = _LIST_OF[str(s.WhichOneof("kind"))]
            at = self.at.get(s.signal_id)
            if reach is not None or pages is not None:
                reached = reach_us(name, s)
                if pages is not None:
                    pages.note_one(service_id, s, name, reached)
                if reach is not None and not reach.admits(name, s, reached):
                    if at is not None:  # its later content leaves the span: dropped
                        getattr(self.signals, name)[at[1]] = _GONE
                    continue
            item = _input(s)
            target: list[Any] = getattr(self.signals, name)
            if at is None:
                self.at[s.signal_id] = (name, len(target))
                target.append(item)
            else:  # a later content (completion, correction) replaces the earlier one in place
                target[at[1]] = item

    def done(self) -> SignalSet:
        """The signals held, without those dropped."""
        if self.reach is not None:
            for name in INPUT_LISTS:
                held = getattr(self.signals, name)
                if any(item is _GONE for item in held):
                    setattr(self.signals, name, [item for item in held if item is not _GONE])
        return self.signals


_GONE = object()  # `_Absorbed`: the place of a signal whose later content left the span


# The lists `reaching` holds by time; every other is held whole.
BY_TIME = ("calls", "outages", "requests")


_NEVER_US = 1 << 62  # an instant (µs) after every other: an outage under way reaches every span from its start


def reach_us(name: str, s: signals_pb2.Signal) -> tuple[int, int] | None:
    """The instants (µs since the epoch) a window must overlap to read a signal (its formula-input
    list's name, its content): a call's entry into the queue, an outage's start to its end (to
    every later instant while it is under way), a request count's or probe's; None for every other
    kind, which every window may read whatever its time (`BY_TIME`)."""
    if name == "calls":
        t = _us(s.call.entered_queue)
        return t, t
    if name == "outages":
        o = s.outage
        return _us(o.start), _us(o.end) if o.HasField("end") else _NEVER_US
    if name == "requests":
        if s.HasField("probe"):
            t = _us(s.probe.at)
            return t, t
        return _us(s.requests.start), _us(s.requests.end)
    return None


@dataclass(frozen=True)
class Reach:
    """Which signals (by formula-input list's name and latest content: `admits`) a window within a
    span may read (`reaching`): a call that entered the queue within it, a request count or probe
    and an outage (under way: from its start on) that overlap it — each with the selections'
    margin (`_SLACK_US`): a superset, which the formulas filter again — and every other kind, and
    with `all_calls` every call (first-contact resolution's: its chains of contacts reach back
    without bound), whatever their time. `lo`, `hi`: the span with its margin, µs."""

    lo: int
    hi: int
    all_calls: bool = False
    # With groups: the answered calls of these (customer id, reason) alone — a chain of contacts
    # walked back (`SignalIndex.chain_anchors`).
    groups: frozenset[tuple[str, str]] | None = None

    def admits(self, name: str, s: signals_pb2.Signal, reached: tuple[int, int] | None) -> bool:
        """Whether it reads this signal of list `name` that reaches `reached` (`reach_us`)."""
        if not self.holds(name, reached):
            return False
        if self.groups is None:
            return True
        if name != "calls":
            return False
        c = s.call
        return c.HasField("answered_at") and (c.customer_id, c.reason) in self.groups

    def holds(self, name: str, reached: tuple[int, int] | None) -> bool:
        """Whether it reads a signal of list `name` that reaches `reached` (`reach_us`)."""
        return (
            reached is None or (name == "calls" and self.all_calls) or (reached[0] <= self.hi and reached[1] >= self.lo)
        )


def reaching(span: Interval, all_calls: bool = False) -> Reach:
    """What a window within `span` may read (`Reach`)."""
    return Reach(_instant_us(span.start) - _SLACK_US, _instant_us(span.end) + _SLACK_US, all_calls)


# `ReadPages.flags`: a page read by every pass (it holds a signal of a list read whole, a correction
# or an outage's completion), and a page holding a call (read by a pass holding every call).
_EVERY_PASS, _HOLDS_CALLS = 1, 2


class ReadPages:
    """The pages of the signal log a pass over the store read (`stored_signals`), each with what a
    later pass needs to skip it unread: where it starts and ends in the log, the instants its
    signals reach (`reach_us`) — of the services `services` — and whether every pass must read it.
    A re-derivation's first pass reads every batch and makes it; its later passes read only the
    pages that may hold a signal of their span (services/metrics/README.md, "Later passes read only
    the pages their span needs"). Every pass must read a page holding a signal of a list read whole,
    a correction (its earlier content, which a pass may hold, can be anywhere) or the completion of
    an outage reported under way (whose content under way reaches every span after its start, where
    the completion must replace it). Those are the only later contents recording writes: a
    signal's new content is a completion, in a batch, or a correction, an event of its own."""

    def __init__(self, services: Iterable[str]) -> None:
        self.services = frozenset(services)
        self.starts, self.lasts = array("q"), array("q")  # a page: the notes after `start` to `last`
        self.los, self.his = array("q"), array("q")
        self.flags = bytearray()
        self.complete = False  # every page of the log, as it stood, mapped: later passes may skip
        self._ongoing: set[tuple[str, str]] = set()  # outages reported under way and not completed since
        self._lo, self._hi, self._flags = _NEVER_US, -_NEVER_US, 0  # the page being read

    def __len__(self) -> int:
        return len(self.starts)

    def corrected(self) -> None:
        """The page being read holds a correction: every pass reads it."""
        self._flags |= _EVERY_PASS

    def note(self, service_id: str, items: list[signals_pb2.Signal]) -> None:
        """A batch of the page being read: its signals' reaches (of any service: `stored_signals`
        calls it for those of `services` alone)."""
        for s in items:
            name = _LIST_OF[str(s.WhichOneof("kind"))]
            self.note_one(service_id, s, name, reach_us(name, s))

    def note_one(self, service_id: str, s: signals_pb2.Signal, name: str, reached: tuple[int, int] | None) -> None:
        """One signal of the page being read (of list `name`; `reached`: its `reach_us`)."""
        if reached is None:
            self._flags |= _EVERY_PASS
            return
        if reached[0] < self._lo:
            self._lo = reached[0]
        if reached[1] > self._hi:
            self._hi = reached[1]
        if name == "calls":
            self._flags |= _HOLDS_CALLS
        elif name == "outages":
            key = (service_id, s.signal_id)
            if reached[1] == _NEVER_US:
                self._ongoing.add(key)
            elif key in self._ongoing:  # its completion
                self._ongoing.discard(key)
                self._flags |= _EVERY_PASS

    def end_page(self, start: int, last: int) -> None:
        """The page being read ends: the notes after log position `start` to `last`."""
        self.starts.append(start)
        self.lasts.append(last)
        self.los.append(self._lo)
        self.his.append(self._hi)
        self.flags.append(self._flags)
        self._lo, self._hi, self._flags = _NEVER_US, -_NEVER_US, 0

    def meets(self, page: int, reach: Reach) -> bool:
        """Whether a pass holding what `reach` holds must read page `page`."""
        flags = self.flags[page]
        return bool(
            flags & _EVERY_PASS
            or (reach.all_calls and flags & _HOLDS_CALLS)
            or (self.los[page] <= reach.hi and self.his[page] >= reach.lo)
        )


@dataclass(frozen=True)
class StoredSignals:
    """Signals re-read from the store: formula inputs per service, and how many were read."""

    sets: dict[str, SignalSet]
    count: int


def combined(sources: Mapping[str, SignalSet], service_ids: list[str]) -> SignalSet:
    """One SignalSet of these services' signals, in the order given (each service's in the
    order stored): the order evaluation and recomputation both use."""
    present = [sid for sid in service_ids if sid in sources]
    if len(present) == 1:  # one service's: its set itself (its lists are the combined lists; not copied)
        return sources[present[0]]
    out = SignalSet()
    lineage: dict[str, tuple[tuple[int, int, int], ...]] | None = {}
    edits: dict[str, tuple[Sequence[tuple[int, int, Any, Any]], ...]] | None = {}
    for sid in service_ids:
        src = sources.get(sid)
        if src is None:
            continue
        for name in INPUT_LISTS:
            getattr(out, name).extend(getattr(src, name))
        if lineage is not None and src.lineage is not None:
            for name, parts in src.lineage.items():
                lineage[name] = lineage.get(name, ()) + parts
        else:
            lineage = None
        if edits is not None and src.edits is not None:  # each service's replacements, a part each
            for name, logs in src.edits.items():
                edits[name] = edits.get(name, ()) + logs
        else:
            edits = None
    out.lineage, out.edits = lineage, edits
    return out


# Per kind: its list's code in the index, the field from which it can change evaluations (`_FIRST`),
# whether a window selects it by time (`_BY_TIME`), whether availability reads it (`_BUDGETED_INPUTS`),
# whether a window selects it by when it settles (`_BY_SETTLED`).
_KIND: dict[str, tuple[int, str, bool, bool, bool]] = {}

# The field of each kind from which a signal can change evaluations.
_FIRST = {
    "outage": "start", "maintenance": "start", "requests": "start", "probe": "at", "incident": "failure_start",
    "call": "entered_queue", "ticket": "opened", "task": "received", "lead": "created", "deal": "closed_at",
}  # fmt: skip
_EPOCH_US = 0
_CALLS_CODE = LIST_CODE["calls"]
_KIND.update(
    (kind, (LIST_CODE[name], _FIRST[kind], name in _BY_TIME, kind in _BUDGETED_INPUTS, name in _BY_SETTLED))
    for kind, name in _LIST_OF.items()
)
_FAR_FUTURE_US = (FAR_FUTURE - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def _settled_us(kind: str, body: Any) -> int:
    """The instant (µs) a ticket, task, lead or deal settles: no window starting after it counts
    it (but a lead's follow-up depth, decided its days after the hand-off: the window's selection
    starts those days earlier, `judging`). A ticket or task is decided at or before each stop it
    has (met: at it; late: at a deadline its clock passed before it): its later stop (first
    response, resolution), a task's completion, FAR_FUTURE while one is missing (its deadline may
    still fall in any later window). A lead counts where it was created (close rate, deal size),
    handed off (leads needed; follow-ups v1) and where its follow-up speed was decided — at its
    first follow-up after the hand-off or at a deadline before it: the latest of those, FAR_FUTURE
    while a lead handed off has no follow-up. A deal counts where it closed. An incident reaches
    no window starting after its clock stopped, whichever instant stops it (`mttr`'s "R"): the
    latest of its response, restoration and resolution, FAR_FUTURE while one is missing."""
    if kind == "ticket":
        if body.HasField("first_response") and body.HasField("resolved"):
            return max(_us(body.first_response), _us(body.resolved))
        return _FAR_FUTURE_US
    if kind == "task":
        return _us(body.completed) if body.HasField("completed") else _FAR_FUTURE_US
    if kind == "lead":
        created = _us(body.created)
        if not body.HasField("handed_off"):
            return created
        handed = _us(body.handed_off)
        after = [at for at in map(_us, body.follow_ups) if at >= handed]
        return max(created, handed, min(after)) if after else _FAR_FUTURE_US
    if kind == "incident":
        names = ("responded_at", "restored_at", "resolved_at")
        if not all(body.HasField(name) for name in names):
            return _FAR_FUTURE_US
        return max(_us(getattr(body, name)) for name in names)
    return _us(body.closed_at)


def settled_key(content: bytes) -> int:
    """`_settled_us` of a stored content (the index's time key for the lists selected so)."""
    s = signals_pb2.Signal.FromString(content)
    kind = str(s.WhichOneof("kind"))
    return _settled_us(kind, getattr(s, kind))


def read_signal(s: signals_pb2.Signal) -> sig.Read:
    """What indexing reads of a signal of any kind (`signals.Read`, as `signals.validate` reads a
    call or an outage; anonymous is not told here): a window selects the lists by time (calls,
    request counts, outages) by their first instant, tickets, tasks, leads, deals and incidents by
    the instant they settle; the latest instant a budgeted signal reaches (a probe's instant, an
    end; None while an outage is under way); an answered call's customer and reason."""
    kind = str(s.WhichOneof("kind"))
    _, first_field, by_time, budgeted, by_settled = _KIND[kind]
    body = getattr(s, kind)
    at = getattr(body, first_field)
    first = at.seconds * 1_000_000 + at.nanos // 1_000  # `_earliest_us(s)`
    key = first if by_time else _settled_us(kind, body) if by_settled else 0
    last: int | None = None
    if budgeted:
        if kind == "probe":
            last = key
        elif body.HasField("end"):
            last = _us(body.end)
    asked = (body.customer_id, body.reason) if kind == "call" and body.HasField("answered_at") else None
    return (s.service_id, s.signal_id, kind, first, key, last, asked, False)


def _earliest_us(s: signals_pb2.Signal) -> int:
    """The instant (µs since the epoch) from which a signal can change evaluations."""
    kind = str(s.WhichOneof("kind"))
    return _us(getattr(getattr(s, kind), _FIRST[kind]))


def _encode(items: list[signals_pb2.Signal]) -> str:
    return base64.b64encode(signals_pb2.SignalBatch(signals=items).SerializeToString()).decode()


def _encode_serialised(contents: list[bytes]) -> str:
    """`_encode` of signals already serialised (`Signal.SerializeToString()` each): the same
    bytes — a `SignalBatch` is its field 1 (`repeated Signal signals`) once per signal, each
    its tag, its length (varint) and the signal's own wire format — built without copying
    every signal into a new batch message and serialising it again."""
    return base64.b64encode(_framed(contents)).decode()


def _checked(
    signals: list[signals_pb2.Signal], reason: str, via: str, owned: bool, reads: Sequence[sig.Read | None] | None
) -> tuple[list[signals_pb2.Signal], str, Sequence[sig.Read | None]]:  # fmt: skip
    """A batch as recording takes it (`SignalIndex.record`): the correction reason checked (always:
    not a signal's field), every signal validated unless the caller did (`reads`), and the way the
    signals came (`via`) filled in — on them when they are `owned`, else on copies."""
    reason = sig.correction_reason(reason)
    if reads is None:
        reads = [validate(s, i) for i, s in enumerate(signals)]
    elif len(reads) != len(signals):
        raise ValueError(f"{len(reads)} reads for {len(signals)} signals")
    if via:
        if owned:
            sig.fill_source(signals, via)
        else:
            signals = [sig.with_source(s, via) for s in signals]
    return signals, reason, reads


def _framed(contents: list[bytes]) -> bytes:
    """The wire format of a `SignalBatch` of these serialised signals (see `_encode_serialised`)."""
    parts = []
    for c in contents:
        n = len(c)
        if n < 0x80:
            parts.append(_TAG_SIGNALS + bytes((n,)))
        else:
            head = bytearray(_TAG_SIGNALS)
            while n >= 0x80:
                head.append((n & 0x7F) | 0x80)
                n >>= 7
            head.append(n)
            parts.append(bytes(head))
        parts.append(c)
    return b"".join(parts)


_TAG_SIGNALS = bytes((signals_pb2.SignalBatch.SIGNALS_FIELD_NUMBER << 3 | 2,))  # field 1, length-delimited


def _maintenance(s: signals_pb2.Signal) -> tuple[Interval, datetime | None]:
    m = s.maintenance
    announced = sig.instant(m.announced_at) if m.announced_at.seconds else None
    return sig.maintenance_interval(s), announced


def _outage(s: signals_pb2.Signal) -> Interval:
    # An ongoing outage is kept open-ended; evaluations clip it to their own "now".
    return sig.outage_interval(s, until=FAR_FUTURE)


# Per kind, its formula input (appended to the list `_LIST_OF` names).
_CONVERT: dict[str, Callable[[signals_pb2.Signal], Any]] = {
    "outage": _outage, "maintenance": _maintenance, "requests": sig.request_count, "probe": sig.probe_count,
    "incident": sig.incident, "call": sig.call, "ticket": sig.ticket, "task": sig.task, "lead": sig.lead,
    "deal": sig.deal,
}  # fmt: skip


_CONVERT_CHUNK = 1_000


def _convert_all(signals: list[signals_pb2.Signal], ids: list[str] | None = None) -> list[Any]:
    """`_input` of each signal: calls and outages (what a window selects by the hundred thousand)
    in one loop each (`signals.calls`, `signals.outage_intervals`), any other kind one by one.
    `ids`: the signals' ids as the caller holds them (a call then holds the same string)."""
    kinds = [s.WhichOneof("kind") for s in signals]
    distinct = set(kinds)
    if distinct == {"call"}:
        return sig.calls(signals, ids)
    if distinct == {"outage"}:
        return sig.outage_intervals(signals, until=FAR_FUTURE)
    if not distinct & {"call", "outage"}:
        return [_input(s) for s in signals]
    # Mixed (a batch caught up: calls and outages together): each kind in its own loop, placed back.
    out: list[Any] = [None] * len(signals)
    for kind in distinct:
        at = [i for i, k in enumerate(kinds) if k == kind]
        part = _convert_all([signals[i] for i in at], None if ids is None else [ids[i] for i in at])
        for i, item in zip(at, part, strict=True):
            out[i] = item
    return out


def _add(into: SignalSet, s: signals_pb2.Signal) -> None:
    kind = str(s.WhichOneof("kind"))
    getattr(into, _LIST_OF[kind]).append(_CONVERT[kind](s))


class SignalIndex(_Host):
    """Recording signals and indexing them (a mixin of `Metrics`, whose constructor sets the
    state declared here)."""

    _lock: threading.RLock
    _providers: dict[str, str]
    _services: dict[str, ServiceSignals]
    _signal_store: SignalStore
    _signals_position: int  # the latest signal event read from the log
    _signals_read: int  # the log position signal events were read up to (topic_pages)
    _store_position: int  # the log position the store's signal index holds every signal event up to
    _index_stale: bool  # the facts held may differ from the store's (a write failed): read them again
    # Where batches are recorded when not here (`record_in`), and what it told of those it stored,
    # by each of their log positions, until the log is read there (`_refresh_signals`).
    recording_process: RecordingProcess | None
    _told: dict[int, Told]
    _told_rows: int  # the rows those hold (at most `WRITTEN_KEPT`)
    _told_lock: threading.Lock
    _judged_position: int  # signals up to this log position were judged by a round (judging.JUDGED)
    _changed: dict[str, datetime]  # service → earliest instant of signals not yet evaluated
    _changed_lists: dict[str, set[str]]  # service → the lists (`LISTS`) of those signals
    _fcr_services: tuple[tuple[int, int], dict[str, str]] | None  # ((views, services positions), services)

    if TYPE_CHECKING:  # judging.Judging.scope

        def scope(self, view: AgreementView, now: datetime) -> tuple[dict[str, Any], str, list[str]]: ...

    # -- who may record --------------------------------------------------------------------------
    def provider_of(self, service_id: str) -> str:
        cached = self._providers.get(service_id)
        if cached is not None:
            return cached
        try:
            known: Any = self.repository.get(KnownService.create_id(service_id))
        except AggregateNotFoundError:
            raise UnknownServiceError(
                f"service {service_id!r} is not registered (register it with the agreements service first)"
            ) from None
        with self._lock:  # read whole by views.AgreementViews.services_covered
            self._providers[service_id] = str(known.provider_department_id)  # a service's provider never changes
        return self._providers[service_id]

    def _check_may_record(self, caller: Principal, service_ids: set[str]) -> None:
        for sid in sorted(service_ids):
            provider = self.provider_of(sid)
            if caller.role == "service":
                continue
            if caller.role != "department" or caller.department != provider:
                who = f"department {caller.department}" if caller.role == "department" else f"role {caller.role}"
                raise NotTheProviderError(
                    f"only the provider of service {sid!r} ({provider}) or a service identity may record its signals; "
                    f"{who} may not"
                )

    # -- recording signals -----------------------------------------------------------------------------
    def record(
        self, caller: Principal, signals: list[signals_pb2.Signal], reason: str = "", *, via: str = "",
        owned: bool = False, reads: Sequence[sig.Read | None] | None = None,
    ) -> Recorded:  # fmt: skip
        """Validate, authorise and store one batch: one event per service, in one
        transaction. Each signal is stored with its provenance; one that names no source gets
        `via` (the way it arrived: "grpc", "nats") when given. Signals the service already
        holds with the same content (or repeated in the batch) are counted as duplicates and
        not stored again. A known signal id with
        another content is a correction: stored as its own event (`SignalCorrection`: the
        caller, the digest of the content it replaces, the fields that changed, `reason` —
        the sender's `correction_reason`, checked by `signals.correction_reason`, else a fixed
        text), so that the windows it changes are judged again (restated once closed).

        `owned`: the messages are the caller's to give away (a request it just parsed), so `via`
        is filled in on them rather than on copies; `reads`: the caller validated every signal
        already, and these are what `signals.validate` returned for each (what indexing reads of
        it, not read again)."""
        if self.recording_process is not None:
            return self.submit_record(caller, signals, reason, via=via, owned=owned, reads=reads).result()
        signals, reason, reads = _checked(signals, reason, via, owned, reads)
        keys = [(s.service_id, s.signal_id) if r is None else (r[0], r[1]) for s, r in zip(signals, reads, strict=True)]
        service_ids = {k[0] for k in keys}
        self._check_may_record(caller, service_ids)
        self._check_fcr_customers(signals, reads)
        with self._lock:  # dedupe and save as one step within this process
            attempt = 1
            while True:
                try:
                    return self._record_once(caller, signals, reason, keys, reads, owned or bool(via))
                except IndexMovedError:  # another process stored signals meanwhile: decide again
                    if attempt == 3:
                        raise
                    attempt += 1
                    self._load_signal_facts()

    # -- recording in a process of its own (accord_metrics.recorder) ---------------------------------------
    def record_in(self, process: RecordingProcess) -> None:
        """Record every batch through this recording process from now on (`record`, `submit_record`):
        validated here, stored there; what it stores is noted here as it tells it (`stored_elsewhere`)."""
        process.on_stored = self.stored_elsewhere
        self.recording_process = process

    def submit_record(
        self, caller: Principal, signals: list[signals_pb2.Signal], reason: str = "", *, via: str = "",
        owned: bool = False, reads: Sequence[sig.Read | None] | None = None, stream: int = 0, wait: bool = True,
        data: bytes | None = None,
    ) -> Future[Recorded]:  # fmt: skip
        """`record` through the recording process, without waiting for its answer: checked and
        validated here (the same errors, raised here, nothing sent), the way the signals came filled
        in, then sent; the future holds the outcome or the error the recording process met
        (`accord_metrics.recorder`). `stream`: of a stream of batches (`RecordingProcess.new_stream`),
        none of which is recorded after one that failed. `wait`: false to send only if sending need
        not wait (`RecordingProcess.submit`): `WouldWaitError` otherwise, nothing sent. `data`: the
        batch's wire format as the caller has it — the signals as they are now (filled in), a
        `SignalBatch`'s or a request's of the same two fields — rather than each signal serialised here."""
        process = self.recording_process
        if process is None:
            raise RuntimeError("no recording process: record in this process (`record`)")
        signals, reason, reads = _checked(signals, reason, via, owned, reads)
        ids: dict[str, list[str]] = defaultdict(list)
        for s, r in zip(signals, reads, strict=True):
            if r is None:
                ids[s.service_id].append(s.signal_id)
            else:
                ids[r[0]].append(r[1])
        if data is None:
            data = _framed([s.SerializeToString() for s in signals])
        # Its rows wanted back while those told and not yet noted are few (`stored_elsewhere`).
        rows = self._told_rows < WRITTEN_KEPT
        return process.submit(caller, data, reason, list(reads), self.clock.now(), dict(ids), stream, rows, wait)

    def stored_elsewhere(self, recorded: Recorded, ids: dict[str, list[str]]) -> None:
        """The recording process stored a batch (its events at `recorded`'s positions): noted for the
        next look at the log, which takes its changes from here rather than reading the batch back
        (`_refresh_signals`); the relay is woken. Called in the thread that reads its answers."""
        if recorded.last_position:
            with self._told_lock:
                # Its rows kept until noted while those kept are few: at most as many as the kept
                # selections keep of the rows written (`WRITTEN_KEPT`; ≈ 300 B each, read back beyond).
                rows = recorded.rows if self._told_rows + len(recorded.rows) <= WRITTEN_KEPT else ()
                told = Told(recorded.first_position, recorded.last_position, recorded.changes, ids, rows)
                if told.last > self._signals_read:  # else read from the log already (and noted so)
                    for position in range(told.first, told.last + 1):
                        self._told[position] = told
                    self._told_rows += len(rows)
            self.notify_saved()

    def _take_told(self, notes: Sequence[Any]) -> dict[int, Told]:
        with self._told_lock:
            taken = {n.id: t for n in notes if (t := self._told.pop(n.id, None)) is not None}
            self._count_told_rows()
            return taken

    def _count_told_rows(self) -> None:
        """The rows held by what was told and not noted yet (`_told_lock` held)."""
        self._told_rows = sum(len(t.rows) for t in {id(t): t for t in self._told.values()}.values())

    def _apply_told(self, told: Told, rows_too: bool) -> None:
        """A batch the recording process stored, as `_noted` notes one another process indexed: its
        ids converted again when selected, and its changes for the next round unless a round judged it.
        `rows_too`: no batch of another process came between (the rows it wrote are the store's
        still, unless a later told batch replaces them): they are kept as this process keeps the rows
        it writes, for the kept selections' catch-up (`ServiceSignals.keep_written`)."""
        for service_id, ids in told.ids.items():
            self._services[service_id].forget(ids)
        if rows_too and told.rows:
            by_service: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
            for r in told.rows:
                by_service[r[0]].append(r)
            for service_id, rows in by_service.items():
                self._services[service_id].keep_written(rows)
        if told.last <= self._judged_position:
            return
        for service_id, at_us, lists in told.changes:
            self._note_change(service_id, _EPOCH + timedelta(microseconds=at_us), lists)

    def _record_once(
        self, caller: Principal, signals: list[signals_pb2.Signal], reason: str, keys: list[tuple[str, str]],
        reads: Sequence[sig.Read | None], ours: bool,
    ) -> Recorded:  # fmt: skip
        """Dedupe and save one batch (the lock held; `keys`: each signal's service and id, `reads`
        what validating each read of it; `ours`: the messages are no one else's to change); its
        index rows are written in the batch's own transaction."""
        self._refresh_signals()
        # The index rows of the batch's ids, one query per service: what dedupe is decided by.
        wanted: dict[str, list[str]] = defaultdict(list)
        for service_id, signal_id in keys:
            wanted[service_id].append(signal_id)
        held = {sid: self._signal_store.lookup(sid, ids) for sid, ids in wanted.items()}
        fresh: dict[str, list[signals_pb2.Signal]] = defaultdict(list)
        fresh_reads: dict[str, list[sig.Read | None]] = defaultdict(list)
        corrected: dict[str, list[tuple[signals_pb2.Signal, str, list[str]]]] = defaultdict(list)
        # Each id's first signal to be stored in this batch: another with the same id is a
        # duplicate when its content digest is the same (digests computed only then).
        in_batch: dict[tuple[str, str], signals_pb2.Signal] = {}
        duplicates = 0
        # A batch of one service holding none of its ids, each once (nearly every batch of a live
        # feed): every signal is new, as the loop below would find one by one.
        everything_new = len(held) == 1 and not next(iter(held.values())) and len(set(keys)) == len(keys)
        if everything_new:
            fresh[keys[0][0]], fresh_reads[keys[0][0]] = signals, list(reads)
        for i, s in enumerate(() if everything_new else signals):
            key = keys[i]
            first = in_batch.get(key)
            if first is not None:
                if content_digest(first) != content_digest(s):
                    raise sig.InvalidSignalError(
                        f"signals[{i}].signal_id: {key[1]!r} appears twice in the batch with different "
                        "content (send a correction in a later batch)"
                    )
                duplicates += 1
                continue
            row = held[key[0]].get(key[1])
            if row is None:  # an id the service does not hold: new
                in_batch[key] = s
                fresh[key[0]].append(s)
                fresh_reads[key[0]].append(reads[i])
                continue
            verdict = self._services[key[0]].classify(s, f"signals[{i}]", row)
            if verdict == DUPLICATE:
                duplicates += 1
                continue
            in_batch[key] = s
            if verdict == CORRECTION:
                before = signals_pb2.Signal.FromString(row.content)
                corrected[key[0]].append((s, content_digest(before), changed_fields(before, s)))
            else:
                fresh[key[0]].append(s)
                fresh_reads[key[0]].append(reads[i])
        # The new signals serialised once: their index rows' contents and their batch's bytes.
        serialised = {sid: [s.SerializeToString() for s in items] for sid, items in fresh.items()}
        batches: list[Any] = [
            SignalBatch(service_id=sid, batch=_encode_serialised(serialised[sid]), count=len(items))
            for sid, items in sorted(fresh.items())
        ]
        actor = f"{caller.role}:{caller.subject}" + (f" ({caller.department})" if caller.department else "")
        for sid, fixes in sorted(corrected.items()):
            batches.append(
                SignalCorrection(
                    service_id=sid,
                    batch=_encode([f[0] for f in fixes]),
                    count=len(fixes),
                    previous_digests=[f[1] for f in fixes],
                    changed=[",".join(f[2]) for f in fixes],
                    actor=actor,
                    reason=reason or "re-sent with a known signal id and different content",
                    agreement_ids=self._agreements_of_service(sid),
                )
            )
        stored: tuple[int, int, tuple[tuple[str, int, tuple[str, ...]], ...]] = (0, 0, ())
        rows: list[tuple[Any, ...]] = []
        if batches:
            # The index rows of the batch (from the rows read for its dedupe), written in the
            # batch's own transaction, with the position of its last event.
            own: list[tuple[int | None, str, list[signals_pb2.Signal]]] = [
                *((None, sid, items) for sid, items in sorted(fresh.items())),
                *((None, sid, [f[0] for f in fixes]) for sid, fixes in sorted(corrected.items())),
            ]
            rows, facts, changes = self._rows_of(own, held, serialised, fresh_reads, ours)
            expected = self._store_position

            written: list[int] = []

            def index(cursor: Any, ids: list[int]) -> None:
                self._signal_store.write(cursor, rows, facts, expected, ids[0], ids[-1])
                written[:] = (ids[0], ids[-1])

            try:
                self.save(*batches, with_records=index)
            except BaseException:
                self._index_stale = True  # the facts were moved on, the store's were not
                for entry in self._services.values():
                    entry.drop_written()  # rows not written: read from the store (the entries are made anew)
                raise
            if written:
                self._store_position = self._signals_position = written[-1]
                self._signals_read = max(self._signals_read, written[-1])
                for service_id, at, lists in changes:
                    self._note_change(service_id, at, lists)
            else:  # a recorder that runs no with_records hook: indexed from the log instead
                self._index_stale = True
                self._refresh_signals()
            if written:  # what was stored, for a process this one tells (`accord_metrics.recorder`)
                stored = (
                    written[0],
                    written[-1],
                    tuple((s, _instant_us(t), tuple(sorted(ls))) for s, t, ls in changes),
                )
        return Recorded(
            accepted=sum(len(v) for v in fresh.values()),
            duplicates=duplicates,
            corrections=sum(len(v) for v in corrected.values()),
            first_position=stored[0],
            last_position=stored[1],
            changes=stored[2],
            rows=rows if stored[1] else (),
        )

    def _check_fcr_customers(self, signals: list[signals_pb2.Signal], reads: Sequence[sig.Read | None]) -> None:
        """An answered call without a first-contact flag is judged by repeat contacts of the
        same customer: refused without its customer id when its service is measured by an
        FCR objective that infers resolution (anonymous calls are no one customer). Which
        services are is asked only for a batch holding such a call: asking reads the view events
        since and, after one, every agreement's view. (`reads`: what validating each signal read
        of it, which tells this of a call.)"""
        # (`signals.validate` reads every call, so only a signal with a `Read` can be one.)
        anonymous = [(i, s) for i, (s, r) in enumerate(zip(signals, reads, strict=True)) if r is not None and r[7]]
        if not anonymous:
            return
        inferred = self._fcr_inferred_services()
        for i, s in anonymous:
            if s.service_id in inferred:
                raise sig.InvalidSignalError(
                    f"signals[{i}].call.customer_id: is required: service {s.service_id!r} is measured by "
                    f"first-contact resolution inferred from repeat contacts ({inferred[s.service_id]}), and "
                    "an answered call without a first_contact flag needs its customer"
                )

    def _fcr_inferred_services(self) -> dict[str, str]:
        """Services measured by an FCR objective inferring resolution from repeat contacts
        (in any version or the effective terms of any agreement) → "agreement/objective"."""
        # Until a view changes or a service is registered (it may join an agreement naming none).
        position = (self._refresh_views(), self._refresh_services())
        cached = self._fcr_services
        if cached is not None and cached[0] == position:
            return cached[1]
        now = self.clock.now()
        out: dict[str, str] = {}
        for view in self.views():
            if not view.versions:
                continue
            latest, _, services = self.scope(view, now)
            for terms in [latest, *(v["terms"] for v in view.versions)]:
                for o in terms.get("objectives") or []:
                    method = fcr_method(o.get("parameters") or {})
                    if o.get("metric") == "METRIC_FIRST_CONTACT_RESOLUTION" and method != "FLAGGED":
                        for sid in services:
                            out.setdefault(sid, f"{view.agreement_id}/{o.get('objective_id', '')}")
        self._fcr_services = (position, out)
        return out

    def agreement_ids_of(self, envelope: events_pb2.EventEnvelope) -> set[str]:
        """A correction of signals concerns the agreements judged on its service's signals
        (recorded with it); every other event names its agreement as the kit reads it."""
        if envelope.type.endswith(".SignalsCorrected"):
            msg = unpack(envelope, metrics_events.SignalsCorrected)
            return set(msg.agreement_ids)
        return super().agreement_ids_of(envelope)

    def _agreements_of_service(self, service_id: str) -> list[str]:
        """The agreements (as metrics knows them) judged on a service's signals (`measured_services`):
        those a correction of its signals concerns (AgreementHistory shows it to them)."""
        out = []
        now = self.clock.now()
        for view in self.views():
            if view.versions and service_id in self.measured_services(view, now)[0]:
                out.append(view.agreement_id)
        return sorted(out)

    # -- the store's signal index ------------------------------------------------------------------
    def _open_signal_index(self) -> None:
        """Open the store's signal index and read its facts; the log is read (by the next
        `_refresh_signals`) from the judged position or the index's, whichever is earlier: the
        signals after the judged position are the first round's changes, those after the index's
        are indexed first (a crash between a batch's commit and its indexing, or a store recorded
        before the index existed). Nothing before both is read."""
        self._signal_store = SignalStore(self.recorder)
        # Tickets, tasks, leads, deals and incidents indexed before windows selected them by when
        # they settle: keyed so (once; a row an update).
        t0 = time.perf_counter()
        keyed = self._signal_store.key_settled(sorted(_BY_SETTLED), settled_key)
        if keyed:
            log.info("signal_index_keyed", rows=keyed, seconds=round(time.perf_counter() - t0, 3))
        # Answered calls indexed before first-contact resolution read them by group: grouped so (once).
        t0 = time.perf_counter()
        grouped = self._signal_store.key_groups(group_key)
        if grouped:
            log.info("signal_index_grouped", rows=grouped, seconds=round(time.perf_counter() - t0, 3))
        self._load_signal_facts()
        self._signals_position = self._signals_read = min(self._judged_position, self._store_position)

    def _load_signal_facts(self) -> None:
        """Each service's facts, its outages under way and the index's position as the store has
        them (at the start; after another process moved the index on; after a write that failed),
        set on the entries held, new ones made. An entry keeps what it holds — its kept selections,
        conversions, rows written: what another process indexed reaches them as any change does, by
        its ids (`forget`, from `_noted` or `_apply_told`; a failed write's rows were dropped). (They
        were made anew once, every kept selection then read again from the store: with a recording
        process storing batches all the time, that was every round.)"""
        state = self._signal_store.state()
        if not isinstance(self._services, _Services):
            self._services = _Services(self._signal_store)
        for sid in set(state.facts) | set(state.ongoing) | set(self._services):
            entry = self._services[sid]
            facts = state.facts.get(sid) or Facts()
            entry.count, entry.longest_outage, entry.reaches_us = facts.count, facts.longest_outage, facts.reaches
            entry.ongoing = dict(state.ongoing.get(sid) or {})
        self._store_position = state.position
        self._index_stale = False

    def _project(
        self, batches: list[tuple[int | None, str, list[signals_pb2.Signal]]], position: int,
        held: dict[str, dict[str, Row]] | None = None,
    ) -> bool:  # fmt: skip
        """Index stored batches ((log position, None: just stored by this process; service;
        signals), in log order) in the store, with the position `position`, in one transaction;
        `held`: the rows already read for some of their ids. Each becomes a change for the next
        round unless a round already judged it. False when another process moved the index meanwhile
        (nothing written: the facts are read again)."""
        rows, facts, changes = self._rows_of(batches, held if held is not None else {})
        try:
            done = self._signal_store.try_commit(rows, facts, self._store_position, position)
        except BaseException:
            self._index_stale = True  # the facts were moved on, the store's were not
            raise
        if not done:
            self._load_signal_facts()
            return False
        self._store_position = position
        for service_id, at_, lists in changes:
            self._note_change(service_id, at_, lists)
        return True

    def _rows_of(
        self, batches: list[tuple[int | None, str, list[signals_pb2.Signal]]], held: dict[str, dict[str, Row]],
        serialised: dict[str, list[bytes]] | None = None, reads: dict[str, list[sig.Read | None]] | None = None,
        ours: bool = True,
    ) -> tuple[list[tuple[Any, ...]], dict[str, Facts], list[tuple[str, datetime, frozenset[str]]]]:  # fmt: skip
        """The index rows of stored batches (see `_project`), the facts of their services (moved
        on in memory), and the changes they are for the next round: (service, earliest instant,
        the lists changed). `serialised`, `reads`: per service, the signals of its first batch
        here already serialised, and what validating them read of them; `ours`: as `project`'s."""
        rows: dict[Any, tuple[Any, ...]] = {}  # (service, id) → its row as written: (service, *Row)
        changes: list[tuple[str, datetime, frozenset[str]]] = []
        touched: set[str] = set()
        for at, service_id, items in batches:
            entry = self._services[service_id]
            known = held.setdefault(service_id, {})
            if at is not None:
                missing = [s.signal_id for s in items if s.signal_id not in known]
                if missing:
                    known.update(self._signal_store.lookup(service_id, missing))
            contents = serialised.pop(service_id, None) if serialised else None
            first_reads = reads.pop(service_id, None) if reads else None
            new_rows, reach, lists = entry.project(items, known, contents, first_reads, ours)
            touched.add(service_id)
            head = (service_id,)
            if len(batches) == 1:  # one batch: its ids are distinct (`project` keeps one row an id)
                rows = {r[0]: head + r for r in new_rows}
            else:
                for r in new_rows:
                    rows[(service_id, r[0])] = head + r
            if at is None or at > self._judged_position:
                # A signal's earlier content counts as a change too: the windows it was in are judged again.
                changes.append((service_id, _EPOCH + timedelta(microseconds=reach), lists))
        facts = {sid: self._services[sid].facts() for sid in sorted(touched)}
        return list(rows.values()), facts, changes

    def _note_change(self, service_id: str, at: datetime, lists: Iterable[str] = INPUT_LISTS) -> None:
        """Signals of `service_id` in `lists` changed from `at` on: a change for the next round."""
        if service_id not in self._changed or at < self._changed[service_id]:
            self._changed[service_id] = at
        self._changed_lists.setdefault(service_id, set()).update(lists)

    def _noted(self, at: int, service_id: str, items: list[signals_pb2.Signal]) -> None:
        """A batch the store's index already holds (indexed by another process, or before a
        restart): its signals are converted again when selected, and it is a change for the next
        round unless a round judged it — from the earliest instant any content of its ids reaches."""
        entry = self._services[service_id]
        entry.forget(s.signal_id for s in items)
        if at <= self._judged_position:
            return
        # Each id's earliest over all its contents, as the index holds it (not its rows' contents).
        earliest = [_earliest_us(s) for s in items]
        earliest += self._signal_store.earliest(service_id, [s.signal_id for s in items])
        self._note_change(service_id, _EPOCH + timedelta(microseconds=min(earliest)))

    def _refresh_signals(self) -> None:
        """Index the signal batches stored since we last looked (by any process): those the
        store's index does not hold yet are indexed there, page by page."""
        with self._lock:
            if self._index_stale:
                self._load_signal_facts()
            for notes, read_to in topic_pages(self.recorder, self._signals_read, SIGNAL_TOPICS, 500):
                if not notes:
                    self._signals_read = read_to
                    continue
                # Batches the recording process stored and told of: their changes as told, not read back.
                told = self._take_told(notes)
                if told and max(t.last for t in told.values()) > self._store_position:
                    self._load_signal_facts()  # it indexed them: the facts as the store has them
                batches: list[tuple[int, str, list[signals_pb2.Signal]]] = []
                for n in notes:
                    if n.id in told:
                        continue
                    batch: Any = self.mapper.to_domain_event(n)
                    batches.append((n.id, batch.service_id, list(batch_message(batch.batch).signals)))
                told_only = not batches  # the told batches' rows are the store's (none of another came between)
                # Whoever stores a signal event indexes it in the same transaction (`SignalStore.write`
                # refuses one the index does not hold before it): a batch past the position last read
                # (stored by another process, or by the recording process before its answer came) is
                # indexed already. Read that position before building rows its writing would refuse.
                if (
                    batches
                    and batches[-1][0] > self._store_position
                    and self._signal_store.position() > self._store_position
                ):
                    self._load_signal_facts()
                while batches:
                    for at, service_id, items in batches:
                        if at <= self._store_position:
                            self._noted(at, service_id, items)
                    rest = [b for b in batches if b[0] > self._store_position]
                    if not rest or self._project(list(rest), notes[-1].id):
                        break
                    batches = rest  # another process indexed some meanwhile: those are noted
                for t in {id(t): t for t in told.values()}.values():
                    self._apply_told(t, told_only)
                self._signals_position, self._signals_read = notes[-1].id, read_to
            if self._told:  # told after the log was read there (noted from the log): not kept
                with self._told_lock:
                    for position in [p for p in self._told if p <= self._signals_read]:
                        del self._told[position]
                    self._count_told_rows()

    def last_request_count_end(self, service_id: str, id_prefix: str) -> datetime | None:
        """The latest end among a service's request counts whose signal ids start with
        `id_prefix`: where a pulling source (prometheus.py) left off, read from the signals it
        recorded — its position is kept by the very events it records."""
        with self._lock:
            self._refresh_signals()
            held = [signals_pb2.Signal.FromString(c) for c in self._signal_store.with_prefix(service_id, id_prefix)]
            ends = [sig.instant(s.requests.end) for s in held if s.WhichOneof("kind") == "requests"]
        return max(ends, default=None)

    def signals(self, service_id: str | None = None) -> list[signals_pb2.Signal]:
        """Every stored signal content (of one service), in the order stored — first
        recordings and corrections alike: the raw record."""
        out: list[signals_pb2.Signal] = []
        position = 0
        while True:
            notes = self.recorder.select_notifications(
                start=position, limit=500, topics=SIGNAL_TOPICS, inclusive_of_start=False
            )
            if not notes:
                return out
            for n in notes:
                batch: Any = self.mapper.to_domain_event(n)
                if service_id is None or batch.service_id == service_id:
                    out.extend(batch_message(batch.batch).signals)
            position = notes[-1].id

    def signal_set(
        self, service_ids: list[str], *, from_store: bool = False, span: Interval | None = None,
        all_calls: bool = False, since: datetime | None = None, whole_settled: bool = False,
        repeat: timedelta | None = None,
    ) -> SignalSet:  # fmt: skip
        """The signals of these services as formula inputs, in one set: `signal_sources` combined."""
        sources = self.signal_sources(
            service_ids, from_store=from_store, span=span, all_calls=all_calls, since=since,
            whole_settled=whole_settled, repeat=repeat,
        )  # fmt: skip
        return combined(sources, service_ids)

    def signal_sources(
        self, service_ids: Iterable[str], *, from_store: bool = False, span: Interval | None = None,
        all_calls: bool = False, since: datetime | None = None, whole_settled: bool = False,
        repeat: timedelta | None = None, reach: Reach | None = None,
    ) -> dict[str, SignalSet]:  # fmt: skip
        """The signals of these services as formula inputs, per service: from the store's signal
        index (all, or those a window within `span` reads: `ServiceSignals.select`), or re-read
        from the stored batches (auditors' recomputation; those `reach` holds, when given:
        `stored_signals`). Read them, never change them.
        `repeat`: first-contact resolution's repeat window — the calls it reads (`select`'s
        `repeat`; of several services, chained over all of them: `_chained_sources`); with
        `whole_settled` (a window recorded with v1, whose digest covers every call passed), every call."""
        if from_store:
            return self.stored_signals(set(service_ids), reach=reach).sets
        ids = list(dict.fromkeys(service_ids))
        chained: int | None = None
        if repeat is not None:
            if whole_settled:
                all_calls = True
            else:
                chained = repeat // timedelta(microseconds=1)
        with self._lock:
            self._refresh_signals()
            if chained is not None and span is not None and len(ids) > 1:
                return self._chained_sources(ids, span, since, chained)
            return {sid: self._services[sid].select(span, all_calls, since, whole_settled, chained) for sid in ids}

    def _chained_sources(
        self, ids: list[str], span: Interval, since: datetime | None, repeat: int
    ) -> dict[str, SignalSet]:  # fmt: skip
        """First-contact resolution's calls of several services: one customer's contacts chain
        across them, so each service's selection reads the chains over all of them and holds the
        contacts kept that are its own (`ServiceSignals.select`'s `peers`). Each selection is
        brought up to date with its own service's changes; the groups whose chains those reached
        are read again in the others' too (a late call of one service can end or move the episode
        another's contact belongs to). The selections are kept together: when any is not (a round
        that used some of the services alone released it), all are made afresh."""
        peers = tuple(sorted(ids))
        entries = [self._services[sid] for sid in ids]
        if not all(e.keeps_chained(span, repeat, since, peers) for e in entries):
            for e in entries:
                e.release_chained(span, repeat, since, peers)
        out: dict[str, SignalSet] = {}
        own: dict[str, set[int]] = {}
        for sid, e in zip(ids, entries, strict=True):
            out[sid] = e.select(span, False, since, False, repeat, peers)
            own[sid] = e.regrouped
        reached = set().union(*own.values())
        for sid, e in zip(ids, entries, strict=True):
            if extra := reached - own[sid]:
                out[sid] = e.select(span, False, since, False, repeat, peers, frozenset(extra))
        return out

    def signals_held(self, service_ids: Iterable[str]) -> int:
        """How many signal ids of these services the index holds (its facts, no read)."""
        with self._lock:
            self._refresh_signals()
            return sum(e.count for sid in set(service_ids) if (e := self._services.get(sid)) is not None)

    def counted_by_time(self, service_ids: Iterable[str], step: timedelta) -> tuple[dict[int, int], int]:
        """The signals of these services the index holds, by step of time (µs since the epoch //
        the step's µs → signals) in the lists `reaching` holds by time (calls, outages, request
        counts: by their first instant), and how many the other lists hold. A plan of the passes
        over the store, not an answer: the index is the store's projection, read as it stands."""
        with self._lock:
            self._refresh_signals()
        return self._signal_store.counted_by_time(sorted(set(service_ids)), BY_TIME, step // timedelta(microseconds=1))

    def stored_signals(
        self, service_ids: set[str] | None = None, through: int | None = None, reach: Reach | None = None,
        going_on: Callable[[int], bool] | None = None, pages: ReadPages | None = None,
    ) -> StoredSignals:  # fmt: skip
        """Every stored signal batch (of these services) re-read from the store in one pass,
        independently of the signal index, as formula inputs per service; with `through`, only
        those stored at or before that log position (the signals as they stood then). With
        `reach` (`reaching`), only the signals it says a window may read are held as the pass
        reads them — the pass reads every batch all the same (but with `pages`, below), but holds
        the span's signals, not history's (`count` counts every signal read). `going_on`: asked
        before each page with the signals read so far (a long pass's progress); False stops the
        pass there, its answer then a part of the store's (a cancelled audit's, never to be judged
        from). `pages` (with
        `reach`, not `through`): a map of the log's pages (`ReadPages`) — made by this pass when
        empty (reading every batch of its services too, the rest of the pass as without it); once
        made, the pages it says cannot hold a signal `reach` holds are skipped unread, and what was
        stored after the pages mapped is read on."""
        if pages is not None and (reach is None or through is not None):
            raise ValueError("a map of the pages read serves a pass by time alone (reach, no through)")
        entries: dict[str, _Absorbed] = {}
        count = 0
        position = 0
        # The map this pass makes (an empty one given), and the pages of one made before.
        making = pages if pages is not None and not pages.complete and not len(pages) else None
        mapped = len(pages) if pages is not None and pages.complete else 0
        page = 0  # the next page of that map to look at
        page_end = 0  # the last note of the mapped page being read (read until it is reached)
        while True:
            if page < mapped and position >= page_end and pages is not None and reach is not None:
                while page < mapped and not pages.meets(page, reach):
                    page += 1
                # The page's notes, or (every page passed) what was stored after the last.
                if page < mapped:
                    position, page_end = max(position, pages.starts[page]), pages.lasts[page]
                else:
                    position = max(position, pages.lasts[mapped - 1])
                page += 1
            if going_on is not None and not going_on(count):
                break
            notes = self.recorder.select_notifications(
                start=position, limit=STORED_PAGE, topics=SIGNAL_TOPICS, inclusive_of_start=False
            )
            if through is not None:
                notes = [n for n in notes if n.id <= through]
            if not notes:
                if position < page_end or page < mapped:  # (a mapped page gone: none is, in an append-only log)
                    position = max(position, page_end)
                    continue
                if making is not None:
                    making.complete = True
                break
            for n in notes:
                batch: Any = self.mapper.to_domain_event(n)
                wanted = service_ids is None or batch.service_id in service_ids
                noted = making if making is not None and batch.service_id in making.services else None
                if not wanted and noted is None:
                    continue
                items = list(batch_message(batch.batch).signals)
                if noted is not None:
                    if n.topic == CORRECTION_TOPIC:
                        noted.corrected()
                    if not wanted:
                        noted.note(batch.service_id, items)
                        continue
                entry = entries.get(batch.service_id)
                if entry is None:
                    entry = entries[batch.service_id] = _Absorbed(reach=reach)
                entry.absorb(items, noted, batch.service_id)
                count += len(items)
            if making is not None:
                making.end_page(position, notes[-1].id)
            position = max(position, notes[-1].id)
        return StoredSignals({sid: e.done() for sid, e in entries.items()}, count)

    def chain_anchors(
        self, sets: dict[str, SignalSet], bottom: int, repeat: int, peers: Sequence[str],
        pages: ReadPages | None = None, going_on: Callable[[int], bool] | None = None,
    ) -> int:  # fmt: skip
        """The calls before `bottom` (µs) first-contact resolution with this repeat window (µs) over
        the services `peers` needs to tell the first contacts from `bottom` on, added to each one's
        calls in `sets` (which hold every call of theirs from `bottom` on, re-read from the store):
        per customer and reason, the first contact of the episode under way at `bottom` — as
        `ServiceSignals._chains` finds it in the index, here from the stored batches. Each chain of
        answered contacts (over every service of `peers`: one customer's contacts chain across them)
        whose earliest from `bottom` is within `repeat` of it is walked back, each contact within
        `repeat` of the next, to one with none within `repeat` before it; the batches are read a
        span of time at a time (`stored_signals` with `pages`), a step twice as long as the one
        before, holding only the answered calls of the chains still walked. Returns how many calls
        it added."""
        firsts: dict[tuple[str, str], int] = {}
        for service_id in peers:
            for c in sets[service_id].calls if service_id in sets else ():
                if c.answered_at is None:
                    continue
                t = _instant_us(c.entered_queue)
                key = (c.customer_id, c.reason)
                if t >= bottom and t < firsts.get(key, _NEVER_US):
                    firsts[key] = t
        pending = {k: t for k, t in firsts.items() if t - repeat < bottom}
        # Each chain's contacts walked, as (instant, id, service): the first contact of the episode
        # under way at `bottom` is within twice the repeat window before it (every contact after it
        # is within the window of it, the last one within the window of the first from `bottom`),
        # so only those contacts are held as inputs.
        read: dict[tuple[str, str], list[tuple[int, str, str]]] = defaultdict(list)
        near: dict[tuple[str, str], Any] = {}
        ceiling, reach = bottom, repeat
        while pending:
            floor = min(pending.values()) - reach
            step = Reach(floor, ceiling - 1, groups=frozenset(pending))
            got = self.stored_signals(set(peers), reach=step, going_on=going_on, pages=pages).sets
            found: dict[tuple[str, str], list[tuple[int, str, str, Any]]] = defaultdict(list)
            for service_id, held in got.items():
                for c in held.calls:
                    found[(c.customer_id, c.reason)].append((_instant_us(c.entered_queue), c.call_id, service_id, c))
            walked: dict[tuple[str, str], list[tuple[int, str, str, Any]]] = defaultdict(list)
            further = _walked_back(pending, found, repeat, floor, _CONTACT_AT, walked)
            for key, contacts in walked.items():
                read[key] += [(at, sid, service) for at, sid, service, _ in contacts]
                near.update(((service, sid), c) for at, sid, service, c in contacts if at >= bottom - 2 * repeat)
            pending, ceiling, reach = further, floor, reach * 2
        added = 0
        for chain in read.values():
            first: tuple[int, str, str] | None = None  # the first contact of the episode under way
            for contact in sorted(chain):  # as `contact.first_contacts` orders them: instant, then id
                if first is None or contact[0] - first[0] > repeat:
                    first = contact
            if first is not None:
                sets.setdefault(first[2], SignalSet()).calls.append(near[(first[2], first[1])])
                added += 1
        return added
