"""The typed reading of request fields every servicer uses (`accord_kit.inputs`): each bad
value is an InputError (INVALID_ARGUMENT) naming the field."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from accord.agreements.v1 import agreements_pb2 as apb
from accord.agreements.v1 import terms_pb2
from accord.events.v1 import events_pb2
from accord_kit import inputs
from accord_kit.inputs import InputError


def test_input_error_is_invalid_argument_and_names_the_field() -> None:
    e = InputError("terms.term.effective_to", "is bad")
    assert e.code == grpc.StatusCode.INVALID_ARGUMENT
    assert str(e) == "terms.term.effective_to: is bad" and e.field == "terms.term.effective_to"


@pytest.mark.parametrize(
    "seconds,nanos",
    [(253_402_300_800, 0), (-62_135_596_801, 0), (2**63 - 1, 0), (0, -1), (1, 1_000_000_000)],
)
def test_instants_outside_the_years_1_to_9999_or_with_bad_nanos_are_refused(seconds: int, nanos: int) -> None:
    with pytest.raises(InputError, match=r"^at: "):
        inputs.instant(Timestamp(seconds=seconds, nanos=nanos), "at")


def test_instants_at_the_edges_are_read_and_unset_is_none_or_required() -> None:
    assert inputs.instant(Timestamp(seconds=253_402_300_799, nanos=999_999_999), "at") is not None
    assert inputs.instant(Timestamp(seconds=-62_135_596_800), "at") == datetime(1, 1, 1, tzinfo=UTC)
    assert inputs.instant(Timestamp(), "at", required=False) is None
    with pytest.raises(InputError, match=r"at: is required"):
        inputs.instant(Timestamp(), "at")


@pytest.mark.parametrize("text", ["NaN", "nan", "sNaN", "Infinity", "-inf", "12abc", "1,5", "0x10"])
def test_decimals_refuse_nan_infinity_and_garbage(text: str) -> None:
    with pytest.raises(InputError, match=r"^amount: "):
        inputs.decimal(text, "amount")


def test_decimals_read_finite_numbers_and_empty_is_none_unless_required() -> None:
    assert inputs.decimal(" 12.50 ", "amount") == Decimal("12.50")
    assert inputs.decimal("", "amount") is None
    with pytest.raises(InputError, match=r"amount: is required"):
        inputs.decimal("", "amount", required=True)


def test_positions_are_bounded_to_signed_64_bit() -> None:
    assert inputs.position(2**63 - 1, "after_position") == 2**63 - 1
    for bad in (2**63, -1):
        with pytest.raises(InputError, match=r"^after_position: "):
            inputs.position(bad, "after_position")


def test_enum_numbers_are_checked_against_the_descriptor() -> None:
    assert inputs.enum_name(terms_pb2.AgreementKind, 0, "kind") == ""
    assert inputs.enum_name(terms_pb2.AgreementKind, 1, "kind").startswith("AGREEMENT_KIND_")
    with pytest.raises(InputError, match=r"kind: 999 is not a value of AgreementKind"):
        inputs.enum_name(terms_pb2.AgreementKind, 999, "kind")


def test_time_zones_and_rfc3339_instants() -> None:
    assert str(inputs.time_zone("Europe/Amsterdam", "time_zone")) == "Europe/Amsterdam"
    for bad in ("Mars/Olympus_Mons", "../../etc/passwd", ""):
        with pytest.raises(InputError, match=r"^time_zone: "):
            inputs.time_zone(bad, "time_zone")
    assert inputs.iso_instant("2026-01-01T00:00:00+01:00", "period_start") is not None
    for bad in ("NaN", "2026-01-01", "not-a-date"):
        with pytest.raises(InputError, match=r"^period_start: "):
            inputs.iso_instant(bad, "period_start")


def test_a_whole_request_is_checked_at_any_depth_naming_the_path() -> None:
    terms = terms_pb2.AgreementTerms()
    terms.term.effective_to.seconds = 253_402_300_800
    with pytest.raises(InputError, match=r"^terms\.term\.effective_to: "):
        inputs.check_message(apb.DraftAgreementRequest(terms=terms))
    with pytest.raises(InputError, match=r"^kind: 999"):
        inputs.check_message(apb.ListAgreementsRequest(kind=999))  # type: ignore[arg-type]
    with pytest.raises(InputError, match=r"^after_position: "):
        inputs.check_message(events_pb2.ReadEventsRequest(after_position=2**63))
    with pytest.raises(InputError, match=r"^d: "):
        inputs.check_duration(Duration(seconds=1, nanos=-1), "d")
    inputs.check_message(apb.ListAgreementsRequest(kind=1))


def test_undecodable_bytes_become_an_input_error_not_an_exception_in_the_library() -> None:
    read = inputs.tolerant_deserializer(apb.GetAgreementRequest.FromString)
    assert read is not None
    request = read(b"\x0a\x05ab")
    with pytest.raises(InputError, match=r"not a valid accord.agreements.v1.GetAgreementRequest message"):
        inputs.checked(request)
    assert inputs.checked(read(apb.GetAgreementRequest(agreement_id="a").SerializeToString())).agreement_id == "a"


def test_a_large_batch_names_the_one_bad_instant_by_its_index() -> None:
    from accord.metrics.v1 import metrics_pb2 as mpb
    from accord.metrics.v1 import signals_pb2 as spb

    ok = Timestamp(seconds=1_767_225_600)
    signals = [
        spb.Signal(signal_id=f"s{i}", service_id="email", call=spb.Call(entered_queue=ok, answered_at=ok))
        for i in range(10_000)
    ]
    request = mpb.RecordSignalBatchRequest(signals=signals)
    inputs.check_message(request)
    request.signals[7777].call.answered_at.nanos = -5
    with pytest.raises(InputError, match=r"^signals\[7777\]\.call\.answered_at: nanos -5 "):
        inputs.check_message(request)


def test_each_member_of_a_oneof_is_checked_naming_it() -> None:
    """A oneof's members are checked through the one set (a single step of the plan): a bad
    instant or enum in whichever member is set is named, at any depth; unset members are not."""
    from accord.metrics.v1 import metrics_pb2 as mpb
    from accord.metrics.v1 import signals_pb2 as spb

    steps = inputs._plan(spb.Signal.DESCRIPTOR)
    assert steps is not None and [s[1] for s in steps] == ["oneof"]
    bad = Timestamp(seconds=253_402_300_800)
    cases = {
        "outage.end": spb.Signal(outage=spb.Outage(end=bad)),
        "probe.at": spb.Signal(probe=spb.Probe(at=bad)),
        "requests.start": spb.Signal(requests=spb.RequestCount(start=bad)),
        "incident.restored_at": spb.Signal(incident=spb.Incident(restored_at=bad)),
        "call.abandoned_at": spb.Signal(call=spb.Call(abandoned_at=bad)),
        "ticket.paused[1].end": spb.Signal(ticket=spb.Ticket(paused=[spb.Pause(), spb.Pause(end=bad)])),
        "task.completed": spb.Signal(task=spb.Task(completed=bad)),
        "lead.follow_ups[0]": spb.Signal(lead=spb.Lead(follow_ups=[bad])),
        "deal.closed_at": spb.Signal(deal=spb.Deal(closed_at=bad)),
        "maintenance.announced_at": spb.Signal(maintenance=spb.Maintenance(announced_at=bad)),
    }
    for path, signal in cases.items():
        request = mpb.RecordSignalBatchRequest(signals=[spb.Signal(call=spb.Call()), signal])
        with pytest.raises(InputError, match=rf"^signals\[1\]\.{re.escape(path)}: seconds 253402300800 "):
            inputs.check_message(request)
    with pytest.raises(InputError, match=r"^signals\[0\]\.call\.first_contact: 7 is not a value"):
        inputs.check_message(mpb.RecordSignalBatchRequest(signals=[spb.Signal(call=spb.Call(first_contact=7))]))  # type: ignore[arg-type]
    inputs.check_message(mpb.RecordSignalBatchRequest(signals=[spb.Signal(), spb.Signal(call=spb.Call())]))
