"""Strict JSON for what clients send: HTTP bodies, GET variables and WebSocket messages are
checked before GraphQL sees them, so a malformed one is answered 400 (or closes the socket
with 4400), never an exception deep inside a parser.

Python's `json` accepts NaN and Infinity (which no JSON reader takes back), turns `1e999`
into infinity, raises `ValueError` on integers over 4300 digits and `RecursionError` on deep
nesting, and keeps escaped lone surrogates (`"\\ud800"`) that no database can store.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
from collections.abc import Iterator
from itertools import accumulate
from typing import Any
from urllib.parse import parse_qsl

from graphql import GraphQLSyntaxError, Source, TokenKind
from graphql.language import Lexer
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jobql.http.graphql_response import response_content_type
from jobql.http.request_id import request_id_of
from jobql.services.inputs import MAX_INT_DIGITS, MAX_JSON_DEPTH

log = logging.getLogger(__name__)

# The GraphQL envelope counts too: a task input sits 3 levels deep in a request body.
MAX_DEPTH = MAX_JSON_DEPTH

BAD_REQUEST = "BAD_REQUEST"
WS_BAD_REQUEST = 4400

_STRING = re.compile(r'"(?:[^"\\]|\\.)*+"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}
# A \u escape of a UTF-16 surrogate; only then can a parsed string hold a lone one.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_LONG_DIGITS = re.compile(rf"\d{{{MAX_INT_DIGITS + 1},}}")
# Only a number with a long mantissa or an exponent of 3+ digits can overflow to infinity.
_BIG_EXPONENT = re.compile(r"[eE][+-]?\d{3,}")


class BadJson(ValueError):
    """Why a client's JSON was refused. The message quotes nothing the client sent, so it
    is safe to send back and to log."""


def _refuse_constant(name: str) -> Any:
    raise BadJson("NaN and Infinity are not JSON numbers.")


def _parse_int(digits: str) -> int:
    if len(digits) - digits.startswith("-") > MAX_INT_DIGITS:
        raise BadJson(f"Integers may have at most {MAX_INT_DIGITS} digits.")
    return int(digits)


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise BadJson("Numbers must be finite.")
    return value


def depth_of(text: str) -> int:
    """The nesting depth of a *valid* JSON document (on valid JSON, the string pattern
    never backtracks across strings, so this is linear)."""
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0)


def _strings(value: Any) -> Iterator[str]:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def has_lone_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def parse_json(data: bytes | str) -> Any:
    """Parse a client's JSON document strictly; raises BadJson (a ValueError) on anything
    Python's parser would choke on later or keep but no JSON reader takes back. Plain
    syntax errors raise `json.JSONDecodeError` as usual."""
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise BadJson("The body is not valid UTF-8.") from None
    else:
        text = data
    # The number hooks cost a Python call per number: only when a number could need them.
    checked = bool(_LONG_DIGITS.search(text) or _BIG_EXPONENT.search(text))
    try:
        value = json.loads(
            text,
            parse_constant=_refuse_constant,
            parse_int=_parse_int if checked else None,
            parse_float=_parse_float if checked else None,
        )
    except RecursionError:
        raise BadJson(f"JSON may nest arrays and objects at most {MAX_DEPTH} deep.") from None
    if text.count("[") + text.count("{") > MAX_DEPTH and depth_of(text) > MAX_DEPTH:
        raise BadJson(f"JSON may nest arrays and objects at most {MAX_DEPTH} deep.")
    if _SURROGATE_ESCAPE.search(text) and any(has_lone_surrogate(s) for s in _strings(value)):
        raise BadJson("Strings must not contain lone UTF-16 surrogates.")
    return value


def check_document(query: str, max_tokens: int) -> None:
    """Refuse a GraphQL document with an integer literal too long to convert: graphql-core
    raises ValueError on it while validating (an INTERNAL error), where any such literal is
    out of range for every scalar anyway. Lexes only when a long digit run is present, and
    at most ``max_tokens`` tokens (past them GraphQL refuses the document itself)."""
    if not _LONG_DIGITS.search(query):
        return
    lexer = Lexer(Source(query))
    try:
        for _ in range(max_tokens + 1):
            token = lexer.advance()
            if token.kind == TokenKind.EOF:
                return
            if token.kind == TokenKind.INT and len((token.value or "").lstrip("-")) > (
                MAX_INT_DIGITS
            ):
                raise BadJson(f"Integer literals may have at most {MAX_INT_DIGITS} digits.")
    except GraphQLSyntaxError:
        return  # GraphQL answers this one itself


def check_request(data: Any, max_tokens: int) -> None:
    """The documents in a parsed GraphQL request (one operation or a batch)."""
    for item in data if isinstance(data, list) else [data]:
        if isinstance(item, dict) and isinstance(query := item.get("query"), str):
            check_document(query, max_tokens)


def check_query_string(query_string: bytes, max_tokens: int) -> None:
    """The parameters of a GraphQL GET: `query`, and `variables` and `extensions` (JSON)."""
    for name, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True):
        if name in ("variables", "extensions") and value:
            # GraphQL answers a plain syntax error itself
            with contextlib.suppress(json.JSONDecodeError):
                parse_json(value)
        elif name == "query":
            check_document(value, max_tokens)


def request_error_body(scope: Scope, code: str, message: str) -> bytes:
    """A GraphQL-shaped error for a request refused before GraphQL ran it."""
    extensions: dict[str, Any] = {"code": code}
    if (request_id := request_id_of(scope)) is not None:
        extensions["requestId"] = request_id
    return json.dumps({"errors": [{"message": message, "extensions": extensions}]}).encode()


async def send_request_error(
    scope: Scope, send: Send, status: int, code: str, message: str
) -> None:
    """A GraphQL-shaped error for a request refused before GraphQL saw it."""
    body = request_error_body(scope, code, message)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", response_content_type(scope)),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _server_close_as_disconnect(send: Send) -> Send:
    """uvicorn closes a WebSocket itself when a client breaks the protocol (a text frame
    that is not UTF-8 gets 1007) and raises RuntimeError on the app's next send (an ack
    still on its way, say), logged at ERROR. The ASGI spec asks for an OSError there, which
    Starlette turns into WebSocketDisconnect: raise that instead (and drop a close, as the
    socket is closed), unless the app had closed the socket itself, which is a bug."""
    app_closed = False

    async def guarded(message: Message) -> None:
        nonlocal app_closed
        try:
            await send(message)
        except RuntimeError as exc:
            if app_closed or "after sending 'websocket.close'" not in str(exc):
                raise
            if message["type"] != "websocket.close":
                raise OSError("the server closed the WebSocket on a client's error") from exc
        if message["type"] == "websocket.close":
            app_closed = True

    return guarded


def _is_json(scope: Scope) -> bool:
    content_type = dict(scope["headers"]).get(b"content-type", b"")
    # Strawberry parses any content type that contains this as JSON.
    return b"application/json" in content_type.lower()


def replaying(body: bytes, receive: Receive) -> Receive:
    """A receive that hands the app the already-read ``body`` as one message, then passes
    on what the client sends next (its disconnect)."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


class JsonInputMiddleware:
    """Parses GraphQL request JSON strictly before the view does (it parses it again, which
    costs less than a bad body would) and answers 400 BAD_REQUEST on a bad one. Sits inside
    BodyLimitMiddleware, so what it buffers is bounded."""

    def __init__(self, app: ASGIApp, max_query_tokens: int = 2000) -> None:
        self.app = app
        self.max_query_tokens = max_query_tokens

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            # Messages are checked in the GraphQL view's WebSocket adapter (iter_json).
            await self.app(scope, receive, _server_close_as_disconnect(send))
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["method"] == "GET":
            try:
                check_query_string(scope["query_string"], self.max_query_tokens)
            except BadJson as exc:
                await self._refuse(scope, send, exc)
                return
            await self.app(scope, receive, send)
            return
        if scope["method"] != "POST" or not _is_json(scope):
            await self.app(scope, receive, send)
            return

        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, receive, send)  # the client went away
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        try:
            check_request(parse_json(body), self.max_query_tokens)
        except BadJson as exc:
            await self._refuse(scope, send, exc)
            return
        except json.JSONDecodeError:
            pass  # GraphQL answers a plain syntax error itself
        await self.app(scope, replaying(body, receive), send)

    async def _refuse(self, scope: Scope, send: Send, exc: BadJson) -> None:
        # No body, no query string: the reason is one of a few fixed sentences.
        log.debug("bad request refused: %s", exc, extra={"path": scope.get("path")})
        await send_request_error(scope, send, 400, BAD_REQUEST, str(exc))
