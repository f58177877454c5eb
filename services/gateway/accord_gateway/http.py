"""The gateway's HTTP/JSON app (FastAPI): the read model's views, live updates as server-sent
events, signals in (a SignalBatch as JSON, Alertmanager's webhook; forwarded to metrics, see
intake.py), and the OpenAPI document; the same auth as every service."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import uvicorn
from fastapi import FastAPI, HTTPException, Query, Request, Security
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, Field
from pydantic_core import to_json

from accord.metrics.v1 import signals_pb2
from accord_gateway import schemas
from accord_gateway.explain import ReadWindowSignals, WindowSignals
from accord_gateway.intake import (
    ALERTMANAGER_SOURCE,
    HTTP_SOURCE,
    SERVICE_LABEL,
    IntakeError,
    MetricsForwarder,
    alertmanager_signals,
    json_schema,
    signal_batch,
    with_source,
)
from accord_gateway.projection import (
    Changes,
    KeptAtPositions,
    NotVisibleError,
    ReadModel,
    breach_windows,
    budget_view,
    department_parts,
    portfolio_parts,
    seen_by,
    service_answers,
    visible,
    worst_ranked,
)
from accord_kit.auth import TokenVerifier
from accord_kit.errors import UnauthenticatedError
from accord_kit.logging import get_logger

log = get_logger("accord.gateway.http")
DASHBOARD = Path(__file__).with_name("static") / "index.html"
# Swagger UI's files (fastapi-offline's copy, served by the gateway itself: /docs asks no CDN).
DOCS_STATIC = "/docs/static"
# How long a server-sent events stream stays silent before a keep-alive comment; it also looks
# again then, whatever it was told (a change is judged by the status itself).
KEEP_ALIVE_SECONDS = 15.0


class ErrorBody(BaseModel):
    """Every refusal of the gateway: what was wrong, in words."""

    error: str = Field(description="What was wrong")


class InvalidParameter(BaseModel):
    """One parameter that does not validate (pydantic's error record)."""

    type: str = Field(description="The kind of error, e.g. datetime_from_date_parsing")
    loc: list[str | int] = Field(description='Where: e.g. ["query", "from"]')
    msg: str = Field(description="Why, in words")
    input: Any = Field(default=None, description="The value given")
    ctx: dict[str, Any] | None = Field(default=None, description="Details of the rule it broke")
    url: str | None = Field(default=None, description="pydantic's page about this kind of error")


class InvalidRequestBody(BaseModel):
    """A parameter that does not validate."""

    error: str = Field(description='Always "invalid request"')
    detail: list[InvalidParameter] = Field(description="Each parameter that does not validate, and why")


class IntakeErrorBody(BaseModel):
    """A refused signal intake: what was wrong, and the field when one is to blame."""

    error: str = Field(description="What was wrong, e.g. signals[0].outage.end: must be after start")
    field: str | None = Field(default=None, description="The field to blame, e.g. signals[0].outage.end")


class IntakeAnswer(BaseModel):
    """What metrics made of the signals (as RecordSignalBatchResponse)."""

    accepted: int = Field(description="Stored now: new signal ids, and outages' ends reported as under way")
    duplicates: int = Field(description="Contents already held for their ids (retries): not stored again")
    corrections: int = Field(description="Known ids re-sent with another content: each stored as a correction")


Responses = dict[int | str, dict[str, Any]]
UNAUTHENTICATED: Responses = {401: {"model": ErrorBody, "description": "No bearer token, or one that does not verify"}}
INVALID: Responses = {422: {"model": InvalidRequestBody, "description": "A parameter does not validate"}}
NOT_VISIBLE: Responses = {404: {"model": ErrorBody, "description": "Not found, or not visible to the caller"}}
FORBIDDEN: Responses = {403: {"model": ErrorBody, "description": "A department token reading another department"}}
# What every authenticated read may answer besides 200; the OpenAPI document lists each.
READ: Responses = {**UNAUTHENTICATED, **INVALID}
INTAKE: Responses = {
    400: {"model": IntakeErrorBody, "description": "Not valid (the body, a signal's field, an unknown service)"},
    401: {"model": IntakeErrorBody, "description": "No bearer token, or one that does not verify"},
    403: {"model": IntakeErrorBody, "description": "The caller may not record this service's signals"},
    413: {"model": IntakeErrorBody, "description": "Too large: more than 10,000 signals, or the byte limit"},
    502: {"model": IntakeErrorBody, "description": "The metrics service failed to answer"},
    503: {"model": IntakeErrorBody, "description": "The metrics service cannot be reached now: retry"},
    **INVALID,
}
ALERTMANAGER_PAYLOAD: dict[str, Any] = {
    "type": "object",
    "description": "Alertmanager's webhook payload, version 4 (only the fields read are listed)",
    "required": ["version", "alerts"],
    "properties": {
        "version": {"type": "string", "enum": ["4"]},
        "status": {"type": "string", "enum": ["firing", "resolved"]},
        "alerts": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["status", "startsAt", "fingerprint"],
                "properties": {
                    "status": {"type": "string", "enum": ["firing", "resolved"]},
                    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                    "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
                    "startsAt": {"type": "string", "format": "date-time"},
                    "endsAt": {"type": "string", "format": "date-time"},
                    "fingerprint": {"type": "string"},
                },
            },
        },
    },
}
BEARER = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    bearerFormat="JWT",
    description="An Accord token (EdDSA JWT): `make run` prints development tokens",
)


# -- department, service and portfolio answers joined from each agreement's kept JSON ----------------
# Each is the bytes `schemas.<View>Answer.model_validate({"status": view, "positions": …})
# .model_dump_json(by_alias=True)` gives — the fields in the schema's order, compact — with each
# agreement's brief and worst objectives as its kept parts (`ReadModel.parts`) wrote them; and
# the status's own bytes beside them.


def _positions_json(positions: dict[str, int]) -> bytes:
    return schemas.Positions.model_validate(positions).model_dump_json().encode()


def _answer_json(status: list[bytes], positions: dict[str, int]) -> tuple[bytes, bytes]:
    """The answer's JSON, and its status's alone (what a watcher judges a change by), from the
    status object's members."""
    return _answer_json_of(b"".join((b"{", *status, b"}")), positions)


def _answer_json_of(status: bytes, positions: dict[str, int]) -> tuple[bytes, bytes]:
    return b"".join((b'{"status":', status, b',"positions":', _positions_json(positions), b"}")), status


def agreement_json(model: ReadModel, agreement_id: str, role: str, department: str) -> tuple[bytes, bytes]:
    """An agreement's answer from its kept JSON (validated against `schemas.AgreementStatus` when
    built) and the positions now; `NotVisibleError` when the caller may not see it."""
    kept = model.answer(agreement_id)
    if kept is None or not visible(kept.summary, role, department):
        raise NotVisibleError(f"no agreement {agreement_id!r} visible to this caller")
    return _answer_json_of(model.json(kept), model.positions())


def department_json(
    model: ReadModel, department_id: str, role: str, department: str, positions: dict[str, int]
) -> tuple[bytes, bytes]:
    p = department_parts(model, department_id, role, department)
    return _answer_json(
        [
            b'"department_id":', to_json(p.department_id),
            b',"as_provider":[', b",".join(model.parts(a).brief_json for a in p.as_provider),
            b'],"as_customer":[', b",".join(model.parts(a).brief_json for a in p.as_customer),
            b'],"health":', to_json(p.health),
            b',"balance":', to_json(p.balance),
            b',"balance_provisional":', to_json(p.balance_provisional),
        ],
        positions,
    )  # fmt: skip


def service_json(
    model: ReadModel, service_id: str, role: str, department: str, positions: dict[str, int]
) -> tuple[bytes, bytes]:
    rows = service_answers(model, service_id, role, department)
    return _answer_json(
        [
            b'"service_id":',
            to_json(service_id),
            b',"agreements":[',
            b",".join(model.parts(a).brief_json for a in rows),
            b"]",
        ],
        positions,
    )


def portfolio_json(model: ReadModel, role: str, department: str, positions: dict[str, int]) -> tuple[bytes, bytes]:
    p = portfolio_parts(model, role, department)
    worst = [model.parts(p.rows[i]).worst_json[j] for i, j in worst_ranked(model, p.rows)]
    return _answer_json(
        [
            b'"agreements":', to_json(len(p.rows)),
            b',"by_state":', to_json(p.by_state),
            b',"by_health":', to_json(p.by_health),
            b',"worst_objectives":[', b",".join(worst),
            b'],"list":[', b",".join(model.parts(a).brief_json for a in p.listed), b"]",
        ],
        positions,
    )  # fmt: skip


def create_app(
    is_ready: Callable[[], bool],
    model: ReadModel | None = None,
    verifier: TokenVerifier | None = None,
    *,
    not_ready: Callable[[], dict[str, Any]] | None = None,
    window_signals: ReadWindowSignals | None = None,
    metrics: MetricsForwarder | None = None,
    max_body_bytes: int = 16 * 1024 * 1024,
) -> FastAPI:
    """`not_ready` says why the gateway is not SERVING (e.g. how far each stream has caught up);
    `window_signals` reads a window's outage signals from metrics (breach timelines); `metrics`
    (when given) serves the signal intake, bodies up to `max_body_bytes`."""
    app = FastAPIOffline(
        title="Accord gateway",
        version="0.1.0",
        description=(
            "Current status of Accord's service level agreements. Send `Authorization: Bearer <token>` "
            '("Authorize" here). Decimals and instants are strings; instants are RFC 3339.'
        ),
        redoc_url=None,
        static_url=DOCS_STATIC,
        swagger_ui_parameters={"persistAuthorization": True},
    )

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        detail = [{k: v for k, v in e.items() if k in InvalidParameter.model_fields} for e in exc.errors()]
        body = {"error": "invalid request", "detail": jsonable_encoder(detail, custom_encoder={Exception: str})}
        return JSONResponse(body, status_code=422)

    @app.get("/", include_in_schema=False)
    async def dashboard() -> HTMLResponse:
        return HTMLResponse(DASHBOARD.read_text(encoding="utf-8"))

    @app.get(
        "/healthz",
        summary="Liveness and readiness of the gateway",
        response_model=schemas.Health,
        response_model_exclude_none=True,
    )
    async def healthz() -> dict[str, Any]:
        # Always 200 (the process is alive: a liveness probe must not restart a gateway that is
        # catching up, which would start it over); readiness is the `status` field.
        if is_ready():
            return {"status": "SERVING"}
        return {"status": "NOT_SERVING", **(not_ready() if not_ready is not None else {})}

    if model is None or verifier is None:
        return app

    async def caller(
        request: Request, _: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)] = None
    ) -> tuple[str, str]:
        # The header as sent (not as HTTPBearer parsed it): the verifier names what is wrong with it.
        # A coroutine, so FastAPI calls it on the loop rather than through its thread pool (the
        # check is a few µs: verified tokens are cached).
        try:
            p = verifier.verify(request.headers.get("authorization"))
        except UnauthenticatedError as e:
            raise HTTPException(status_code=401, detail=str(e)) from None
        return p.role, p.department

    def answer(view: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        try:
            return {"status": view(), "positions": model.positions()}
        except NotVisibleError as e:
            raise HTTPException(status_code=404, detail=str(e)) from None

    # Department, service and portfolio answers as their JSON, kept while the model's positions
    # stand still and shared by the callers who see the same agreements (as over gRPC).
    kept_views: KeptAtPositions[tuple[bytes, bytes]] = KeptAtPositions(model)
    app.state.kept_views = kept_views

    def kept_answer(key: tuple[str, str, str], build: Callable[[dict[str, int]], tuple[bytes, bytes]]) -> Response:
        try:
            return Response(kept_views.get(key, build)[0], media_type="application/json")
        except NotVisibleError as e:
            raise HTTPException(status_code=404, detail=str(e)) from None

    @app.get(
        "/v1/agreements/{agreement_id}",
        summary="An agreement's current status",
        response_model=schemas.AgreementAnswer,
        responses={**READ, **NOT_VISIBLE},
    )
    async def agreement(agreement_id: str, who: tuple[str, str] = Security(caller)) -> Response:
        try:
            return Response(agreement_json(model, agreement_id, *who)[0], media_type="application/json")
        except NotVisibleError as e:
            raise HTTPException(status_code=404, detail=str(e)) from None

    @app.get(
        "/v1/agreements/{agreement_id}/objectives/{objective_id}/budget",
        summary="An objective's error budget remaining over time, window by window",
        description=(
            "Every evaluation metrics published for the objective's windows (each change of an open window, its "
            "closing, a restatement), at most 240 points a window for the 24 most recent windows. `from` and `to` "
            "(RFC 3339 with an offset) keep the windows that overlap [from, to) and their points in [from, to]. Times "
            "are UTC; show them in `time_zone`, the agreement's."
        ),
        response_model=schemas.BudgetAnswer,
        responses={**READ, **NOT_VISIBLE},
    )
    async def budget(
        agreement_id: str,
        objective_id: str,
        who: tuple[str, str] = Security(caller),
        start: Annotated[datetime | None, Query(alias="from", description="RFC 3339 with an offset")] = None,
        end: Annotated[datetime | None, Query(alias="to", description="RFC 3339 with an offset")] = None,
    ) -> dict[str, Any]:
        for name, value in (("from", start), ("to", end)):
            if value is not None and value.tzinfo is None:
                raise RequestValidationError(
                    [
                        {
                            "type": "timezone_aware",
                            "loc": ["query", name],
                            "msg": "needs a UTC offset",
                            "input": str(value),
                        }
                    ]
                )
        return answer(lambda: budget_view(model, agreement_id, objective_id, *who, start, end))

    @app.get(
        "/v1/agreements/{agreement_id}/objectives/{objective_id}/breaches",
        summary="An objective's breach timeline: each breached window, its breaches and the outages in it",
        description=(
            "The outage and maintenance signals of each breached window come from metrics "
            "(`MetricsService.ListWindowSignals`) at the time of the call; when metrics does not answer, "
            "`signals_error` says why and the rest of the timeline is still given."
        ),
        response_model=schemas.BreachesAnswer,
        responses={**READ, **NOT_VISIBLE},
    )
    async def breaches(agreement_id: str, objective_id: str, who: tuple[str, str] = Security(caller)) -> dict[str, Any]:
        doc = answer(lambda: breach_windows(model, agreement_id, objective_id, *who))

        async def explain(w: dict[str, Any]) -> None:
            found = (
                await window_signals(agreement_id, objective_id, w["window_start"])
                if window_signals is not None
                else WindowSignals(error="this gateway is not connected to metrics")
            )
            w["signals"], w["signals_truncated"], w["signals_error"] = found.signals, found.truncated, found.error

        await asyncio.gather(*(explain(w) for w in doc["status"]["windows"]))
        return doc

    @app.get(
        "/v1/departments/{department_id}",
        summary="A department's agreements, health and balance",
        response_model=schemas.DepartmentAnswer,
        responses={**READ, **FORBIDDEN, **NOT_VISIBLE},
    )
    async def department(department_id: str, who: tuple[str, str] = Security(caller)) -> Response:
        role, dept = who
        if role == "department" and dept != department_id:  # before a kept answer is looked up
            raise HTTPException(status_code=403, detail=f"a department token for {dept} may not read {department_id}")
        return kept_answer(
            ("department", department_id, ""), partial(department_json, model, department_id, role, dept)
        )

    @app.get(
        "/v1/services/{service_id}",
        summary="The agreements covering a service and their health",
        response_model=schemas.ServiceAnswer,
        responses={**READ, **NOT_VISIBLE},
    )
    async def service(service_id: str, who: tuple[str, str] = Security(caller)) -> Response:
        return kept_answer(("service", service_id, seen_by(*who)), partial(service_json, model, service_id, *who))

    @app.get(
        "/v1/portfolio",
        summary="Counts by state and health, worst objectives first",
        response_model=schemas.PortfolioAnswer,
        responses=READ,
    )
    async def portfolio(who: tuple[str, str] = Security(caller)) -> Response:
        return kept_answer(("portfolio", "", seen_by(*who)), partial(portfolio_json, model, *who))

    @app.get(
        "/v1/watch",
        summary="Server-sent events: the status now, then on every change",
        description=(
            "Each event's `data` is a JSON document: `{status, positions}` as `GET /v1/agreements/{id}` answers "
            "with `agreement_id`, else as `GET /v1/portfolio`. Keep-alive comments every 15 s."
        ),
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {"schema": {"type": "string"}}}}, **READ, **NOT_VISIBLE},
    )
    async def watch(who: tuple[str, str] = Security(caller), agreement_id: str = "") -> StreamingResponse:
        role, dept = who
        aid = agreement_id or None
        portfolio_key = ("portfolio", "", seen_by(role, dept))

        def current() -> tuple[bytes, bytes]:
            """The answer's JSON now (as the GET answers it) and its status's (a change is judged
            by it, not by the positions)."""
            if aid is None:  # the kept portfolio, shared with every watcher and GET who sees the same
                return kept_views.get(portfolio_key, partial(portfolio_json, model, role, dept))
            return agreement_json(model, aid, role, dept)

        changes = Changes(model, aid)  # subscribed before the first look: no change is missed
        try:
            first, last = current()
        except NotVisibleError as e:  # 404 before the stream starts
            changes.close()
            raise HTTPException(status_code=404, detail=str(e)) from None

        async def events() -> AsyncIterator[bytes]:
            nonlocal last
            try:
                yield b"data: " + first + b"\n\n"
                while True:
                    changed = await changes.wait(KEEP_ALIVE_SECONDS)
                    body, status = current()
                    if status != last:
                        last = status
                        yield b"data: " + body + b"\n\n"
                    elif not changed:
                        yield b": keep-alive\n\n"
            finally:
                changes.close()

        return StreamingResponse(events(), media_type="text/event-stream")

    if metrics is not None:
        add_intake(app, metrics, max_body_bytes)
    return app


def add_intake(app: FastAPI, metrics: MetricsForwarder, max_body_bytes: int) -> None:
    """`POST /v1/signals` and `POST /v1/intake/alertmanager`: forwarded to metrics'
    RecordSignalBatch with the caller's token (see intake.py)."""

    @app.exception_handler(IntakeError)
    async def refused(request: Request, exc: IntakeError) -> JSONResponse:
        headers = {"Retry-After": "5"} if exc.status == 503 else None
        log.info("intake_refused", path=request.url.path, status=exc.status, error=exc.error)
        return JSONResponse(exc.body(), status_code=exc.status, headers=headers)

    async def body_of(request: Request) -> bytes:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > max_body_bytes:
            raise IntakeError(413, f"the body: {declared} bytes; at most {max_body_bytes}")
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > max_body_bytes:
                raise IntakeError(413, f"the body: more than {max_body_bytes} bytes")
        return body

    defs: dict[str, Any] = {}
    batch_schema = json_schema(signals_pb2.SignalBatch.DESCRIPTOR, defs)
    defs["SignalBatch"] = batch_schema
    defs["AlertmanagerPayload"] = ALERTMANAGER_PAYLOAD

    def request_body(name: str) -> dict[str, Any]:
        ref = {"$ref": f"#/components/schemas/{name}"}
        return {"requestBody": {"required": True, "content": {"application/json": {"schema": ref}}}}

    @app.post(
        "/v1/signals",
        summary="Record signals: a SignalBatch as JSON, answered as RecordSignalBatch",
        description=(
            "The body is `accord.metrics.v1.SignalBatch` in its JSON form (proto or JSON field names; "
            "instants RFC 3339; decimal strings may be plain numbers). Forwarded to the metrics service "
            "with the caller's bearer token: the same validation, the same who-may-record rule, the same "
            'answer. A signal that names no provenance source is recorded with source "http". '
            "`correction_reason` (optional, at most 500 printable characters) is the reason kept with the "
            "corrections the batch brings (known signal ids with another content)."
        ),
        response_model=IntakeAnswer,
        responses=INTAKE,
        openapi_extra=request_body("SignalBatch"),
    )
    async def record_signals(
        request: Request, _: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)] = None
    ) -> dict[str, int]:
        signals, reason = signal_batch(await body_of(request))
        outcome = await metrics.record(request.headers.get("authorization"), with_source(signals, HTTP_SOURCE), reason)
        log.info("signals_forwarded", source=HTTP_SOURCE, signals=len(signals), **outcome)
        return outcome

    @app.post(
        "/v1/intake/alertmanager",
        summary="Alertmanager's webhook receiver: each alert an outage of its service",
        description=(
            "A firing alert is an outage under way from `startsAt`; its resolved notification ends it at "
            f"`endsAt`. The service is the alert's `{SERVICE_LABEL}` label, else the `service` parameter. "
            "Signal id: the alert's fingerprint and `startsAt`; provenance source "
            f'"{ALERTMANAGER_SOURCE}", reference the fingerprint. Repeated notifications are duplicates.'
        ),
        response_model=IntakeAnswer,
        responses=INTAKE,
        openapi_extra=request_body("AlertmanagerPayload"),
    )
    async def alertmanager(
        request: Request,
        service: str = Query(default="", description=f"the service, for alerts without an {SERVICE_LABEL} label"),
        _: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)] = None,
    ) -> dict[str, int]:
        signals = alertmanager_signals(await body_of(request), service)
        outcome = await metrics.record(request.headers.get("authorization"), signals)
        log.info("signals_forwarded", source=ALERTMANAGER_SOURCE, signals=len(signals), **outcome)
        return outcome

    generate = app.openapi

    def openapi() -> dict[str, Any]:
        doc = generate()
        doc.setdefault("components", {}).setdefault("schemas", {}).update(defs)
        return doc

    app.openapi = openapi  # type: ignore[method-assign]


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the service runtime owns SIGTERM/SIGINT
    and stops HTTP in its shutdown order."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def http_task(
    app: FastAPI, host: str, port: int, *, metrics: MetricsForwarder | None = None
) -> Callable[[asyncio.Event], Coroutine[Any, Any, None]]:
    """A runtime task that serves `app` until the service stops (then closes its channel to metrics)."""

    async def run(stop: asyncio.Event) -> None:
        server = _Server(uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False, lifespan="off"))
        serving = asyncio.create_task(server.serve())
        log.info("http_started", address=f"http://{host}:{port}")
        await asyncio.wait([serving, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
        server.should_exit = True
        await serving
        if metrics is not None:
            await metrics.close()

    return run
