"""The relay's fast encodings give exactly the bytes the libraries' own calls give: an
envelope's timestamps as `Timestamp.FromDatetime` sets them, and a message's HPUB command
as nats-py's `publish` writes it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from nats.protocol import command

from accord.events.v1 import events_pb2
from accord_kit.envelope import _set_ts
from accord_kit.relay import _hpub

INSTANTS = [
    datetime(2026, 1, 10, 9, 0, tzinfo=UTC),
    datetime(2026, 3, 29, 1, 59, 59, 999999, tzinfo=timezone(timedelta(hours=1))),
    datetime(2026, 10, 25, 2, 30, 0, 123456, tzinfo=timezone(timedelta(hours=-9, minutes=-30))),
    datetime(1969, 12, 31, 23, 59, 59, 500000, tzinfo=UTC),  # before the epoch
    datetime(2026, 7, 1, 12, 0, 0, 1),  # naive: taken as UTC, as FromDatetime does
]


@pytest.mark.parametrize("when", INSTANTS, ids=str)
def test_timestamps_are_set_as_from_datetime_sets_them(when: datetime) -> None:
    ours, theirs = events_pb2.EventEnvelope(), events_pb2.EventEnvelope()
    _set_ts(ours.occurred_at, when)
    theirs.occurred_at.FromDatetime(when)
    assert (ours.occurred_at.seconds, ours.occurred_at.nanos) == (theirs.occurred_at.seconds, theirs.occurred_at.nanos)
    assert ours.SerializeToString() == theirs.SerializeToString()


def test_a_missing_timestamp_is_present_and_zero_as_before() -> None:
    ours, theirs = events_pb2.EventEnvelope(), events_pb2.EventEnvelope()
    _set_ts(ours.occurred_at, None)
    theirs.occurred_at.CopyFrom(Timestamp())
    assert ours.HasField("occurred_at") and ours.SerializeToString() == theirs.SerializeToString()


def test_hpub_is_what_nats_py_writes() -> None:
    headers = {
        "Nats-Msg-Id": "svc:3f2a:7",
        "Accord-Position": "42",
        "Accord-Previous-Position": "41",
        "Accord-Type": "accord.test.v1.CounterIncremented",
        "Nats-Expected-Last-Msg-Id": "svc:3f2a:6",
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    }
    payload = b"\x00\x01payload\r\n bytes"
    hdr = bytearray(b"NATS/1.0\r\n")
    for k, v in headers.items():  # as nats-py's Client._send_publish builds the header block
        hdr.extend(f"{k}: {v}\r\n".encode())
    hdr.extend(b"\r\n")
    expected = command.hpub_cmd("accord.svc.v1.CounterIncremented", "_INBOX.relay.x.42", hdr, payload)
    assert _hpub("accord.svc.v1.CounterIncremented", "_INBOX.relay.x.42", headers, payload) == expected
