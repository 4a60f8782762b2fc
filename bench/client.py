"""A minimal HTTP/1.1 keep-alive client on asyncio streams, for latency measurements.

aiohttp's client costs more per request than the servers it measures; this one
costs little and times exactly what the wire does (first body byte, first chunk).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Reply:
    status: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class StreamTiming:
    """Seconds from the request's first byte to: the first body byte, the first byte after the id line."""

    status: int
    first_byte: float
    first_output: float | None  # after the id line (node/ceiling) or None for a direct service call
    body: bytes = field(repr=False, default=b"")


class Connection:
    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def open(self) -> Connection:
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        return self

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()
            self._writer = None

    def _send(self, method: str, path: str, body: bytes | None) -> None:
        assert self._writer is not None
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        self._writer.write(head.encode() + b"\r\n" + (body or b""))

    async def _head(self) -> tuple[int, dict[str, str]]:
        assert self._reader is not None
        raw = await self._reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        return status, headers

    async def request(self, method: str, path: str, body: bytes | None = None) -> Reply:
        if self._writer is None:
            await self.open()
        assert self._reader is not None
        self._send(method, path, body)
        status, headers = await self._head()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int((await self._reader.readline()).split(b";")[0], 16)
                data = await self._reader.readexactly(size + 2)
                if size == 0:
                    break
                parts.append(data[:-2])
            payload = b"".join(parts)
        else:
            payload = await self._reader.readexactly(int(headers.get("content-length", "0")))
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return Reply(status, payload)

    async def stream(self, path: str, body: bytes, id_line: bool) -> StreamTiming:
        """POST and read a chunked answer, timing the first body byte and the first output byte."""
        if self._writer is None:
            await self.open()
        assert self._reader is not None
        start = time.perf_counter()
        self._send("POST", path, body)
        status, headers = await self._head()
        first_byte: float | None = None
        first_output: float | None = None
        received = bytearray()
        if headers.get("transfer-encoding", "").lower() != "chunked":
            payload = await self._reader.readexactly(int(headers.get("content-length", "0")))
            now = time.perf_counter() - start
            return StreamTiming(status, now, now if id_line else None, payload)
        while True:
            size = int((await self._reader.readline()).split(b";")[0], 16)
            data = await self._reader.readexactly(size + 2)
            if size == 0:
                break
            now = time.perf_counter() - start
            if first_byte is None:
                first_byte = now
            received += data[:-2]
            if id_line and first_output is None:
                newline = received.find(b"\n")
                if newline != -1 and len(received) > newline + 1:
                    first_output = now  # output bytes past the id line have arrived
        assert first_byte is not None
        return StreamTiming(status, first_byte, first_output, bytes(received))
