"""Signals in, on both stores: validation naming the signal and field, who may record a
service's signals, one event per batch and service, duplicates stored once (also across
restarts and batches), and arrival order not mattering."""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import example, given
from hypothesis import strategies as st

from accord.agreements.v1 import events_pb2 as agreement_events
from accord.events.v1 import events_pb2
from accord.metrics.v1 import signals_pb2 as pb
from accord_kit.context import Principal
from accord_kit.inputs import InputError, check_message
from accord_metrics.application import Metrics, content_digest
from accord_metrics.domain import NotTheProviderError, UnknownServiceError
from accord_metrics.signals import (
    InvalidSignalError,
    _at,
    call,
    calls,
    instant,
    outage_interval,
    outage_intervals,
    ticket,
    validate,
)

PROVIDER = Principal("ops", "department", "it-operations")
CUSTOMER = Principal("fin", "department", "finance")
SERVICE = Principal("collector", "service")
T0 = datetime(2026, 3, 1, tzinfo=UTC)


def ts(dt: datetime) -> Timestamp:
    t = Timestamp()
    t.FromDatetime(dt)
    return t


def outage(sid: str, start_min: int, minutes: int, service: str = "email") -> pb.Signal:
    return pb.Signal(
        signal_id=sid,
        service_id=service,
        outage=pb.Outage(
            start=ts(T0 + timedelta(minutes=start_min)), end=ts(T0 + timedelta(minutes=start_min + minutes))
        ),
    )


def a_call(sid: str, wait_s: int) -> pb.Signal:
    return pb.Signal(
        signal_id=sid,
        service_id="email",
        call=pb.Call(
            entered_queue=ts(T0), answered_at=ts(T0 + timedelta(seconds=wait_s)), talk_seconds="120.5", customer_id="c1"
        ),
    )


def known(app: Metrics, service_id: str, provider: str, position: int) -> None:
    msg = agreement_events.ServiceRegistered(service_id=service_id, name=service_id, provider_department_id=provider)
    env = events_pb2.EventEnvelope(
        event_id=f"agreements:x:{position}",
        position=position,
        previous_position=position - 1,
        type=msg.DESCRIPTOR.full_name,
    )
    env.payload.Pack(msg)
    app.apply_upstream("agreements", env)


@pytest.fixture
def make_app(make_store_env: Callable[[str], dict[str, str]]) -> Iterator[Callable[[], Metrics]]:
    env = make_store_env("metrics")
    apps: list[Metrics] = []

    def make() -> Metrics:
        a = Metrics(env)
        apps.append(a)
        return a

    yield make
    for a in apps:
        a.close()


@pytest.fixture
def app(make_app: Callable[[], Metrics]) -> Metrics:
    a = make_app()
    known(a, "email", "it-operations", 1)
    return a


def test_a_batch_is_stored_as_one_event_per_service(app: Metrics) -> None:
    known(app, "vpn", "it-operations", 2)
    head = app.head_position()
    outcome = app.record(PROVIDER, [outage("o1", 0, 5), outage("o2", 10, 5), outage("v1", 0, 1, service="vpn")])
    assert (outcome.accepted, outcome.duplicates) == (3, 0)
    assert app.head_position() - head == 2
    assert [s.signal_id for s in app.signals("email")] == ["o1", "o2"]
    assert [s.signal_id for s in app.signals("vpn")] == ["v1"]


def test_a_resent_signal_is_stored_once_also_after_a_restart(app: Metrics, make_app: Callable[[], Metrics]) -> None:
    app.record(PROVIDER, [outage("o1", 0, 5), outage("o1", 0, 5)])
    again = app.record(PROVIDER, [outage("o1", 0, 5), outage("o2", 10, 5)])
    assert (again.accepted, again.duplicates) == (1, 1)
    restarted = make_app()
    head = restarted.head_position()
    third = restarted.record(SERVICE, [outage("o1", 0, 5), outage("o2", 10, 5)])
    assert (third.accepted, third.duplicates) == (0, 2)
    assert restarted.head_position() == head
    assert sorted(s.signal_id for s in restarted.signals()) == ["o1", "o2"]


@pytest.mark.parametrize(
    ("signal", "expected"),
    [
        (pb.Signal(service_id="email", outage=pb.Outage(start=ts(T0))), "signals[0].signal_id"),
        (pb.Signal(signal_id="x", outage=pb.Outage(start=ts(T0))), "signals[0].service_id: is required"),
        (pb.Signal(signal_id="x", service_id="email"), "signals[0]: says nothing"),
        (outage("x", 10, -5), "signals[0].outage.end: must be after start"),
        (pb.Signal(signal_id="x", service_id="email", outage=pb.Outage()), "signals[0].outage.start: is required"),
        (
            pb.Signal(signal_id="x", service_id="email", maintenance=pb.Maintenance(start=ts(T0))),
            "signals[0].maintenance.end: is required",
        ),
        (pb.Signal(signal_id="x", service_id="email", call=pb.Call()), "signals[0].call.entered_queue: is required"),
        (
            pb.Signal(
                signal_id="x",
                service_id="email",
                call=pb.Call(entered_queue=ts(T0), answered_at=ts(T0), abandoned_at=ts(T0)),
            ),
            "signals[0].call: a call is answered or abandoned, not both",
        ),
        (
            pb.Signal(
                signal_id="x",
                service_id="email",
                call=pb.Call(entered_queue=ts(T0), answered_at=ts(T0 - timedelta(seconds=1))),
            ),
            "signals[0].call: answered_at is before entered_queue",
        ),
        (
            pb.Signal(
                signal_id="x",
                service_id="email",
                call=pb.Call(entered_queue=ts(T0), abandoned_at=ts(T0 - timedelta(seconds=1))),
            ),
            "signals[0].call: abandoned_at is before entered_queue",
        ),
        (
            pb.Signal(
                signal_id="x",
                service_id="email",
                requests=pb.RequestCount(start=ts(T0), end=ts(T0 + timedelta(minutes=1)), good=5, total=4),
            ),
            "good (5) exceeds total (4)",
        ),
        (
            pb.Signal(signal_id="x", service_id="email", call=pb.Call(entered_queue=ts(T0), talk_seconds="abc")),
            "signals[0].call.talk_seconds: must be a decimal number",
        ),
        (  # whole seconds are accepted without parsing them; anything else is parsed
            pb.Signal(signal_id="x", service_id="email", call=pb.Call(entered_queue=ts(T0), after_call_seconds="-3")),
            "signals[0].call.after_call_seconds: must be a non-negative number",
        ),
        (
            pb.Signal(signal_id="x", service_id="email", ticket=pb.Ticket(priority="P9", opened=ts(T0))),
            "signals[0].ticket.priority: must be one of P1, P2, P3, P4",
        ),
        (
            pb.Signal(
                signal_id="x",
                service_id="email",
                ticket=pb.Ticket(priority="P1", opened=ts(T0), resolved=ts(T0 - timedelta(hours=1))),
            ),
            "resolved is before opened",
        ),
        (
            pb.Signal(signal_id="x", service_id="email", lead=pb.Lead(created=ts(T0), revenue="100")),
            "only a converted lead brings revenue",
        ),
        (
            pb.Signal(
                signal_id="x",
                service_id="email",
                provenance=pb.Provenance(source="s" * 65),
                outage=pb.Outage(start=ts(T0)),
            ),
            "signals[0].provenance.source: 1–64 printable characters",
        ),
        (
            pb.Signal(
                signal_id="x",
                service_id="email",
                provenance=pb.Provenance(source="line\nbreak"),
                outage=pb.Outage(start=ts(T0)),
            ),
            "signals[0].provenance.source: 1–64 printable characters",
        ),
        (
            pb.Signal(
                signal_id="x",
                service_id="email",
                provenance=pb.Provenance(source="alertmanager", reference="r" * 257),
                outage=pb.Outage(start=ts(T0)),
            ),
            "signals[0].provenance.reference: at most 256 characters, not 257",
        ),
    ],
)
def test_an_invalid_signal_rejects_its_batch_naming_the_field(app: Metrics, signal: pb.Signal, expected: str) -> None:
    head = app.head_position()
    with pytest.raises(
        InvalidSignalError,
        match=expected.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(").replace(")", r"\)"),
    ):
        app.record(PROVIDER, [signal, outage("fine", 0, 1)])
    assert app.head_position() == head


def test_a_signal_is_stored_with_its_provenance_and_the_way_it_came_when_it_names_none(app: Metrics) -> None:
    tagged = outage("o1", 0, 5)
    tagged.provenance.CopyFrom(pb.Provenance(source="alertmanager", manual=False, reference="fp:1a2b"))
    app.record(PROVIDER, [tagged, outage("o2", 10, 5)], via="nats")
    app.record(PROVIDER, [outage("o3", 20, 5)])  # called in-process, no way named: stored as sent
    stored = {s.signal_id: s.provenance for s in app.signals("email")}
    assert stored["o1"] == pb.Provenance(source="alertmanager", reference="fp:1a2b")
    assert stored["o2"] == pb.Provenance(source="nats")
    assert not stored["o3"].source


def test_provenance_is_not_content_another_way_is_a_duplicate_a_correction_carries_its_own(app: Metrics) -> None:
    first = outage("o1", 0, 5)
    assert app.record(PROVIDER, [first], via="grpc").accepted == 1
    # The same signal re-sent by another way (or from another tool) is a retry, not a correction.
    by_cli = outage("o1", 0, 5)
    by_cli.provenance.CopyFrom(pb.Provenance(source="cli", manual=True))
    again = app.record(PROVIDER, [by_cli], via="nats")
    assert (again.accepted, again.duplicates, again.corrections) == (0, 1, 0)
    # A correction is stored with the provenance of the content it brings.
    fixed = outage("o1", 0, 7)
    fixed.provenance.CopyFrom(pb.Provenance(source="cli", manual=True, reference="ticket INC-7"))
    assert app.record(PROVIDER, [fixed], via="grpc").corrections == 1
    contents = [s.provenance for s in app.signals("email")]
    assert contents == [
        pb.Provenance(source="grpc"),
        pb.Provenance(source="cli", manual=True, reference="ticket INC-7"),
    ]


def test_a_signal_recorded_once_keeps_no_digest_and_a_retry_of_an_old_content_stays_a_duplicate(
    app: Metrics,
) -> None:
    """The store's signal index keeps the digests of a signal's earlier contents only: one
    recorded once is its latest content (its digest is computed when a signal with its id
    arrives). Dedupe is the same: a retry of any content recorded before is a duplicate."""
    app.record(PROVIDER, [outage("o1", 0, 5), outage("o2", 10, 5)])
    rows = app._signal_store.lookup("email", ["o1", "o2"])
    assert [rows[i].earlier for i in ("o1", "o2")] == [b"", b""]
    assert app.record(PROVIDER, [outage("o1", 0, 5)]).duplicates == 1
    assert app.record(PROVIDER, [outage("o1", 0, 7)]).corrections == 1
    rows = app._signal_store.lookup("email", ["o1", "o2"])
    assert rows["o1"].earlier_digests() == [content_digest(outage("o1", 0, 5))] and rows["o2"].earlier == b""
    again = app.record(PROVIDER, [outage("o1", 0, 5), outage("o2", 10, 5)])  # old contents: never a step back
    assert (again.accepted, again.duplicates, again.corrections) == (0, 2, 0)


def test_instants_are_compared_as_their_datetimes_and_one_out_of_range_is_refused_as_before(app: Metrics) -> None:
    """Validation compares instants as µs (not datetimes) and keeps their order exactly: two
    instants within one µs are the same instant (a datetime drops the nanoseconds below it), and
    a Timestamp out of range raises what reading it as a datetime raises."""
    start = ts(T0)
    within = Timestamp(seconds=start.seconds, nanos=999)  # 999 ns later: the same µs
    with pytest.raises(InvalidSignalError, match=r"signals\[0\]\.outage\.end: must be after start"):
        app.record(PROVIDER, [pb.Signal(signal_id="o", service_id="email", outage=pb.Outage(start=start, end=within))])
    later = Timestamp(seconds=start.seconds, nanos=1_000)  # 1 µs later
    assert app.record(
        PROVIDER, [pb.Signal(signal_id="o", service_id="email", outage=pb.Outage(start=start, end=later))]
    )
    # A first response 999 ns before the opening is not before it (the same µs); 1 µs before is.
    opened = Timestamp(seconds=start.seconds, nanos=1_999)
    same = pb.Ticket(priority="P1", opened=opened, first_response=Timestamp(seconds=start.seconds, nanos=1_000))
    assert app.record(PROVIDER, [pb.Signal(signal_id="t", service_id="email", ticket=same)]).accepted == 1
    before = pb.Ticket(priority="P1", opened=opened, first_response=Timestamp(seconds=start.seconds, nanos=999))
    with pytest.raises(InvalidSignalError, match=r"signals\[0\]\.ticket: first_response is before opened"):
        app.record(PROVIDER, [pb.Signal(signal_id="t2", service_id="email", ticket=before)])
    too_late = Timestamp(seconds=253_402_300_800)
    with pytest.raises(
        InvalidSignalError, match=r"signals\[0\]\.outage\.end: seconds 253402300800 is outside the years"
    ):
        app.record(
            PROVIDER, [pb.Signal(signal_id="o2", service_id="email", outage=pb.Outage(start=start, end=too_late))]
        )


def test_the_way_a_signal_came_is_filled_in_on_copies_unless_the_caller_gives_its_messages_away(app: Metrics) -> None:
    mine = [outage("o1", 0, 5)]
    app.record(PROVIDER, mine, via="grpc")
    assert not mine[0].HasField("provenance")  # the caller's message is left as it was
    given = [outage("o2", 10, 5), outage("o3", 20, 5)]
    given[1].provenance.source = "cli"
    app.record(PROVIDER, given, via="grpc", owned=True)  # a request the caller parsed: filled in on it
    assert [s.provenance.source for s in given] == ["grpc", "cli"]
    stored = {s.signal_id: s.provenance.source for s in app.signals("email")}
    assert stored == {"o1": "grpc", "o2": "grpc", "o3": "cli"}


def test_a_batch_is_stored_as_the_wire_format_of_its_signals_serialised_one_by_one() -> None:
    """The stored batch is built from the signals serialised once each (their index rows'
    contents): exactly the bytes of a `SignalBatch` of them, whatever their size (a length of
    one, two or three varint bytes)."""
    from accord_metrics.signal_index import _encode, _encode_serialised

    big = pb.Signal(signal_id="l", service_id="email", lead=pb.Lead(created=ts(T0), follow_ups=[ts(T0)] * 3_000))
    mid = pb.Signal(signal_id="l2", service_id="email", lead=pb.Lead(created=ts(T0), follow_ups=[ts(T0)] * 20))
    tagged = outage("o9", 0, 5)
    tagged.provenance.CopyFrom(pb.Provenance(source="alertmanager", manual=True, reference="r" * 200))
    items = [outage("o1", 0, 5), a_call("c1", 30), mid, big, tagged, pb.Signal(signal_id="d", service_id="email")]
    sizes = [len(s.SerializeToString()) for s in items]
    assert min(sizes) < 0x80 and any(0x80 <= n < 0x4000 for n in sizes) and max(sizes) >= 0x4000
    assert _encode_serialised([s.SerializeToString() for s in items]) == _encode(items)
    assert _encode_serialised([]) == _encode([])


def test_the_public_event_of_a_batch_is_its_stored_bytes() -> None:
    from accord.metrics.v1 import events_pb2 as metric_events
    from accord_metrics.codec import _signals_recorded, batch_message
    from accord_metrics.domain import SignalBatch
    from accord_metrics.signal_index import _encode

    for items in ([outage("o1", 0, 5), a_call("c1", 30)], []):
        event = SignalBatch(service_id="email", batch=_encode(items), count=len(items)).collect_events()[0]
        made = _signals_recorded(event)
        expected = metric_events.SignalsRecorded(service_id="email", batch=batch_message(event.batch))
        assert made == expected and made.HasField("batch")
        assert made.SerializeToString(deterministic=True) == expected.SerializeToString(deterministic=True)


def test_the_public_event_s_bytes_are_made_without_parsing_the_batch_as_serialising_it_makes_them(
    app: Metrics,
) -> None:
    """The relay and ReadEvents carry a stored batch's bytes as the event's `batch` field, not
    parsed and written again: byte for byte what the message serialises to — a batch of signals
    of every size of length (one, two, three varint bytes), an empty batch, a service id long
    enough for a two-byte length and none — and the envelope's payload is what `Pack` of the
    message makes."""
    from accord.metrics.v1 import events_pb2 as metric_events
    from accord_kit.envelope import to_envelope
    from accord_metrics.codec import _signals_recorded, _signals_recorded_bytes
    from accord_metrics.domain import SignalBatch
    from accord_metrics.signal_index import _encode

    big = pb.Signal(signal_id="l", service_id="email", lead=pb.Lead(created=ts(T0), follow_ups=[ts(T0)] * 3_000))
    mid = pb.Signal(signal_id="l2", service_id="email", lead=pb.Lead(created=ts(T0), follow_ups=[ts(T0)] * 20))
    batches = [[outage("o1", 0, 5), a_call("c1", 30), mid, big], [], [a_call("c2", 3)]]
    for service_id in ("email", "s" * 200, ""):
        for items in batches:
            event = SignalBatch(service_id=service_id, batch=_encode(items), count=len(items)).collect_events()[0]
            message = _signals_recorded(event)
            assert _signals_recorded_bytes(event) == message.SerializeToString()
            assert metric_events.SignalsRecorded.FromString(_signals_recorded_bytes(event)) == message
    # Through the envelope as the relay makes it, from what the store holds.
    app.record(SERVICE, [outage("o1", 0, 5), a_call("c1", 30), big])
    stored = [n for n in app.select_notifications(0, 100) if n.topic.endswith("SignalBatch.Recorded")]
    assert stored
    envelope, subject = to_envelope(app.service, stored[-1], 0, app.accord_mapper, app.codec)
    event = app.accord_mapper.to_domain_event(stored[-1])
    packed = envelope.__class__()
    packed.payload.Pack(_signals_recorded(event))
    assert envelope.payload == packed.payload and subject == "accord.metrics.v1.SignalsRecorded"
    assert metric_events.SignalsRecorded.FromString(envelope.payload.value).batch.signals[2] == big


def test_only_the_services_provider_or_a_service_identity_may_record(app: Metrics) -> None:
    head = app.head_position()
    with pytest.raises(NotTheProviderError, match="only the provider of service 'email' \\(it-operations\\)"):
        app.record(CUSTOMER, [outage("o1", 0, 5)])
    with pytest.raises(NotTheProviderError, match="role auditor may not"):
        app.record(Principal("a", "auditor"), [outage("o1", 0, 5)])
    with pytest.raises(UnknownServiceError, match="service 'payroll' is not registered"):
        app.record(SERVICE, [outage("p1", 0, 5, service="payroll")])
    assert app.head_position() == head
    assert app.record(SERVICE, [outage("o1", 0, 5)]).accepted == 1


def test_arrival_order_does_not_change_what_is_stored(make_store_env: Callable[[str], dict[str, str]]) -> None:
    signals = [outage(f"o{i}", i * 7, 3) for i in range(40)] + [a_call(f"c{i}", i) for i in range(40)]
    stored = []
    for seed in (1, 2):
        app = Metrics(make_store_env(f"metrics-{seed}"))
        known(app, "email", "it-operations", 1)
        rng = random.Random(seed)
        shuffled = signals[:] + signals[:10]  # with re-sent ones
        rng.shuffle(shuffled)
        for i in range(0, len(shuffled), 13):
            app.record(PROVIDER, shuffled[i : i + 13])
        stored.append(sorted(s.SerializeToString(deterministic=True) for s in app.signals()))
        app.close()
    assert len(stored[0]) == 80
    assert stored[0] == stored[1]


def test_signals_convert_to_the_formulas_inputs() -> None:
    o = outage_interval(outage("o", 0, 5), until=T0 + timedelta(days=1))
    assert o.duration == timedelta(minutes=5)
    ongoing = pb.Signal(signal_id="o", service_id="email", outage=pb.Outage(start=ts(T0)))
    assert outage_interval(ongoing, until=T0 + timedelta(hours=2)).duration == timedelta(hours=2)
    c = call(a_call("c1", 30))
    assert c.answered_at == T0 + timedelta(seconds=30) and str(c.talk_seconds) == "120.5"
    t = ticket(
        pb.Signal(
            signal_id="t1",
            service_id="email",
            ticket=pb.Ticket(
                priority="P2", opened=ts(T0), paused=[pb.Pause(start=ts(T0), end=ts(T0 + timedelta(hours=1)))]
            ),
        )
    )
    assert t.priority == "P2" and t.paused[0].duration == timedelta(hours=1)


@given(
    st.integers(-62_135_596_900, 253_402_300_900),
    st.integers(-5, 1_000_000_005),
)
@example(-1, 999_999_999)  # before the epoch: µs toward zero, as protobuf rounds them
@example(253_402_300_799, 999_999_999)  # the last valid instant
@example(253_402_300_800, 0)  # out of range
def test_an_instant_read_without_protobufs_conversion_is_the_same_datetime(seconds: int, nanos: int) -> None:
    """The formula inputs read each instant as protobuf's `ToDatetime` computes it (`_at`): the
    same datetime, in the same UTC; one out of range raises the same error."""
    t = Timestamp(seconds=seconds, nanos=nanos)
    try:
        expected = instant(t)
    except ValueError as e:
        with pytest.raises(ValueError, match=re.escape(str(e))):
            _at(t)
        return
    got = _at(t)
    assert got == expected and got.tzinfo is expected.tzinfo is UTC and got.isoformat() == expected.isoformat()


def test_a_call_converted_holds_no_dict_and_shares_its_whole_seconds_and_customer() -> None:
    """A call's formula input is a slotted object (no dict: the open month of a contact centre
    holds millions), its whole seconds are Decimals shared between calls, its customer id and
    reason strings shared too — and its values are those read through protobuf's conversion."""

    def one(i: int) -> pb.Signal:
        body = pb.Call(
            entered_queue=Timestamp(seconds=ts(T0).seconds + i, nanos=1_999),
            answered_at=ts(T0 + timedelta(minutes=i)),
            talk_seconds="120",
            after_call_seconds="7.5",
            customer_id="cust1",
            reason="billing",
            first_contact=pb.FIRST_CONTACT_RESOLUTION_NOT_RESOLVED,
        )
        return pb.Signal(signal_id=f"c{i}", service_id="email", call=body)

    signals = [one(1), one(2)]
    a, b = (call(s) for s in signals)
    assert not hasattr(a, "__dict__")
    assert a.talk_seconds is b.talk_seconds and a.hold_seconds is b.hold_seconds
    assert a.customer_id is b.customer_id and a.reason is b.reason
    c = signals[0].call
    assert (a.entered_queue, a.answered_at, a.abandoned_at) == (
        c.entered_queue.ToDatetime(tzinfo=UTC),
        c.answered_at.ToDatetime(tzinfo=UTC),
        None,
    )
    assert (a.talk_seconds, a.hold_seconds, a.after_call_seconds) == (Decimal(120), Decimal(0), Decimal("7.5"))
    assert (a.customer_id, a.reason, a.resolved_first_contact) == ("cust1", "billing", False)


_SECONDS = st.integers(-62_135_596_800, 253_402_300_799)
_NANOS = st.integers(0, 999_999_999)
_RAW_SECONDS = st.sampled_from(["", "0", "7", "120", "007", "7.5", "1E+2", "0.000001"])


@given(
    st.lists(
        st.tuples(
            _SECONDS, _NANOS, st.one_of(st.none(), st.tuples(_SECONDS, _NANOS)), st.booleans(),
            _RAW_SECONDS, _RAW_SECONDS, _RAW_SECONDS, st.text(max_size=4), st.integers(0, 2),
        ),
        max_size=8,
    )
)  # fmt: skip
def test_calls_converted_in_bulk_are_those_converted_one_by_one(
    rows: list[tuple[int, int, tuple[int, int] | None, bool, str, str, str, str, int]],
) -> None:
    """A window's calls converted in one loop (`calls`) are, field for field, those `call`
    converts one by one — or fail as it fails (an answer before the call entered the queue)."""
    signals = []
    for n, (sec, ns, end, answered, talk, hold, after, customer, flag) in enumerate(rows):
        body = pb.Call(
            entered_queue=Timestamp(seconds=sec, nanos=ns), talk_seconds=talk, hold_seconds=hold,
            after_call_seconds=after, customer_id=customer, reason=customer[::-1], first_contact=flag,  # type: ignore[arg-type]
        )  # fmt: skip
        if end is not None:
            (body.answered_at if answered else body.abandoned_at).CopyFrom(Timestamp(seconds=end[0], nanos=end[1]))
        signals.append(pb.Signal(signal_id=f"c{n}", service_id="email", call=body))
    try:
        one_by_one = [call(s) for s in signals]
    except ValueError as e:
        with pytest.raises(ValueError, match=re.escape(str(e))):
            calls(signals)
        return
    assert [repr(c) for c in calls(signals)] == [repr(c) for c in one_by_one]
    # Given the ids as its selection holds them, each call holds that very string (not a copy).
    ids = [s.signal_id for s in signals]
    assert all(c.call_id is i for c, i in zip(calls(signals, ids), ids, strict=True))


def test_a_call_both_answered_and_abandoned_fails_converted_in_bulk_as_one_by_one() -> None:
    """Never recorded (validation refuses it), yet a call read back answered and abandoned fails
    converted in one loop as `Call` fails it one by one: the same error, the same words."""
    body = pb.Call(entered_queue=ts(T0), answered_at=ts(T0 + timedelta(seconds=5)))
    body.abandoned_at.CopyFrom(ts(T0 + timedelta(seconds=9)))
    both = pb.Signal(signal_id="c1", service_id="email", call=body)
    with pytest.raises(ValueError, match="call c1: answered and abandoned") as one:
        call(both)
    with pytest.raises(ValueError, match=re.escape(str(one.value))):
        calls([both])


@given(
    st.lists(st.tuples(_SECONDS, _NANOS, st.one_of(st.none(), st.tuples(_SECONDS, _NANOS))), max_size=8),
    st.sampled_from([UTC, ZoneInfo("Europe/Amsterdam")]),
)
@example([(1_772_323_200, 0, None)], UTC)  # under way, until its very start
@example([(1_772_323_200, 0, None)], ZoneInfo("Europe/Amsterdam"))  # … written in another zone
def test_outages_converted_in_bulk_are_those_converted_one_by_one(
    rows: list[tuple[int, int, tuple[int, int] | None]], zone: ZoneInfo
) -> None:
    """A window's outages converted in one loop (`outage_intervals`) are those `outage_interval`
    converts one by one: the same instants, in the same time zone (one under way ends at `until`,
    an end before its start is its start)."""
    until = datetime(2026, 3, 1, tzinfo=UTC).astimezone(zone)
    signals = []
    for n, (sec, ns, end) in enumerate(rows):
        body = pb.Outage(start=Timestamp(seconds=sec, nanos=ns))
        if end is not None:
            body.end.CopyFrom(Timestamp(seconds=end[0], nanos=end[1]))
        signals.append(pb.Signal(signal_id=f"o{n}", service_id="email", outage=body))
    expected = [outage_interval(s, until) for s in signals]
    assert [repr(i) for i in outage_intervals(signals, until)] == [repr(i) for i in expected]


_INSTANT = st.tuples(st.sampled_from([0, 0, 1, 1_767_225_600, 253_402_300_799]), st.sampled_from([0, 0, 999, 1_000]))


@given(
    st.lists(
        st.one_of(
            st.tuples(
                st.just("call"), st.tuples(st.integers(1, 2_000_000_000), _NANOS),
                st.sampled_from(["answered", "abandoned", "neither"]), _INSTANT, st.sampled_from(["", "cust-1"]),
                st.sampled_from(["", "billing"]), st.integers(0, 2),
            ),
            st.tuples(
                st.just("outage"), st.tuples(st.integers(1, 2_000_000_000), _NANOS),
                st.sampled_from(["ended", "under way"]), _INSTANT, st.just(""), st.just(""), st.just(0),
            ),
        ),
        max_size=8,
    )
)  # fmt: skip
@example([("call", (1_767_225_600, 0), "answered", (0, 0), "", "", 0)])  # answered at the epoch itself: set
@example([("outage", (1_767_225_600, 0), "ended", (0, 0), "", "", 0)])  # ended at the epoch itself: set
def test_what_validating_a_call_or_an_outage_reads_is_what_indexing_would_read_of_it(
    rows: list[tuple[str, tuple[int, int], str, tuple[int, int], str, str, int]],
) -> None:
    """Recording indexes a call or an outage from what `validate` read of it (`Read`), not
    reading it again: that is, field for field, what `signal_index.read_signal` reads of any
    signal — its instants, its end (an outage under way: none; one whose end is set at the epoch
    itself: the epoch, as its field is there), an answered call's customer and reason — and an
    answered call naming neither a customer nor a first-contact flag is told anonymous."""
    from accord_metrics.signal_index import read_signal

    for n, (kind, (sec, ns), how, (end_s, end_ns), customer, reason, flag) in enumerate(rows):
        at = Timestamp(seconds=sec, nanos=ns)
        # An end or answer (0, 0) is at the epoch itself (set, yet read as no instant); any other that far on.
        end = Timestamp() if (end_s, end_ns) == (0, 0) else Timestamp(seconds=sec + end_s, nanos=end_ns)
        if kind == "call":
            body = pb.Call(entered_queue=at, customer_id=customer, reason=reason, first_contact=flag)  # type: ignore[arg-type]
            if how != "neither":
                (body.answered_at if how == "answered" else body.abandoned_at).CopyFrom(end)
            s = pb.Signal(signal_id=f"c{n}", service_id="email", call=body)
        else:
            s = pb.Signal(signal_id=f"o{n}", service_id="email", outage=pb.Outage(start=at))
            if how == "ended":
                s.outage.end.CopyFrom(end)
        try:
            read = validate(s, n)
        except InvalidSignalError:
            continue  # an end at or before its start
        assert read is not None
        assert read[:7] == read_signal(s)[:7]
        answered = kind == "call" and s.call.HasField("answered_at")
        assert read[7] is (answered and not customer and flag == 0)
    assert (
        validate(pb.Signal(signal_id="t", service_id="email", ticket=pb.Ticket(priority="P1", opened=ts(T0))), 0)
        is None
    )


def test_recording_reads_no_call_or_outage_again_and_indexes_every_kind(
    app: Metrics, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch of calls and outages (through `record`, and as `RecordSignals` gives it: what
    `validate` read of each) is indexed from what validating it read; a signal of another kind
    is read where it is indexed. Read back, each signal's index row is what reading it gives."""
    from accord_metrics import signal_index

    read_again: list[str] = []
    real = signal_index.read_signal

    def spy(s: pb.Signal) -> Any:
        read_again.append(s.signal_id)
        return real(s)

    monkeypatch.setattr(signal_index, "read_signal", spy)
    ticket_signal = pb.Signal(signal_id="t1", service_id="email", ticket=pb.Ticket(priority="P1", opened=ts(T0)))
    under_way = pb.Signal(signal_id="o3", service_id="email", outage=pb.Outage(start=ts(T0)))
    app.record(PROVIDER, [outage("o1", 0, 5), a_call("c1", 30), under_way, ticket_signal])
    given = [outage("o2", 10, 5), a_call("c2", 40)]
    app.record(PROVIDER, given, via="grpc", owned=True, reads=[validate(s, i) for i, s in enumerate(given)])
    assert read_again == ["t1"]
    rows = app._signal_store.lookup("email", ["o1", "c1", "o3", "t1", "o2", "c2"])
    for sid, row in rows.items():
        _, _, _, first, key, _, asked, _ = real(pb.Signal.FromString(row.content))
        assert (row.earliest, row.time_key) == (first, key), sid
        assert (row.grp is None) == (asked is None), sid
    assert rows["o3"].ongoing == 1 and rows["o1"].ongoing == 0
    assert app._services["email"].ongoing.keys() == {"o3"}
    with pytest.raises(ValueError, match="1 reads for 2 signals"):
        app.record(PROVIDER, given, reads=[None])


def _out_of_range(desc: Descriptor) -> Iterator[tuple[str, Callable[[Message], None]]]:
    """(path, put) for every field of `desc`, at any depth, that the kit's request check
    (`check_message`) checks: `put` sets one value there that it refuses (an instant in the year
    10000, an enum number not defined, a uint64 beyond a signed 64-bit column)."""
    for f in desc.fields:
        many = f.is_repeated
        path = f"{f.name}[0]" if many else f.name
        sub = f.message_type
        if sub is not None and sub.full_name == "google.protobuf.Timestamp":

            def put(m: Message, f: FieldDescriptor = f, many: bool = many) -> None:
                ts = getattr(m, f.name).add() if many else getattr(m, f.name)
                ts.seconds = 253_402_300_800

            yield path, put
        elif sub is not None:
            for inner, put_inner in _out_of_range(sub):

                def put(m: Message, f: FieldDescriptor = f, many: bool = many, put_inner=put_inner) -> None:  # type: ignore[no-untyped-def]
                    put_inner(getattr(m, f.name).add() if many else getattr(m, f.name))

                yield f"{path}.{inner}", put
        elif f.enum_type is not None or f.type in (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64):
            bad = 99 if f.enum_type is not None else 2**63

            def put(m: Message, f: FieldDescriptor = f, many: bool = many, bad: int = bad) -> None:
                if many:
                    getattr(m, f.name).append(bad)
                else:
                    setattr(m, f.name, bad)

            yield path, put


def test_validate_refuses_every_value_the_kits_request_check_refuses_in_its_words() -> None:
    """`RecordSignals` checks its own requests (the kit's walk of each batch skipped): every field
    of a signal that `check_message` checks, at any depth and of any kind (found from the
    descriptors, so a field added later is covered), is refused by `validate` first, naming the
    same field in the same words."""
    checked = []
    for path, put in _out_of_range(pb.Signal.DESCRIPTOR):
        s = pb.Signal(signal_id="s1", service_id="email")
        put(s)
        with pytest.raises(InputError) as kit:
            check_message(s, "signals[3]")
        assert kit.value.field == f"signals[3].{path}"
        with pytest.raises(InvalidSignalError) as own:
            validate(s, 3)
        assert str(own.value) == str(kit.value), path
        checked.append(path)
    assert {
        "call.answered_at",
        "call.first_contact",
        "requests.total",
        "ticket.paused[0].end",
        "lead.follow_ups[0]",
    } <= set(checked)
    assert not [p for p in checked if p.startswith("provenance")]  # nothing there is checked
