"""Dead letters: where a NATS message that can never be applied goes, so that it is neither
retried forever nor silently dropped.

A message is dead-lettered only when nothing can ever make it applicable — it is not what
the subject carries at all (undecodable bytes, not an envelope), or it breaks a rule that
will never change for it (a bad token, an invalid signal, a sender who may not send it).
It is first copied, with its bytes unchanged, to the `DEADLETTER` stream (file storage,
kept until an operator removes it) on the subject

    accord.deadletter.<service>.<original subject>

with the headers below and the original headers (but not `Authorization`: credentials are
not kept), and only once that copy is stored is the original acknowledged. A failure that
may pass (the store cannot be read, NATS cannot take the copy) is never acknowledged: the
message is nak'ed with a delay and tried again, so nothing acknowledged is lost.

The copy's `Nats-Msg-Id` is `<service>:<stream>:<stream sequence>`, so a redelivery of the
same message after a crash between the copy and the ack is stored once."""

from __future__ import annotations

from typing import Any

from nats.aio.msg import Msg
from nats.js import api
from nats.js.errors import NoStreamResponseError, NotFoundError

STREAM = "DEADLETTER"
SUBJECTS = ["accord.deadletter.>"]
HEALTH = "accord.deadletter"  # health service: NOT_SERVING once a message was dead-lettered

REASON = "Accord-Deadletter-Reason"
SERVICE = "Accord-Deadletter-Service"
ORIGINAL_SUBJECT = "Accord-Original-Subject"
ORIGINAL_STREAM = "Accord-Original-Stream"
ORIGINAL_SEQUENCE = "Accord-Original-Sequence"
DELIVERIES = "Accord-Deliveries"
NOT_KEPT = frozenset({"authorization", "nats-msg-id", "nats-expected-last-msg-id", "nats-expected-stream"})
MAX_REASON = 1000


def subject_for(service: str, original_subject: str) -> str:
    return f"accord.deadletter.{service}.{original_subject}"


async def ensure_deadletter_stream(js: Any, replicas: int = 1) -> None:
    """Create the DEADLETTER stream unless it exists (every service shares it)."""
    try:
        await js.stream_info(STREAM)
    except NotFoundError:
        await js.add_stream(
            api.StreamConfig(
                name=STREAM,
                subjects=SUBJECTS,
                storage=api.StorageType.FILE,
                num_replicas=replicas,
                duplicate_window=120.0,
                description="Messages that can never be applied, with the reason (accord_kit.deadletter)",
            )
        )


def _header_text(text: str) -> str:
    one_line = " ".join(text.split())
    return one_line if len(one_line) <= MAX_REASON else one_line[: MAX_REASON - 1] + "…"


async def dead_letter(js: Any, service: str, msg: Msg, reason: str, *, replicas: int = 1) -> str:
    """Store a copy of `msg` in the DEADLETTER stream with `reason` (raises when it could not
    be stored: then the original must not be acknowledged). Returns the copy's subject."""
    try:
        meta = msg.metadata
    except Exception:  # not a JetStream message
        meta = None
    stream = meta.stream if meta is not None else ""
    seq = meta.sequence.stream if meta is not None else 0
    headers = {k: v for k, v in (msg.headers or {}).items() if k.lower() not in NOT_KEPT}
    headers.update(
        {
            REASON: _header_text(reason),
            SERVICE: service,
            ORIGINAL_SUBJECT: msg.subject,
            ORIGINAL_STREAM: stream,
            ORIGINAL_SEQUENCE: str(seq),
            DELIVERIES: str(meta.num_delivered if meta is not None else 1),
        }
    )
    if seq:
        headers["Nats-Msg-Id"] = f"{service}:{stream}:{seq}"
    subject = subject_for(service, msg.subject)
    try:
        await js.publish(subject, msg.data or b"", headers=headers)
    except NoStreamResponseError:  # no stream took it (it was deleted): create it and try once more
        await ensure_deadletter_stream(js, replicas)
        await js.publish(subject, msg.data or b"", headers=headers)
    return subject
