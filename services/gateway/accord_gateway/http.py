"""The gateway's HTTP/JSON app (FastAPI). For now: liveness and readiness of the gateway."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import uvicorn
from fastapi import FastAPI

from accord_kit.logging import get_logger

log = get_logger("accord.gateway.http")


def create_app(is_ready: Callable[[], bool]) -> FastAPI:
    app = FastAPI(
        title="Accord gateway",
        version="0.1.0",
        description="Current status of Accord's service level agreements.",
    )

    @app.get("/healthz", summary="Liveness and readiness of the gateway")
    async def healthz() -> dict[str, Any]:
        return {"status": "SERVING" if is_ready() else "NOT_SERVING"}

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
