"""`accord.audit.v1.AuditService`, served by every event-sourced service (the runtime
registers it), and the verification of a service's log outside the service from its
`ReadChain` pages and public keys (docs/domain.md §6, "Verification"; the chain, checkpoints
and verifier themselves are in `accord_kit.chain`).

- `ReadChain` serves the stored records exactly as hashed and the chain table, page by
  page; `verify_chain` (a client, e.g. the CLI, passes a function that calls ReadChain)
  verifies the pages as they come (`LogVerifier`, over `chain.ChainVerifier`: one pass, a
  page in memory at a time, the report `chain.verify` would give over the whole log),
  yielding progress. It trusts the service for nothing but the bytes it serves.
- `VerifyLog` runs the same verification inside the service, over its own store; asked
  from the last checkpoint, it answers with the start-up verification's finding when that
  found the log tampered with (`verify_log_steps`).
- `GetChainKeys` gives the public keys of the service's checkpoint signatures.
- `AgreementHistory` streams the service's events that concern one agreement, each with
  its chain hash (`AccordApplication.agreement_ids_of` decides which do);
  `agreement_history` gives the same in-process. Records whose topic never concerns an
  agreement are skipped before they are decoded: the kit's checkpoint events, and the
  topics an application lists in an optional class attribute `history_skip_topics`
  (e.g. `history_skip_topics = frozenset({BATCH_TOPIC})`: metrics' signal batches, most
  of its log). List only topics whose events `agreement_ids_of` never relates to an
  agreement, and that it need not see to relate later ones.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from eventsourcing.persistence import Mapper

from accord.audit.v1 import audit_pb2, audit_pb2_grpc
from accord.events.v1 import events_pb2
from accord_kit.application import DEFAULT_READ_LIMIT, MAX_READ_LIMIT, AccordApplication
from accord_kit.chain import (
    CHECKPOINT_TOPICS,
    ChainedRecorder,
    ChainError,
    ChainVerifier,
    Checkpoint,
    Kind,
    Page,
    Problem,
    ReadPages,
    RecordView,
    Report,
    chained_recorder,
    key_id,
    latest_checkpoint,
    load_private_key,
    load_public_key,
    pages_in_memory,
    public_key_pem,
    read_page,
    store_pages,
)
from accord_kit.envelope import to_envelope
from accord_kit.errors import InvalidArgumentError
from accord_kit.inputs import position
from accord_kit.settings import ServiceSettings, SettingsError
from accord_kit.threads import finish_in_thread

DEFAULT_CHAIN_LIMIT = 1000
MAX_CHAIN_LIMIT = 10_000
VERIFY_PAGE = 2000  # records per progress message of VerifyLog
HISTORY_PAGE = 1000  # log positions read per worker-thread call of AgreementHistory
SERVICE_NAME = str(audit_pb2.DESCRIPTOR.services_by_name["AuditService"].full_name)

PublicKeys = Iterable[Ed25519PublicKey] | Mapping[str, Ed25519PublicKey]
# (after_position, limit, stop_position) → one ReadChain page; a client wraps its stub call in this.
ReadChain = Callable[[int, int, int], audit_pb2.ReadChainResponse]


# -- keys ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChainKeys:
    """A service's checkpoint keys: the private key that signs new checkpoints (None when
    the service has none and does not seal) and the public keys of earlier signing keys,
    still trusted for the checkpoints they signed (key rotation)."""

    private: Ed25519PrivateKey | None
    previous: tuple[Ed25519PublicKey, ...] = ()

    @property
    def current(self) -> Ed25519PublicKey | None:
        return self.private.public_key() if self.private is not None else None

    @property
    def public_keys(self) -> list[Ed25519PublicKey]:
        current = self.current
        return [*([current] if current is not None else []), *self.previous]

    @classmethod
    def load(cls, settings: ServiceSettings) -> ChainKeys:
        """The keys the settings name. A missing private key is refused unless the
        service does not seal (`<SERVICE>_SEAL_SECONDS=0`)."""
        p = settings.service.upper()
        path = settings.chain_key_file
        private: Ed25519PrivateKey | None = None
        if path.exists():
            try:
                private = load_private_key(path)
            except (OSError, ValueError, TypeError) as e:
                raise SettingsError(
                    f"{p}_CHAIN_KEY_FILE={path} is not a readable Ed25519 private key (PEM): {e}"
                ) from None
        elif settings.seal_seconds > 0:
            raise SettingsError(
                f"chain signing key {path} not found ({p}_CHAIN_KEY_FILE): `make run` and "
                f"`python -m accord_kit.keys DIR` create one; {p}_SEAL_SECONDS=0 runs without sealing"
            )
        previous: list[Ed25519PublicKey] = []
        for f in settings.chain_previous_public_key_files:
            try:
                previous.append(load_public_key(f))
            except (OSError, ValueError, TypeError) as e:
                raise SettingsError(
                    f"{p}_CHAIN_PREVIOUS_PUBLIC_KEY_FILES: {f} is not a readable Ed25519 public key (PEM): {e}"
                ) from None
        return cls(private, tuple(previous))


def chain_key_message(key: Ed25519PublicKey) -> audit_pb2.ChainKey:
    return audit_pb2.ChainKey(key_id=key_id(key), public_key_pem=public_key_pem(key).decode())


def public_keys_of(response: audit_pb2.GetChainKeysResponse) -> dict[str, Ed25519PublicKey]:
    """Key id → public key from a GetChainKeys answer (the key ids are recomputed, not taken
    on trust). An auditor who does not trust the service compares them with keys it holds."""
    keys = [response.current] if response.HasField("current") else []
    loaded = [load_public_key(k.public_key_pem.encode()) for k in [*keys, *response.previous]]
    return {key_id(k): k for k in loaded}


# -- messages ⇄ chain types ----------------------------------------------------------------


def record_message(r: RecordView) -> audit_pb2.ChainRecord:
    return audit_pb2.ChainRecord(
        position=r.notification_id,
        originator_id=r.originator_id,
        originator_version=r.originator_version,
        topic=r.topic,
        state=r.state,
    )


def record_view(m: audit_pb2.ChainRecord) -> RecordView:
    return RecordView(m.position, m.originator_id, m.originator_version, m.topic, bytes(m.state))


def problem_message(p: Problem) -> audit_pb2.Problem:
    msg = audit_pb2.Problem(
        kind=audit_pb2.ProblemKind.Value(f"PROBLEM_KIND_{p.kind.value}"), position=p.position, detail=p.detail
    )
    if p.since is not None:
        msg.since = p.since
    return msg


def problem_of(m: audit_pb2.Problem) -> Problem:
    kind = Kind(audit_pb2.ProblemKind.Name(m.kind).removeprefix("PROBLEM_KIND_"))
    return Problem(kind, m.position, m.detail, m.since if m.HasField("since") else None)


# -- ReadChain ----------------------------------------------------------------------------


def read_chain(
    app: AccordApplication,
    after_position: int,
    limit: int = 0,
    stop_position: int = 0,
    max_bytes: int | None = None,
) -> audit_pb2.ReadChainResponse:
    """One ReadChain page (blocking: run it in a worker thread). Records and chain entries
    in (after_position, through_position]: at most `limit` of each, their records' bytes
    within `max_bytes` (at least one record), and never beyond the end (`stop_position`,
    or the higher of the two heads read together now)."""
    if limit > MAX_CHAIN_LIMIT:
        raise InvalidArgumentError(f"limit must be at most {MAX_CHAIN_LIMIT}, not {limit}")
    if stop_position and stop_position < after_position:
        raise InvalidArgumentError(f"stop_position {stop_position} is before after_position {after_position}")
    limit = limit or DEFAULT_CHAIN_LIMIT
    recorder: ChainedRecorder = chained_recorder(app.recorder)
    log_head, chain_head = recorder.chain_heads()
    end = max(log_head, chain_head)
    if stop_position:
        end = min(end, stop_position)
    out = audit_pb2.ReadChainResponse(
        service=app.service, log_head_position=log_head, chain_head_position=chain_head, through_position=after_position
    )
    if after_position >= end:
        return out
    records, hashes, through = read_page(recorder, after_position, end, limit)
    if max_bytes is not None:
        size = 0
        for i, r in enumerate(records):
            if r.notification_id > through:
                break
            size += len(r.state) + len(r.topic) + len(r.originator_id) + 32
            if size > max_bytes and i > 0:
                through = records[i - 1].notification_id
                break
    out.records.extend(record_message(r) for r in records if r.notification_id <= through)
    out.chain.extend(audit_pb2.ChainEntry(position=k, hash=h) for k, h in sorted(hashes.items()) if k <= through)
    out.through_position = through
    out.more = through < end
    return out


# -- verification from pages ------------------------------------------------------------------


@dataclass(frozen=True)
class VerifyProgress:
    """How far a verification got; the last one (`done`) carries the result."""

    start_position: int  # verified after this position (0, or a checkpoint's)
    head_position: int  # ...up to this one
    verified_through: int  # every record up to here recomputed and agreeing with the chain
    records_checked: int
    checkpoints_checked: int
    ok: bool  # nothing wrong found (so far, while not done)
    done: bool = False
    problem: Problem | None = None  # the first problem (known once done)
    report: Report | None = None  # chain.verify's report, when done

    def message(self) -> audit_pb2.VerifyLogProgress:
        msg = audit_pb2.VerifyLogProgress(
            verified_through=self.verified_through,
            head_position=self.head_position,
            records_checked=self.records_checked,
            checkpoints_checked=self.checkpoints_checked,
            done=self.done,
            ok=self.ok,
            start_position=self.start_position,
        )
        if self.problem is not None:
            msg.problem.CopyFrom(problem_message(self.problem))
        return msg


class LogVerifier:
    """Verifies a log fed in position order, page by page (records and the chain entries of
    the same position range), in one pass and in memory bounded by a page
    (`chain.ChainVerifier`): progress after each page, and from `finish` the report
    `chain.verify` would give over everything fed (it names the first problem and its
    kind). What naming a problem needs again is read through `reread` (`chain_pages` over
    ReadChain, `chain.store_pages` over a store); without it the pages fed are kept for that."""

    def __init__(
        self,
        public_keys: PublicKeys,
        *,
        service: str | None = None,
        start: Checkpoint | None = None,
        end: int = 0,
        mapper: Mapper[Any] | None = None,
        checkpoints: Iterable[Checkpoint] = (),
        reread: ReadPages | None = None,
    ) -> None:
        self.lo = start.position if start is not None else 0
        self.end = end
        self._kept: list[Page] | None = None
        if reread is None:
            self._kept = []
            reread = pages_in_memory(self._kept)
        self.verifier = ChainVerifier(
            public_keys, reread=reread, service=service, start=start, mapper=mapper, checkpoints=checkpoints
        )

    def add(self, records: Iterable[RecordView], hashes: Mapping[int, bytes]) -> VerifyProgress:
        if self._kept is not None:
            page = (list(records), dict(hashes))
            self._kept.append(page)
            records, hashes = page
        self.verifier.add(records, hashes)
        return self.progress()

    def progress(self) -> VerifyProgress:
        v = self.verifier
        return VerifyProgress(
            start_position=self.lo,
            head_position=self.end,
            verified_through=v.verified_through,
            records_checked=v.records_checked,
            checkpoints_checked=v.checkpoints_checked,
            ok=v.ok,
        )

    def finish(self) -> VerifyProgress:
        report = self.verifier.finish()
        problem = report.problem
        if problem is None:
            through = report.end
        else:
            before = problem.since if problem.since is not None else problem.position - 1
            through = max(self.lo, min(self.verifier.verified_through, before))
        return VerifyProgress(
            start_position=self.lo,
            head_position=max(self.end, report.end),
            verified_through=through,
            records_checked=report.records,
            checkpoints_checked=report.checkpoints,
            ok=problem is None,
            done=True,
            problem=problem,
            report=report,
        )


def page_contents(page: audit_pb2.ReadChainResponse) -> Page:
    """A ReadChain page's records and chain entries."""
    return [record_view(r) for r in page.records], {e.position: bytes(e.hash) for e in page.chain}


def chain_pages(read: ReadChain, limit: int = DEFAULT_CHAIN_LIMIT) -> ReadPages:
    """ReadChain pages (`read(after, limit, stop)`) as a verifier reads them again."""

    def pages(after: int, stop: int, *, records: bool = True) -> Iterator[Page]:
        while after < stop:  # ReadChain serves records and chain together
            page = read(after, limit, stop)
            yield page_contents(page)
            if not page.more or page.through_position <= after:
                return
            after = page.through_position

    return pages


def _held_pages(pages: Sequence[audit_pb2.ReadChainResponse]) -> ReadPages:
    """ReadChain pages already fetched (in order), read again."""

    def read(after: int, stop: int, *, records: bool = True) -> Iterator[Page]:
        for page in pages:
            held, chain = page.records, page.chain
            top = max(
                page.through_position,
                held[-1].position if held else 0,
                chain[-1].position if chain else 0,
            )
            if top <= after:
                continue
            bottom = min(
                held[0].position if held else top,
                chain[0].position if chain else top,
            )
            if bottom > stop:
                return
            found = [record_view(r) for r in held if after < r.position <= stop] if records else []
            entries = {e.position: bytes(e.hash) for e in chain if after < e.position <= stop}
            if found or entries:
                yield found, entries

    return read


def verify_chain(
    read: ReadChain,
    public_keys: PublicKeys,
    *,
    service: str | None = None,
    start: Checkpoint | None = None,
    checkpoints: Iterable[Checkpoint] = (),
    mapper: Mapper[Any] | None = None,
    limit: int = DEFAULT_CHAIN_LIMIT,
) -> Iterator[VerifyProgress]:
    """Verify a service's log outside the service, from its ReadChain pages: `read(after,
    limit, stop)` returns one page (e.g. a stub call with a token). Yields progress after
    each page but the last, then the result (`done`). The end is fixed by the first page
    (the service may keep writing). `service` is the name checkpoints must carry (default:
    the name the pages give); `start` a checkpoint verified before (only later records are
    read); `checkpoints` copies kept outside the log (they prove a cut-off tail); `mapper`
    reads checkpoint records of a compressed or encrypted store. One pass, a page in memory
    at a time; naming a problem reads what it needs again through `read`."""
    after = max(start.position - 1, 0) if start is not None else 0  # the chain entry at the start is checked too
    stop = 0
    verifier: LogVerifier | None = None
    while True:
        page = read(after, limit, stop)
        if verifier is None:
            stop = max(page.log_head_position, page.chain_head_position)
            verifier = LogVerifier(
                public_keys,
                service=service or page.service or None,
                start=start,
                end=stop,
                mapper=mapper,
                checkpoints=checkpoints,
                reread=chain_pages(read, limit),
            )
        progress = verifier.add(*page_contents(page))
        if not page.more:
            break
        if page.through_position <= after:
            raise ValueError(f"ReadChain did not advance past position {after}")
        after = page.through_position
        yield progress
    yield verifier.finish()


def verify_pages(
    pages: Iterable[audit_pb2.ReadChainResponse],
    public_keys: PublicKeys,
    *,
    service: str | None = None,
    start: Checkpoint | None = None,
    checkpoints: Iterable[Checkpoint] = (),
    mapper: Mapper[Any] | None = None,
) -> Report:
    """Verify a log from ReadChain pages already fetched (in order, covering the log): the
    streaming verifier of `verify_chain`, which reads the pages again if a problem needs it."""
    held = list(pages)
    first = held[0] if held else None
    verifier = LogVerifier(
        public_keys,
        service=service or (first.service if first is not None else "") or None,
        start=start,
        end=max(first.log_head_position, first.chain_head_position) if first is not None else 0,
        mapper=mapper,
        checkpoints=checkpoints,
        reread=_held_pages(held),
    )
    for page in held:
        verifier.add(*page_contents(page))
    report = verifier.finish().report
    assert report is not None
    return report


def verify_log(app: AccordApplication, public_keys: PublicKeys, *, from_checkpoint: bool) -> Iterator[VerifyProgress]:
    """The service verifies its own store (blocking steps: drive it from a worker thread)."""
    start: Checkpoint | None = None
    if from_checkpoint:
        try:
            start, _ = latest_checkpoint(app)
        except ChainError:
            start = None  # the last checkpoint is unreadable: the whole log shows what is wrong
    # As verify_chain over read_chain's pages would, without the protobuf in between.
    recorder = chained_recorder(app.recorder)
    pages = store_pages(recorder, VERIFY_PAGE)
    end = max(recorder.chain_heads())
    verifier = LogVerifier(public_keys, service=app.service, start=start, end=end, mapper=app.mapper, reread=pages)
    after = max(start.position - 1, 0) if start is not None else 0  # the chain entry at the start too
    progress: VerifyProgress | None = None
    for records, hashes in pages(after, end):
        if progress is not None:
            yield progress
        progress = verifier.add(records, hashes)
        del records, hashes  # not held while the next page is read
    yield verifier.finish()


class StartupVerification:
    """The whole-log verification a sealing service runs at start (`accord_kit.runtime`),
    as the AuditService and the runtime see it: `state` is "verifying" until it is done,
    then "verified" (no problem) or "tampered" (`finding` names the first problem);
    "stopped" when the service stopped before it finished. `progress` is the latest step."""

    def __init__(self) -> None:
        self.state = "verifying"
        self.progress: VerifyProgress | None = None
        self.finding: VerifyProgress | None = None
        self.seconds = 0.0

    @property
    def verified(self) -> bool:
        return self.state == "verified"


def verify_log_steps(
    app: AccordApplication,
    public_keys: PublicKeys,
    *,
    from_checkpoint: bool,
    startup: StartupVerification | None = None,
) -> Iterator[VerifyProgress]:
    """What VerifyLog answers. A log found tampered with at start is tampered whatever its
    later checkpoints say (they were signed before the change, or over it): asked from the
    last checkpoint, the answer is the start-up verification's finding; while that
    verification is still running, the whole log is verified instead (the part before the
    checkpoint is not known good yet)."""
    if from_checkpoint and startup is not None:
        if startup.finding is not None:
            yield startup.finding
            return
        if not startup.verified:
            from_checkpoint = False
    yield from verify_log(app, public_keys, from_checkpoint=from_checkpoint)


# -- AgreementHistory ---------------------------------------------------------------------------


def history_skip_topics(app: AccordApplication) -> frozenset[str]:
    """The topics AgreementHistory does not decode: the kit's checkpoint events and those
    the application declares in `history_skip_topics` (see the module docstring)."""
    declared: Iterable[str] = getattr(app, "history_skip_topics", frozenset())
    return CHECKPOINT_TOPICS | frozenset(declared)


def history_page(
    app: AccordApplication, agreement_id: str, after: int, stop: int, page: int = HISTORY_PAGE
) -> tuple[list[audit_pb2.AuditedEvent], int]:
    """The events in (after, stop] of one page of the log that concern the agreement, and
    the position the next page starts after (`stop` at the end). Blocking. Records of the
    skipped topics are left out before anything is decoded; the others become the envelopes
    ReadEvents serves (previous_position is the log's, skipped records included)."""
    limit = DEFAULT_READ_LIMIT if page <= 0 else min(page, MAX_READ_LIMIT)
    notes = [n for n in app.select_notifications(after, limit) if n.id <= stop]
    if not notes:
        return [], stop
    skip = history_skip_topics(app)
    found: list[events_pb2.EventEnvelope] = []
    for i, n in enumerate(notes):
        if n.topic in skip:
            continue
        # ReadEvents gives the first of a page `after` if that is a position of the log, else
        # the one before it: either way the highest position below it.
        previous = notes[i - 1].id if i > 0 else (0 if after == 0 else app.position_before(n.id))
        envelope, _ = to_envelope(app.service, n, previous, app.accord_mapper, app.codec)
        if app.concerns_agreement(envelope, agreement_id):
            found.append(envelope)
    hashes: Mapping[int, bytes] = {}
    if found and isinstance(app.recorder, ChainedRecorder):
        hashes = app.recorder.select_chain_hashes(found[0].position, found[-1].position)
    audited = [audit_pb2.AuditedEvent(envelope=e, chain_hash=hashes.get(e.position, b"")) for e in found]
    return audited, notes[-1].id


def agreement_history(
    app: AccordApplication, agreement_id: str, *, after: int = 0, stop: int | None = None
) -> Iterator[audit_pb2.AuditedEvent]:
    """The service's events that concern the agreement, in log order, each with its chain
    hash: what AgreementHistory streams (blocking; for use in-process). The log is read up
    to its head as of the first step (or `stop`), page by page."""
    if not agreement_id.strip():
        raise InvalidArgumentError("agreement_id must not be empty")
    end = app.head_position() if stop is None else stop
    while after < end:
        found, after = history_page(app, agreement_id, after, end)
        yield from found


# -- the servicer -------------------------------------------------------------------------------


class AuditServicer(audit_pb2_grpc.AuditServiceServicer):
    def __init__(
        self,
        app: AccordApplication,
        keys: ChainKeys,
        *,
        seal_seconds: float = 0.0,
        max_message_bytes: int = 0,
        startup: StartupVerification | None = None,
    ) -> None:
        self.app = app
        self.keys = keys
        self.startup = startup
        self.seal_seconds = seal_seconds
        # Half the largest message for the records' bytes: room for the encoding and the chain entries.
        self.page_bytes = max_message_bytes // 2 if max_message_bytes else None

    async def ReadChain(  # noqa: N802 (gRPC method name)
        self, request: audit_pb2.ReadChainRequest, context: grpc.aio.ServicerContext
    ) -> audit_pb2.ReadChainResponse:
        after = position(request.after_position, "after_position")
        stop = position(request.stop_position, "stop_position")
        return await finish_in_thread(read_chain, self.app, after, request.limit, stop, self.page_bytes)

    async def GetChainKeys(  # noqa: N802
        self, request: audit_pb2.GetChainKeysRequest, context: grpc.aio.ServicerContext
    ) -> audit_pb2.GetChainKeysResponse:
        out = audit_pb2.GetChainKeysResponse(
            service=self.app.service,
            previous=[chain_key_message(k) for k in self.keys.previous],
            seal_seconds=self.seal_seconds if self.keys.private is not None else 0.0,
        )
        current = self.keys.current
        if current is not None:
            out.current.CopyFrom(chain_key_message(current))
        return out

    async def VerifyLog(  # noqa: N802
        self, request: audit_pb2.VerifyLogRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[audit_pb2.VerifyLogProgress]:
        steps = verify_log_steps(
            self.app, self.keys.public_keys, from_checkpoint=request.from_checkpoint, startup=self.startup
        )
        while True:
            progress = await finish_in_thread(next, steps, None)
            if progress is None:
                return
            yield progress.message()

    async def AgreementHistory(  # noqa: N802
        self, request: audit_pb2.AgreementHistoryRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[audit_pb2.AuditedEvent]:
        agreement_id = request.agreement_id
        if not agreement_id.strip():
            raise InvalidArgumentError("agreement_id must not be empty")
        stop = await finish_in_thread(self.app.head_position)
        after = 0
        while after < stop:
            found, after = await finish_in_thread(history_page, self.app, agreement_id, after, stop)
            for event in found:
                yield event


def register_audit(
    app: AccordApplication,
    keys: ChainKeys,
    *,
    seal_seconds: float = 0.0,
    max_message_bytes: int = 0,
    startup: StartupVerification | None = None,
) -> Callable[[grpc.aio.Server], str]:
    def register(server: grpc.aio.Server) -> str:
        servicer = AuditServicer(
            app, keys, seal_seconds=seal_seconds, max_message_bytes=max_message_bytes, startup=startup
        )
        audit_pb2_grpc.add_AuditServiceServicer_to_server(servicer, server)
        return SERVICE_NAME

    return register
