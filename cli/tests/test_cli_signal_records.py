"""How `accord signal` reads records (in-process; the real process and service are in
test_cli_signals.py): the flat form and the Signal's own JSON form, local times, pauses and
enums, the reasons a record is refused, stable ids, and batches that keep a ticket's update
out of the batch holding its earlier content."""

from __future__ import annotations

import pytest

from accord.metrics.v1 import signals_pb2 as spb
from accord_cli.signals_cmd import BadSignalError, Line, batches, default_id, finish, record_signal


def test_the_flat_form() -> None:
    s = record_signal(
        {"kind": "tickets", "id": "T-1", "priority": "P2", "opened": "2026-03-14T09:00",
         "paused": "2026-03-14T10:00/2026-03-14T11:00;2026-03-14T12:00/", "reopened": "2026-03-15T08:00"},
        "desk", "Europe/Amsterdam",
    )  # fmt: skip
    assert (s.signal_id, s.service_id, s.ticket.priority) == ("T-1", "desk", "P2")
    assert s.ticket.opened.ToJsonString() == "2026-03-14T08:00:00Z"
    assert [p.start.ToJsonString() for p in s.ticket.paused] == ["2026-03-14T09:00:00Z", "2026-03-14T11:00:00Z"]
    assert s.ticket.paused[0].HasField("end") and not s.ticket.paused[1].HasField("end")
    assert [t.ToJsonString() for t in s.ticket.reopened] == ["2026-03-15T07:00:00Z"]
    call = record_signal({"kind": "call", "service": "phones", "entered_queue": "2026-03-14T09:00:00Z",
                          "first_contact": "not-resolved", "talk_seconds": "60"}, "", "")  # fmt: skip
    assert call.call.first_contact == spb.FIRST_CONTACT_RESOLUTION_NOT_RESOLVED and call.service_id == "phones"
    counts = record_signal({"kind": "requests", "start": "2026-03-14T09:00:00Z", "end": "2026-03-14T10:00:00Z",
                            "good": "9", "total": "10"}, "api", "")  # fmt: skip
    assert (counts.requests.good, counts.requests.total) == (9, 10)


def test_the_signals_own_json_form() -> None:
    s = record_signal({"signal_id": "o-1", "outage": {"start": "2026-03-14T09:00", "planned": True}}, "mail",
                      "Europe/Amsterdam")  # fmt: skip
    assert s.outage.start.ToJsonString() == "2026-03-14T08:00:00Z" and s.outage.planned and s.service_id == "mail"


@pytest.mark.parametrize(
    ("record", "words"),
    [
        ({"kind": "meteor"}, "kind: one of"),
        ({"start": "2026-03-14T09:00:00Z"}, "kind: is required"),
        ({"kind": "outage", "start": "2026-03-14T09:00"}, "no offset"),
        ({"kind": "outage", "start": "soon"}, "start: not an RFC 3339 instant"),
        ({"kind": "outage", "start": "2026-03-14T09:00:00Z", "colour": "red"}, "colour: not a field of outage"),
        ({"kind": "requests", "good": "many"}, "good: a whole number"),
        ({"kind": "requests", "good": "-1"}, "must not be negative"),
        ({"kind": "outage", "planned": "perhaps"}, "planned: true or false"),
        ({"kind": "call", "first_contact": "maybe"}, "first_contact: one of resolved, not_resolved"),
    ],
)
def test_records_refused_with_a_reason(record: dict[str, str], words: str) -> None:
    with pytest.raises(BadSignalError, match=words):
        record_signal(record, "svc", "")


def test_stable_ids() -> None:
    def outage(end: str = "", cause: str = "") -> spb.Signal:
        return finish(record_signal({"kind": "outage", "start": "2026-03-14T09:00:00Z", "end": end, "cause": cause},
                                    "mail", ""), manual=True)  # fmt: skip

    under_way, ended = outage(), outage("2026-03-14T10:00:00Z", "disk")
    assert under_way.signal_id == ended.signal_id  # the same outage, completed
    assert outage().signal_id != finish(record_signal({"kind": "outage", "start": "2026-03-14T09:00:00Z"}, "web", ""),
                                        manual=True).signal_id  # fmt: skip
    assert ended.provenance == spb.Provenance(source="cli", manual=True)
    call = spb.Signal(service_id="phones", call=spb.Call(talk_seconds="60"))
    assert default_id(call) == default_id(spb.Signal(service_id="phones", call=spb.Call(talk_seconds="60")))
    assert default_id(call) != default_id(spb.Signal(service_id="phones", call=spb.Call(talk_seconds="61")))
    with pytest.raises(BadSignalError, match="service_id"):
        finish(spb.Signal(outage=spb.Outage()), manual=False)


def test_an_update_further_down_the_file_goes_in_a_later_batch() -> None:
    def line(n: int, sid: str, priority: str) -> Line:
        return Line(n, spb.Signal(signal_id=sid, service_id="desk", ticket=spb.Ticket(priority=priority)))

    lines = [line(1, "a", "P1"), line(2, "b", "P1"), line(3, "a", "P1"), line(4, "a", "P2"), line(5, "c", "P1")]
    assert [[x.number for x in b] for b in batches(lines, 10)] == [[1, 2, 3], [4, 5]]
    assert [[x.number for x in b] for b in batches(lines, 2)] == [[1, 2], [3], [4, 5]]
