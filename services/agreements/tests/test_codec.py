"""The conversions every command makes, made cheaper without changing a byte of their
results: requests' terms to dicts (`message_dict` against `json_format.MessageToDict`),
terms to their proto (`terms_message`, found again by their marshal), the answers' list of versions
(extended by one entry per accepted version, not rebuilt) and the copy `normalise` works on."""

from __future__ import annotations

import copy
import json
from collections import OrderedDict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from google.protobuf import json_format
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from accord.agreements.v1 import agreements_pb2 as pb
from accord.agreements.v1 import terms_pb2
from accord.audit.v1 import audit_pb2
from accord.events.v1 import events_pb2
from accord_agreements import codec, server
from accord_agreements.codec import message_dict, terms_message
from accord_agreements.domain import Agreement
from accord_agreements.samples import ola_terms, sla_terms, with_target
from accord_agreements.terms import copy_terms, normalise
from accord_cli import termsfile

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "terms"


def example_terms() -> list[terms_pb2.AgreementTerms]:
    out = [terms_message(sla_terms()), terms_message(ola_terms())]
    for path in sorted(EXAMPLES.glob("*.yaml")):
        docs = termsfile.load(path)
        out.extend(termsfile.to_message(d) for d in (docs if isinstance(docs, list) else [docs]))
    return out


def every_kind_of_terms() -> terms_pb2.AgreementTerms:
    """Terms with a field of every kind the plan converts: maps, repeated scalars, enums (one
    with a number the enum does not name), booleans, unsigned integers, Timestamps, nested and
    repeated messages, and messages set but empty."""
    m = terms_message(sla_terms())
    o = m.objectives[0]
    o.parameters["min_outage_seconds"] = "60"
    o.warning_levels.extend(["50", "75"])
    o.underpinned_by.append(str(uuid4()))
    o.exclusions.add(reason="planned", start=m.term.effective_from, end=m.term.effective_from)
    o.exclusions.add()  # an empty entry
    o.credit_tiers.add(lower="0", lower_inclusive=True, upper="99", upper_inclusive=False, credit_percent="5")
    o.reward.SetInParent()  # set, empty
    o.slice_minutes = 5
    m.level = 77  # an enum number the proto does not name (open enum): kept as the number
    m.support.priorities.add(priority="P1", response_minutes=15, resolution_minutes=240)
    m.term.auto_renew = True
    return m


@pytest.mark.parametrize("msg", [*example_terms(), every_kind_of_terms(), terms_pb2.AgreementTerms()])
def test_message_dict_is_message_to_dict(msg: terms_pb2.AgreementTerms) -> None:
    fast = message_dict(msg)
    assert fast == json_format.MessageToDict(msg, preserving_proto_field_name=True)
    # The same keys in the same order: the stored JSON does not change either.
    assert json.dumps(fast) == json.dumps(json_format.MessageToDict(msg, preserving_proto_field_name=True))


@pytest.mark.parametrize(
    "msg",
    [
        # Types with fields the plan leaves to MessageToDict: 64-bit integers, bytes, Any, a Timestamp itself.
        events_pb2.EventEnvelope(event_id="e", position=2**40, aggregate_version=3, type="t"),
        audit_pb2.ChainCheckpointSealed(service="s", position=7, chain_hash=b"\x00\x01", signature=b"sig"),
        Timestamp(seconds=5, nanos=1000),
    ],
)
def test_message_dict_hands_other_kinds_to_message_to_dict(msg: Message) -> None:
    assert message_dict(msg) == json_format.MessageToDict(msg, preserving_proto_field_name=True)


def test_terms_message_finds_terms_again_whatever_their_key_order() -> None:
    terms = normalise(sla_terms())
    first = terms_message(terms)
    reordered = dict(reversed(list(terms.items())))
    assert terms_message(reordered) == first
    other = with_target(terms, "availability", "99.5")
    assert terms_message(other) != first
    assert terms_message(other) == json_format.ParseDict(other, terms_pb2.AgreementTerms())
    # Each caller owns its message.
    mine = terms_message(terms)
    mine.title = "changed"
    assert terms_message(terms).title == terms["title"]


def test_terms_message_finds_terms_again_whichever_way_they_were_made(monkeypatch: pytest.MonkeyPatch) -> None:
    # From a request (message_dict) and read back from a stored event (JSON): one conversion.
    terms = with_target(normalise(sla_terms()), "availability", "99.77")
    from_request = message_dict(terms_message(terms))
    from_store = json.loads(json.dumps(from_request))
    first = terms_message(from_request)
    canonical: list[Any] = []
    parsed = codec._parsed

    def counting(text: str) -> Any:
        canonical.append(text)
        return parsed(text)

    monkeypatch.setattr(codec, "_parsed", counting)
    assert terms_message(from_store) == first
    assert terms_message(from_request) == first
    assert canonical == []


def test_terms_message_tells_apart_values_that_marshal_differently_but_convert_alike() -> None:
    terms = normalise(sla_terms())
    as_int = copy.deepcopy(terms)
    as_int["term"]["notice_days"] = 30
    as_float = copy.deepcopy(terms)
    as_float["term"]["notice_days"] = 30.0
    assert terms_message(as_int).term.notice_days == terms_message(as_float).term.notice_days == 30


def agreement_with_versions(n: int) -> Agreement:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    agg: Any = object.__new__(Agreement)
    agg.__dict__["_id"] = uuid4()
    agg.versions = [
        {
            "version": v,
            "effective_from": (start + timedelta(days=v)).isoformat(),
            "accepted_at": (start + timedelta(days=v, hours=1)).isoformat(),
            "amendment_id": f"a{v}" if v > 1 else "",
        }
        for v in range(1, n + 1)
    ]
    return agg


def full_part(agg: Agreement) -> bytes:
    return pb.Agreement(
        versions=[
            pb.AgreementVersion(
                version=v["version"],
                effective_from=codec.ts(v["effective_from"]),
                accepted_at=codec.ts(v["accepted_at"]),
                amendment_id=v["amendment_id"],
            )
            for v in agg.versions
        ]
    ).SerializeToString()


def test_the_versions_part_grows_by_the_new_entry_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    agg = agreement_with_versions(40)
    grown: Any = agreement_with_versions(41)
    grown.__dict__["_id"] = agg.id
    assert server._versions_part(agg) == full_part(agg)
    converted: list[Any] = []
    ts = codec.ts

    def counting(value: Any) -> Any:
        converted.append(value)
        return ts(value)

    monkeypatch.setattr(server, "ts", counting)
    part = server._versions_part(grown)
    assert part == full_part(grown)
    assert converted == [grown.versions[-1]["effective_from"], grown.versions[-1]["accepted_at"]]
    msg = pb.Agreement()
    msg.MergeFromString(part)
    assert [v.version for v in msg.versions] == list(range(1, 42))


@pytest.mark.parametrize(
    "value",
    [
        normalise(sla_terms()),
        {"a": [1, 2.5, None, True, {"b": ["x", {"c": []}]}], "d": {}},
        {"decimal": Decimal("1.5"), "tuple": (1, [2]), "ordered": OrderedDict(a=[1])},
    ],
)
def test_copy_terms_is_a_deep_copy(value: Any) -> None:
    copied = copy_terms(value)
    assert copied == copy.deepcopy(value)
    assert [type(v) for v in copied.values()] == [type(v) for v in value.values()]

    def containers(v: Any) -> list[int]:
        if isinstance(v, dict):
            return [id(v), *(i for x in v.values() for i in containers(x))]
        if isinstance(v, list | tuple):
            return [id(v), *(i for x in v for i in containers(x))]
        return []

    assert not set(containers(copied)) & set(containers(value))  # nothing shared that could change
