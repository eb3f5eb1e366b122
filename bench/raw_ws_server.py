"""Baseline for the stream benchmark: a bare Starlette WebSocket endpoint under uvicorn.

It speaks just enough graphql-transport-ws (connection_init -> connection_ack, subscribe ->
next ... complete) for the same client to measure it, and sends frames shaped like jobql's
`next` messages. The subscribe variables say what to send: ``sizes``, the exact byte size of
each frame (the text field is padded to reach it). No GraphQL, no database, no event bus:
what is left is the floor of Starlette + uvicorn + websockets on this machine.

Run: .venv/bin/python bench/raw_ws_server.py --port 8765  (binds 127.0.0.1 only)
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

MAX_FRAMES = 100_000
MAX_FRAME_BYTES = 1_000_000


def next_frame(sub_id: str, seq: int, size: int) -> str:
    """A `next` message like jobql's V1OutputDelta, padded to ``size`` bytes."""
    event: dict[str, Any] = {"__typename": "V1OutputDelta", "seq": seq, "text": ""}
    message = {"id": sub_id, "type": "next", "payload": {"data": {"jobEvents": event}}}
    pad = size - len(json.dumps(message))
    if pad > 0:
        event["text"] = "x" * pad
    return json.dumps(message)


async def stream(websocket: WebSocket, sub_id: str, sizes: list[int]) -> None:
    for seq, size in enumerate(sizes[:MAX_FRAMES], start=1):
        await websocket.send_text(next_frame(sub_id, seq, min(int(size), MAX_FRAME_BYTES)))
    await websocket.send_text(json.dumps({"id": sub_id, "type": "complete"}))


async def graphql_ws(websocket: WebSocket) -> None:
    await websocket.accept(subprotocol="graphql-transport-ws")
    try:
        while True:
            message = json.loads(await websocket.receive_text())
            kind = message.get("type")
            if kind == "connection_init":
                await websocket.send_text(json.dumps({"type": "connection_ack"}))
            elif kind == "ping":
                await websocket.send_text(json.dumps({"type": "pong"}))
            elif kind == "subscribe":
                variables = message.get("payload", {}).get("variables") or {}
                await stream(websocket, str(message["id"]), list(variables.get("sizes", [])))
    except WebSocketDisconnect:
        pass


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


app = Starlette(
    routes=[WebSocketRoute("/v1/graphql", graphql_ws), Route("/healthz", healthz)],
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    # The same uvicorn defaults `jobql serve` uses (uvloop/httptools when installed).
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="info")


if __name__ == "__main__":
    main()
