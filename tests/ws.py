"""A bare WebSocket client speaking both GraphQL subscription protocols message by message,
so tests can see close codes, refusals and errors exactly as the server sent them."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.api import EVENTS, GRAPHQL_TRANSPORT_WS, LEGACY_GRAPHQL_WS

__all__ = ["GRAPHQL_TRANSPORT_WS", "LEGACY_GRAPHQL_WS", "Closed", "RawSocket"]


class Closed(Exception):
    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"closed with {code} {reason!r}")
        self.code = code
        self.reason = reason


class RawSocket:
    def __init__(self, ws: ClientConnection, protocol: str) -> None:
        self.ws = ws
        self.protocol = protocol

    @classmethod
    async def open(cls, url: str, protocol: str, **kwargs: Any) -> RawSocket:
        ws = await connect(url, subprotocols=[protocol], max_size=None, **kwargs)  # type: ignore[list-item]
        return cls(ws, protocol)

    @classmethod
    async def connected(cls, url: str, protocol: str, key: str) -> RawSocket:
        """Opened and acknowledged (raises Closed if the server refused it)."""
        socket = await cls.open(url, protocol)
        await socket.init(key)
        message = await socket.receive()
        if message["type"] == "connection_error":  # legacy graphql-ws: the close follows
            raise await socket.closed()
        assert message["type"] == "connection_ack", message
        return socket

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(message))

    async def init(self, key: str) -> None:
        await self.send({"type": "connection_init", "payload": {"Authorization": f"Bearer {key}"}})

    async def subscribe(self, operation_id: str, job_id: str) -> None:
        payload = {"query": EVENTS, "variables": {"id": job_id}}
        kind = "subscribe" if self.protocol == GRAPHQL_TRANSPORT_WS else "start"
        await self.send({"id": operation_id, "type": kind, "payload": payload})

    async def receive(self) -> dict[str, Any]:
        """The next message other than keep-alives; raises Closed when the server closed."""
        while True:
            try:
                raw = await self.ws.recv()
            except ConnectionClosed as exc:
                raise Closed(
                    exc.rcvd.code if exc.rcvd else None, exc.rcvd.reason if exc.rcvd else ""
                ) from None
            message: dict[str, Any] = json.loads(raw)
            if message.get("type") not in ("ka", "ping", "pong"):
                return message

    async def receive_for(self, operation_id: str) -> dict[str, Any]:
        while True:
            message = await self.receive()
            if message.get("id") == operation_id:
                return message

    async def closed(self, timeout: float = 10.0) -> Closed:
        """Wait (up to ``timeout``) for the server to close the socket; how."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    await self.receive()
        except Closed as closed:
            return closed
        except TimeoutError:
            raise AssertionError(f"the server did not close the socket in {timeout} s") from None

    async def aclose(self) -> None:
        await self.ws.close()
