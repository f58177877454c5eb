"""The stream reader the end-to-end tests check exactly-once delivery with: it waits out a
JetStream API that does not answer for a while (a cluster between stream leaders after a node
thawed), rather than failing the test that reads."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

from accord.events.v1 import events_pb2
from accord_kit.nats_util import connect
from accord_kit.testing.nats import NatsServer
from accord_kit.testing.streams import read_stream


async def test_read_stream_asks_again_when_the_jetstream_api_does_not_answer(tmp_path: Path) -> None:
    server = NatsServer(tmp_path / "nats").start()
    assert server.proc is not None
    pid = server.proc.pid
    nc = await connect(server.url, name="stream-reader-test")
    try:
        js = nc.jetstream()
        await js.add_stream(name="FROZEN", subjects=["accord.frozen.>"])
        for position in (1, 2, 3):
            env = events_pb2.EventEnvelope(event_id=f"t:x:{position}", position=position)
            await js.publish("accord.frozen.event", env.SerializeToString())
        os.kill(pid, signal.SIGSTOP)  # the server answers nothing until it is continued, 6 s on
        asyncio.get_running_loop().call_later(6, os.kill, pid, signal.SIGCONT)
        messages = await read_stream(nc, "FROZEN", timeout=30)
        assert [env.position for _, env in messages] == [1, 2, 3]
    finally:
        os.kill(pid, signal.SIGCONT)
        await nc.close()
        server.stop()
