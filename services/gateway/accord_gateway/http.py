"""The gateway's HTTP/JSON app (FastAPI): the read model's views, live updates as server-sent
events, and the OpenAPI document; the same auth as every service."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI, Header, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, Field

from accord_gateway.projection import (
    Changes,
    NotVisibleError,
    ReadModel,
    agreement_view,
    department_view,
    portfolio_view,
    service_view,
)
from accord_kit.auth import TokenVerifier
from accord_kit.errors import UnauthenticatedError
from accord_kit.logging import get_logger

log = get_logger("accord.gateway.http")
DASHBOARD = Path(__file__).with_name("static") / "index.html"


class ErrorBody(BaseModel):
    """Every refusal of the gateway: what was wrong, in words."""

    error: str = Field(description="What was wrong")


class InvalidRequestBody(BaseModel):
    """A parameter that does not validate."""

    error: str = Field(description='Always "invalid request"')
    detail: list[dict[str, Any]] = Field(description="Each parameter that does not validate, and why")


Responses = dict[int | str, dict[str, Any]]
UNAUTHENTICATED: Responses = {401: {"model": ErrorBody, "description": "No bearer token, or one that does not verify"}}
INVALID: Responses = {422: {"model": InvalidRequestBody, "description": "A parameter does not validate"}}
NOT_VISIBLE: Responses = {404: {"model": ErrorBody, "description": "Not found, or not visible to the caller"}}
FORBIDDEN: Responses = {403: {"model": ErrorBody, "description": "A department token reading another department"}}
# What every authenticated read may answer besides 200; the OpenAPI document lists each.
READ: Responses = {**UNAUTHENTICATED, **INVALID}


def create_app(
    is_ready: Callable[[], bool],
    model: ReadModel | None = None,
    verifier: TokenVerifier | None = None,
    *,
    not_ready: Callable[[], dict[str, Any]] | None = None,
) -> FastAPI:
    """`not_ready` says why the gateway is not SERVING (e.g. how far each stream has caught up)."""
    app = FastAPI(
        title="Accord gateway",
        version="0.1.0",
        description="Current status of Accord's service level agreements. Send `Authorization: Bearer <token>`.",
    )

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": "invalid request", "detail": exc.errors()}, status_code=422)

    @app.get("/", include_in_schema=False)
    async def dashboard() -> HTMLResponse:
        return HTMLResponse(DASHBOARD.read_text(encoding="utf-8"))

    @app.get("/healthz", summary="Liveness and readiness of the gateway")
    async def healthz() -> dict[str, Any]:
        # Always 200 (the process is alive: a liveness probe must not restart a gateway that is
        # catching up, which would start it over); readiness is the `status` field.
        if is_ready():
            return {"status": "SERVING"}
        return {"status": "NOT_SERVING", **(not_ready() if not_ready is not None else {})}

    if model is None or verifier is None:
        return app

    def caller(authorization: str | None) -> tuple[str, str]:
        try:
            p = verifier.verify(authorization)
        except UnauthenticatedError as e:
            raise HTTPException(status_code=401, detail=str(e)) from None
        return p.role, p.department

    def answer(view: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        try:
            return {"status": view(), "positions": model.positions()}
        except NotVisibleError as e:
            raise HTTPException(status_code=404, detail=str(e)) from None

    @app.get(
        "/v1/agreements/{agreement_id}", summary="An agreement's current status", responses={**READ, **NOT_VISIBLE}
    )
    async def agreement(agreement_id: str, authorization: str | None = Header(default=None)) -> dict[str, Any]:
        role, dept = caller(authorization)
        return answer(lambda: agreement_view(model, agreement_id, role, dept))

    @app.get(
        "/v1/departments/{department_id}",
        summary="A department's agreements, health and balance",
        responses={**READ, **FORBIDDEN, **NOT_VISIBLE},
    )
    async def department(department_id: str, authorization: str | None = Header(default=None)) -> dict[str, Any]:
        role, dept = caller(authorization)
        if role == "department" and dept != department_id:
            raise HTTPException(status_code=403, detail=f"a department token for {dept} may not read {department_id}")
        return answer(lambda: department_view(model, department_id, role, dept))

    @app.get(
        "/v1/services/{service_id}",
        summary="The agreements covering a service and their health",
        responses={**READ, **NOT_VISIBLE},
    )
    async def service(service_id: str, authorization: str | None = Header(default=None)) -> dict[str, Any]:
        role, dept = caller(authorization)
        return answer(lambda: service_view(model, service_id, role, dept))

    @app.get("/v1/portfolio", summary="Counts by state and health, worst objectives first", responses=READ)
    async def portfolio(authorization: str | None = Header(default=None)) -> dict[str, Any]:
        role, dept = caller(authorization)
        return answer(lambda: portfolio_view(model, role, dept))

    @app.get(
        "/v1/watch",
        summary="Server-sent events: the status now, then on every change",
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}}, **READ, **NOT_VISIBLE},
    )
    async def watch(agreement_id: str = "", authorization: str | None = Header(default=None)) -> StreamingResponse:
        role, dept = caller(authorization)
        aid = agreement_id or None

        def current() -> dict[str, Any]:
            if aid is not None:
                return agreement_view(model, aid, role, dept)
            return portfolio_view(model, role, dept)

        changes = Changes(model, aid)  # subscribed before the first look: no change is missed
        try:
            first = answer(current)  # 404 before the stream starts
        except HTTPException:
            changes.close()
            raise

        async def events() -> AsyncIterator[bytes]:
            try:
                last = first["status"]
                yield f"data: {json.dumps(first)}\n\n".encode()
                while True:
                    changed = await changes.wait(15.0)
                    doc = current()
                    if doc != last:
                        last = doc
                        yield f"data: {json.dumps({'status': doc, 'positions': model.positions()})}\n\n".encode()
                    elif not changed:
                        yield b": keep-alive\n\n"
            finally:
                changes.close()

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the service runtime owns SIGTERM/SIGINT
    and stops HTTP in its shutdown order."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def http_task(app: FastAPI, host: str, port: int) -> Callable[[asyncio.Event], Coroutine[Any, Any, None]]:
    """A runtime task that serves `app` until the service stops."""

    async def run(stop: asyncio.Event) -> None:
        server = _Server(uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False, lifespan="off"))
        serving = asyncio.create_task(server.serve())
        log.info("http_started", address=f"http://{host}:{port}")
        await asyncio.wait([serving, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
        server.should_exit = True
        await serving

    return run
