"""Snapshots of the gateway's read model: the whole model with each stream's position, written
to `GATEWAY_SNAPSHOT_PATH` every `GATEWAY_SNAPSHOT_SECONDS` (when something changed) and once
more at stop, loaded at start so the consumers resume from those positions instead of
replaying every stream.

A snapshot is JSON (`{"format": FORMAT, "written_at": …, "state": …}`), written to a
temporary file beside the target, flushed to disk, then renamed over it: a reader sees the
previous snapshot or the new one, never half of one. A snapshot that cannot be read, does not
parse, or is of another format version is ignored with a warning: the read model is then
rebuilt from the streams, as without one. The snapshot is a cache, never a record: deleting
it costs a full rebuild, nothing else."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from accord_gateway.projection import ReadModel
from accord_kit.logging import get_logger
from accord_kit.threads import finish_in_thread

log = get_logger("accord.gateway.snapshot")
# Bump when the read model's shape or what it keeps of an event changes: older snapshots are
# then ignored (a rebuild). 2: statements keep the totals billing states on assessments,
# adjustments and resolved disputes (a format-1 model ignored them). 3: statements keep the
# totals of StatementTotalsStated (an open statement's fee changed; a format-2 model ignored it).
# 4: the service registry (ServiceRegistered: each service's provider), which says what an
# agreement naming no service measures (a format-3 model ignored it).
FORMAT = 4


def write_snapshot(model: ReadModel, path: Path) -> dict[str, int]:
    """Write the model's snapshot to `path` atomically; returns the positions it holds."""

    def serialise(state: dict[str, Any]) -> bytes:
        doc = {"format": FORMAT, "written_at": datetime.now(UTC).isoformat(), "state": state}
        return json.dumps(doc, separators=(",", ":")).encode()

    body, positions = model.snapshot(serialise)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(body)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass
    return positions


def load_snapshot(model: ReadModel, path: Path) -> bool:
    """Restore the model from the snapshot at `path`; False (with a warning, the model left
    empty) when there is none usable."""
    if not path.exists():
        log.info("snapshot_absent", path=str(path))
        return False
    started = time.monotonic()
    try:
        doc = json.loads(path.read_bytes())
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            found = doc.get("format") if isinstance(doc, dict) else None
            log.warning("snapshot_ignored", path=str(path), reason=f"format {found!r}, not {FORMAT}")
            return False
        model.restore(doc["state"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        log.warning("snapshot_ignored", path=str(path), reason=f"unreadable: {type(e).__name__}: {e}")
        model.restore({"positions": {}, "agreements": {}, "statement_agreement": {}, "services": {}, "series": []})
        return False
    log.info(
        "snapshot_loaded",
        path=str(path),
        positions=model.positions(),
        written_at=doc.get("written_at", ""),
        seconds=round(time.monotonic() - started, 3),
    )
    return True


def snapshot_task(
    model: ReadModel, path: Path, interval: float
) -> tuple[Callable[[asyncio.Event], Coroutine[Any, Any, None]], Callable[[], Coroutine[Any, Any, None]]]:
    """A runtime task writing a snapshot every `interval` seconds when the positions moved,
    and the stop hook writing the last one once the consumers have stopped."""
    written: dict[str, dict[str, int]] = {"positions": model.positions()}

    async def write(why: str) -> None:
        if model.positions() == written["positions"]:
            return
        started = time.monotonic()
        try:
            positions = await finish_in_thread(write_snapshot, model, path)
        except Exception as e:
            log.warning("snapshot_failed", path=str(path), error=f"{type(e).__name__}: {e}")
            return
        written["positions"] = positions
        log.info("snapshot_written", why=why, positions=positions, seconds=round(time.monotonic() - started, 3))

    async def run(stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=interval)
            except TimeoutError:
                await write("periodic")

    async def at_stop() -> None:
        await write("stop")

    return run, at_stop
