"""Agreement views: the agreements-stream consumer policy, agreement views, calendars and the terms in force."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, ProcessingEvent
from google.protobuf import json_format

from accord.agreements.v1 import events_pb2 as agreement_events
from accord.events.v1 import events_pb2
from accord_kit.agreement_terms import effective_terms, state_change_at
from accord_kit.application import topic_pages
from accord_kit.context import Principal
from accord_kit.envelope import unpack
from accord_kit.timeline import AlwaysOpen, BusinessCalendar, Calendar, Interval
from accord_kit.topics import event_topics
from accord_metrics.domain import (
    REJECTED,
    WITHDRAWN,
    AgreementView,
    CalendarView,
    KnownService,
    NotAPartyError,
    NotFoundError,
)
from accord_metrics.signal_index import FAR_FUTURE

if TYPE_CHECKING:
    from accord_kit.application import AccordApplication as _Host
else:
    _Host = object

VIEW_TOPIC = AgreementView.Seen.TOPIC
SERVICE_TOPIC = KnownService.Known.TOPIC
# Every event of an agreement view (its first, Seen, included): what says a view has changed.
VIEW_EVENT_TOPICS = sorted(event_topics(AgreementView))


class AgreementViews(_Host):
    """The agreements and calendars metrics learned from the agreements stream (a mixin of
    `Metrics`, whose constructor sets the state declared here)."""

    _lock: threading.RLock
    _views_position: int  # the latest agreement view event's log position (any process's)
    _views_read: int  # the log position view events were read up to (topic_pages)
    _views_judged_position: int  # view events up to here were judged (judging.JUDGED_VIEWS)
    _view_reach: dict[UUID, datetime]  # view → the earliest instant its events since then reach
    _view_changed: dict[UUID, int]  # view id → position of its latest event, in first-seen order
    _view_rank: dict[UUID, int]  # view id → its place in `_view_changed` (the order a round judges in)
    _views_touched: set[UUID]  # views read since the last round took them (judging.WatchIndex)
    _providers: dict[str, str]  # service id → its provider department
    _services_position: int  # the latest service (KnownService) event's log position (any process's)
    _services_read: int  # the log position service events were read up to (topic_pages)

    # -- upstream: the agreements stream ------------------------------------------------------------------
    def policy(self, source: str, envelope: events_pb2.EventEnvelope, processing: ProcessingEvent[Any]) -> None:
        t = envelope.type.rsplit(".", 1)[-1]
        ev = agreement_events
        if t == "ServiceRegistered":
            msg = unpack(envelope, ev.ServiceRegistered)
            if not self._exists(KnownService.create_id(msg.service_id)):
                processing.collect_events(KnownService(msg.service_id, msg.provider_department_id))
        elif t == "CalendarDefined":
            cal_msg = unpack(envelope, ev.CalendarDefined)
            cal = self._get_or(CalendarView.create_id(cal_msg.calendar_id), lambda: CalendarView(cal_msg.calendar_id))
            cal.define(cal_msg.version, json.loads(cal_msg.definition_json))
            processing.collect_events(cal)
        elif t in ("AgreementDrafted", "DraftRevised", "AmendmentProposed", "AgreementAccepted", "AmendmentAccepted",
                   "AmendmentRejected", "AmendmentWithdrawn", "AgreementTerminated", "AgreementExpired",
                   "AgreementRenewed", "AgreementSuspended", "AgreementResumed"):  # fmt: skip
            message = getattr(ev, t)()
            envelope.payload.Unpack(message)
            aid = message.agreement_id
            view = self._get_or(AgreementView.create_id(aid), lambda: AgreementView(aid))
            if t in ("AgreementDrafted", "DraftRevised"):
                view.note_draft(_terms(message.terms))
            elif t == "AmendmentProposed":
                view.note_amendment(message.amendment_id, _terms(message.terms))
            elif t == "AgreementAccepted":
                view.accept(message.version, _iso(message.effective_from))
            elif t == "AmendmentAccepted":
                view.accept(message.version, _iso(message.effective_from), message.amendment_id)
            elif t == "AmendmentRejected":
                view.conclude_amendment(message.amendment_id, REJECTED, message.reason)
            elif t == "AmendmentWithdrawn":
                view.conclude_amendment(message.amendment_id, WITHDRAWN, message.reason)
            elif t == "AgreementTerminated":
                view.end(_iso(message.effective_at))
            elif t == "AgreementExpired":
                view.end(_iso(message.at))
            elif t == "AgreementSuspended":
                view.suspend(state_change_at(envelope, message).isoformat())
            elif t == "AgreementResumed":
                view.resume(state_change_at(envelope, message).isoformat())
            else:
                view.renew(_iso(message.new_end))
            processing.collect_events(view)

    def _exists(self, aggregate_id: Any) -> bool:
        try:
            self.repository.get(aggregate_id)
        except AggregateNotFoundError:
            return False
        return True

    def _get_or(self, aggregate_id: Any, create: Any) -> Any:
        try:
            return self.repository.get(aggregate_id)
        except AggregateNotFoundError:
            return create()

    def _read(self, aggregate_id: Any) -> Any:
        """An aggregate to read and never to change (None when not stored): the cached one itself,
        not a deep copy of it — what a round reads of the agreement views and calendars, once
        an agreement a round and again for its windows (a copy of every version's terms each
        time was most of a round's cost with many agreements)."""
        try:
            return self.repository.get(aggregate_id, deepcopy_from_cache=False)
        except AggregateNotFoundError:
            return None

    # -- views and calendars --------------------------------------------------------------------------------
    def _refresh_views(self) -> int:
        """Index the agreement views' events stored since we last looked (by any process);
        returns the latest one's log position (what the rounds' watches compare)."""
        with self._lock:
            for notes, read_to in topic_pages(self.recorder, self._views_read, VIEW_EVENT_TOPICS):
                for n in notes:
                    uid = UUID(str(n.originator_id))
                    if uid not in self._view_changed:
                        self._view_rank[uid] = len(self._view_changed)
                    self._view_changed[uid] = n.id
                    self._views_touched.add(uid)
                    if n.id > self._views_judged_position:
                        reach = self._reach_of(n)
                        if reach is not None:
                            held = self._view_reach.get(uid)
                            self._view_reach[uid] = reach if held is None else min(held, reach)
                    self._views_position = n.id
                self._views_read = read_to
            return self._views_position

    def _reach_of(self, notification: Any) -> datetime | None:
        """The instant from which a view event can change how windows are judged: a version's
        effective start, a suspension's or resumption's instant, the end (None: an event that
        changes no window — a draft, a pending amendment, its conclusion, a renewal)."""
        event: Any = self.mapper.to_domain_event(notification)
        name = type(event).__name__
        if name == "VersionInForce":
            return _parse(event.effective_from)
        if name in ("Suspended", "Resumed", "Ended"):
            return _parse(event.at)
        return None

    def view_ids(self) -> list[UUID]:
        """The ids of every agreement view, in the order first stored."""
        with self._lock:
            self._refresh_views()
            return list(self._view_changed)

    def views(self) -> list[AgreementView]:
        return [self.repository.get(i) for i in self.view_ids()]

    def _depends_on(self, view: AgreementView) -> frozenset[UUID]:
        """The view and every view its versions' terms may inherit from, transitively: a
        superset of what `effective_terms` reads for it."""
        out = {UUID(str(view.id))}
        todo: list[Any] = [view]
        while todo:
            for version in todo.pop().versions:
                parent_id = version["terms"].get("parent_agreement_id") or ""
                uid = AgreementView.create_id(parent_id) if parent_id else None
                if uid is not None and uid not in out:
                    out.add(uid)
                    parent = self._read(uid)
                    if parent is not None:
                        todo.append(parent)
        return frozenset(out)

    def calendar(self, calendar_id: str, version: int = 0) -> Calendar:
        """A business calendar: its latest definition, or (version > 0) the one it had as that
        version — every version learned is kept, so a window is judged again by the calendar
        that judged it. LookupError when not known (that version not, or not yet)."""
        if not calendar_id or calendar_id == "24x7":
            return AlwaysOpen()
        view: Any = self._read(CalendarView.create_id(calendar_id))
        if view is None or not view.definitions:
            raise LookupError(f"calendar {calendar_id!r} is not known to metrics yet")
        if not version:
            version, definition = view.latest
        elif (definition := view.definition(version)) is None:
            raise LookupError(f"calendar {calendar_id!r} version {version} is not known to metrics")
        return BusinessCalendar.from_definition(definition, calendar_id, version)

    def calendar_held(self, calendar_id: str, version: int) -> bool:
        """Whether metrics holds this version of this calendar (the built-in 24x7 has one, 1)."""
        if not calendar_id or calendar_id == "24x7":
            return version == AlwaysOpen.version
        view: Any = self._read(CalendarView.create_id(calendar_id))
        return version > 0 and view is not None and view.definition(version) is not None

    def _calendar_for(self, objective: dict[str, Any], pinned: tuple[str, int] | None) -> Calendar:
        """The objective's calendar: the `pinned` (id, version) — the one a recorded evaluation
        was judged with — when it is the objective's calendar and that version is held;
        otherwise its latest definition."""
        calendar_id = objective.get("calendar_id") or "24x7"
        if pinned is not None and pinned[0] == calendar_id and self.calendar_held(*pinned):
            return self.calendar(calendar_id, pinned[1])
        return self.calendar(calendar_id)

    def agreement_view(self, caller: Principal | None, agreement_id: str) -> Any:
        """Metrics' view of an agreement, if the caller may read it (parties, auditors, admins, services)."""
        try:
            uid = AgreementView.create_id(agreement_id)
            view: Any = self.repository.get(uid)
        except AggregateNotFoundError:
            raise NotFoundError(f"agreement {agreement_id!r} is not known to metrics (not accepted yet?)") from None
        if not view.versions:
            raise NotFoundError(f"agreement {agreement_id} has no accepted version yet")
        parties = view.versions[-1]["terms"].get("parties") or {}
        if caller is not None and caller.role == "department" and caller.department not in parties.values():
            raise NotAPartyError(f"department {caller.department} is not a party to agreement {agreement_id}")
        return view

    # -- the services an agreement is measured on ---------------------------------------------------------
    def _refresh_services(self) -> int:
        """Index the services registered since we last looked (by any process) with their
        provider; returns the latest one's log position."""
        with self._lock:
            for notes, read_to in topic_pages(self.recorder, self._services_read, [SERVICE_TOPIC]):
                for n in notes:
                    known: Any = self.mapper.to_domain_event(n)
                    self._providers[str(known.service_id)] = str(known.provider_department_id)
                    self._services_position = n.id
                self._services_read = read_to
            return self._services_position

    def services_covered(self, effective: dict[str, Any]) -> tuple[set[str], str]:
        """The services effective terms measure (docs/domain.md §1): those they name; naming
        none (a customer- or corporate-level agreement), every service their provider
        department provides — registered now, so also those registered after the agreement
        was accepted. Returns the services and that provider ("" when they name services)."""
        named = named_services(effective)
        if named:
            return named, ""
        provider = str((effective.get("parties") or {}).get("provider_department_id") or "")
        if not provider:
            return set(), ""
        with self._lock:
            self._refresh_services()
            return {sid for sid, p in self._providers.items() if p == provider}, provider

    def version_services(self, terms: dict[str, Any], when: datetime) -> tuple[set[str], str]:
        """The services one version's `terms` measure, its parent chain as in force at `when`
        (docs/domain.md §1 "Services measured"): those it names (its parent's list does not
        matter then), else those of its effective terms by `services_covered`. Returns them and
        the provider whose every service they are ("" when services are named)."""
        own = named_services(terms)
        return (own, "") if own else self.services_covered(self.effective_terms(terms, when))

    def _judging_version(self, view: AgreementView, when: datetime) -> tuple[dict[str, Any], list[str]]:
        """The version in force at `when` with its effective terms (`_effective_version`) and
        the services it measures (`window_services`), its parents merged once for both."""
        version = self._effective_version(view, when)
        own = named_services(_version_at(view, when)["terms"])
        return version, sorted(own or self.services_covered(version["terms"])[0])

    def window_services(self, view: AgreementView, window_start: datetime) -> list[str]:
        """The services whose signals a window starting at `window_start` is judged on: those
        of the version in force at its measured start (docs/domain.md §2 "Effective dating"),
        sorted (the order evaluation, recomputation and what-if combine them in)."""
        start = max(window_start, _parse(view.versions[0]["effective_from"]))
        return sorted(self.version_services(_version_at(view, start)["terms"], start)[0])

    def measured_services(self, view: AgreementView, now: datetime) -> tuple[list[str], frozenset[str]]:
        """Every service whose signals some window of an agreement may be judged on — the union
        of `window_services` over its life (a version yet to take effect included): each window reads only its
        own version's — and the providers whose every service is among them (a service such a
        provider registers later joins them). What says which signals concern it (a round's
        changes, corrections, an auditor's re-read), never what a window measures."""
        start = _parse(view.versions[0]["effective_from"])
        end = max(start, min(end_of(view) or FAR_FUTURE, now))
        # The services judging a window change only when a version of the agreement or of a view
        # its terms inherit from takes effect: one look at each such instant covers every window
        # (a version yet to take effect included: its windows will read them).
        instants = {start, end}
        for uid in self._depends_on(view):
            other: Any = view if uid == UUID(str(view.id)) else self._read(uid)
            for v in getattr(other, "versions", []):
                instants.add(max(_parse(v["effective_from"]), start))
        services: set[str] = set()
        providers: set[str] = set()
        for when in sorted(instants):
            covered, provider = self.version_services(_version_at(view, when)["terms"], when)
            services |= covered
            if provider:
                providers.add(provider)
        return sorted(services), frozenset(providers)

    def effective_terms(self, terms: dict[str, Any], when: datetime, depth: int = 0) -> dict[str, Any]:
        """The terms merged with their parent chain as in force at `when` (docs/domain.md §1)."""
        parent_id = terms.get("parent_agreement_id") or ""
        if not parent_id or depth > 8:
            return terms
        parent: Any = self._read(AgreementView.create_id(parent_id))
        if parent is None or not parent.versions:
            return terms
        parent_terms = self.effective_terms(_version_at(parent, when)["terms"], when, depth + 1)
        return effective_terms(parent_terms, terms)

    def _effective_version(self, view: AgreementView, when: datetime) -> dict[str, Any]:
        """The version in force at `when` with its effective terms (parents as in force then)."""
        version = _version_at(view, when)
        return {**version, "terms": self.effective_terms(version["terms"], when)}


def named_services(terms: dict[str, Any]) -> set[str]:
    """The services terms name themselves (their service description's), not their parent's."""
    service = terms.get("service") or {}
    return set(service.get("service_ids") or []) if isinstance(service, dict) else set()


def _terms(msg: Any) -> dict[str, Any]:
    return json_format.MessageToDict(msg, preserving_proto_field_name=True)


def _iso(ts: Any) -> str:
    return str(ts.ToDatetime(tzinfo=UTC).isoformat())


# A pure function of the text, asked for the same few instants (versions' effective dates,
# suspensions, ends) for every agreement judged, each round: parsed once each.
@lru_cache(maxsize=4096)
def _parse(raw: str) -> datetime:
    return datetime.fromisoformat(raw.replace("Z", "+00:00")).astimezone(UTC)


def end_of(view: Any) -> datetime | None:
    """When an agreement ends, for measurement: when it was terminated or expired, else the
    end of its term unless it renews itself (then its expiry or renewal will say); None while
    open-ended. No window opens at or after it; a window across it is measured up to it."""
    if view.ended_at:
        return _parse(view.ended_at)
    if not view.versions or not getattr(view, "end_of_term", ""):
        return None
    term = view.versions[-1]["terms"].get("term") or {}
    return None if term.get("auto_renew") else _parse(view.end_of_term)


def suspensions(view: Any) -> list[Interval]:
    """The intervals the agreement was suspended (one still suspended: until far in the future)."""
    return [Interval(_parse(s), _parse(e) if e else FAR_FUTURE) for s, e in getattr(view, "suspended", [])]


def _version_at(view: AgreementView, when: datetime) -> dict[str, Any]:
    """The version in force at `when` (the window's start): history is never re-judged."""
    found = view.versions[0]
    for v in view.versions:
        if _parse(v["effective_from"]) <= when:
            found = v
    return found
