"""A scripted chorus server on loopback, for behaviour a real broker does not produce on demand."""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable, List, Optional

from chorus.protocol import (
    PREAMBLE,
    ErrorFrame,
    Frame,
    FrameDecoder,
    Hello,
    Welcome,
    encode,
)

# Time a scripted step may wait for the client.
STEP_TIMEOUT = 5.0


class Peer:
    """The server side of one accepted connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.decoder = FrameDecoder(expect_preamble=True)

    async def handshake(self, max_payload: int = 65_536) -> Hello:
        """Read the client's preamble and HELLO and answer with a preamble and WELCOME."""
        hello = await self.recv()
        assert isinstance(hello, Hello)
        self.send_raw(PREAMBLE)
        self.send(Welcome(1, 1 << 20, "fake/0", max_payload, 0))
        return hello

    async def recv(self) -> Frame:
        """Return the next frame from the client, failing after STEP_TIMEOUT."""
        return await asyncio.wait_for(self._recv(), STEP_TIMEOUT)

    async def _recv(self) -> Frame:
        while True:
            frame = self.decoder.next_frame()
            if frame is not None:
                return frame
            data = await self.reader.read(65_536)
            if not data:
                raise ConnectionError("client closed the connection")
            self.decoder.feed(data)

    async def recv_until_closed(self) -> List[Frame]:
        """Return every frame the client sends until it closes the connection."""
        frames: List[Frame] = []
        try:
            while True:
                frames.append(await self.recv())
        except ConnectionError:
            return frames

    def send(self, frame: Frame) -> None:
        self.writer.write(encode(frame))

    def send_raw(self, data: bytes) -> None:
        self.writer.write(data)

    def send_error(self, frame: ErrorFrame) -> None:
        self.send(frame)

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except OSError:
            pass


Script = Callable[[Peer], Awaitable[None]]


class FakeServer:
    """Runs ``scripts[i]`` for the i-th accepted connection; later connections are closed."""

    def __init__(self, *scripts: Script) -> None:
        self.scripts = list(scripts)
        self.accepted = 0
        self.errors: List[BaseException] = []
        self.done = asyncio.Event()
        self._server: Optional[asyncio.Server] = None
        self._tasks: List["asyncio.Task[None]"] = []

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def __aenter__(self) -> FakeServer:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.errors:
            raise self.errors[0]

    async def stop(self) -> None:
        """Stop accepting connections."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        index = self.accepted
        self.accepted += 1
        peer = Peer(reader, writer)
        if index >= len(self.scripts):
            await peer.close()
            return
        task = asyncio.current_task()
        assert task is not None
        self._tasks.append(task)
        try:
            await self.scripts[index](peer)
        except asyncio.CancelledError:
            # Ending quietly: asyncio logs an error for a cancelled connection handler task.
            pass
        except BaseException as e:  # noqa: BLE001 - reported by __aexit__
            self.errors.append(e)
        finally:
            await peer.close()
            if index == len(self.scripts) - 1:
                self.done.set()
