"""Request bodies are bounded before anything builds Python objects from them.

A pure ASGI middleware, inside the request-context one (so its answers carry the request id):

- size: a ``Content-Length`` over ``max_bytes`` is refused before the body is read, and a body sent
  without one (chunked) is counted as it arrives; 413 ``payload_too_large``;
- nesting: the depth of a JSON body is measured on its text, strings removed, before it is parsed,
  so a few thousand nested arrays never reach the recursive parsers behind it (``json``, pydantic,
  the merge patch, YAML); 422 ``json_too_deep``;
- characters: no string of a JSON body (keys included) may hold a control or formatting character
  (``tenancy.spec.text``); 422 ``invalid_character`` naming each field; ``NaN`` and ``Infinity``,
  which Python's parser accepts but JSON does not define, answer 422 ``invalid_request``.

- media type: every body the service takes is JSON, so a body sent as anything else (``curl -d``
  without ``-H 'Content-Type: application/json'`` sends ``application/x-www-form-urlencoded``; a
  tenant's YAML sent as ``application/yaml``) answers 415 ``unsupported_media_type`` naming the type
  to send. FastAPI would hand such a body to the route as bytes, whose check then said the body was
  "not an object" (or "a tenant file holds one YAML mapping, this one holds a bytes") about the
  very object the caller sent.

A body that is not valid JSON at all is left to FastAPI, which answers ``invalid_request``. Bodies
are checked when FastAPI would parse them as JSON: no ``Content-Type``, ``application/json`` or
``application/*+json``. The checked body is handed on unchanged; nothing is written before a check
passes, because every check runs before any route does.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tenancy.service.core.errors import error_body
from tenancy.spec.text import forbidden_characters

_METHODS_WITH_BODIES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# A JSON string, or an unterminated one running to the end (possessive, so scanning stays linear
# whatever the text: no quote ever restarts a scan of the rest).
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*+(?:"|\\?\Z)', re.DOTALL)
_BRACKETS = re.compile(r"[\[\]{}]")
_MAX_DETAILS = 20


class BodyRefused(Exception):
    def __init__(self, status: int, code: str, message: str, details: list[dict[str, str]] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details


def json_depth(text: str) -> int:
    """How deeply ``text`` nests arrays and objects (0 for a scalar), without parsing it."""
    depth = deepest = 0
    for bracket in _BRACKETS.findall(_JSON_STRING.sub("", text)):
        if bracket in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def _refuse_constant(name: str) -> Any:
    raise BodyRefused(422, "invalid_request", f"{name} is not a JSON number; send a finite number")


def check_json_body(body: bytes, *, max_depth: int) -> None:
    """Raise ``BodyRefused`` when ``body`` nests too deeply, holds a forbidden character or is not
    Unicode text; return quietly for acceptable JSON and for text that is not JSON (the route's parser
    reports that). Bytes that do not decode are refused here, never left to the route: its parser
    reads a lone surrogate (``ED A0 80``) as a character, so such a body would reach it with nothing
    checked (an outside review filed a change-request reason holding terminal escapes that way)."""
    encoding = json.detect_encoding(body)
    try:
        text = body.decode(encoding)
    except UnicodeDecodeError as error:
        raise BodyRefused(
            400,
            "bad_request",  # as the route's parser answers bytes that do not decode (400, not 422)
            f"the body is not {encoding.upper()} text; JSON bodies are UTF-8",
            [
                {
                    "field": "body",
                    "reason": f"byte {error.start} (0x{body[error.start]:02x}) does not decode as "
                    f"{encoding.upper()} ({error.reason})",
                }
            ],
        ) from None
    depth = json_depth(text)
    if depth > max_depth:
        raise BodyRefused(
            422,
            "json_too_deep",
            f"the JSON body nests {depth} levels deep; at most {max_depth} are accepted",
        )
    try:
        document = json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        return
    details = [
        {"field": field or "body", "reason": reason} for field, reason in forbidden_characters(document)
    ]
    if details:
        fields = ", ".join(item["field"] for item in details[:3]) + (", ..." if len(details) > 3 else "")
        raise BodyRefused(
            422,
            "invalid_character",
            f"control and formatting characters are not accepted in any string ({fields}); see details",
            details[:_MAX_DETAILS],
        )


def _is_json(content_type: str | None) -> bool:
    """Whether FastAPI would parse a body of this type as JSON (it does when no type is given)."""
    if not content_type:
        return True
    media = content_type.split(";", 1)[0].strip().lower()
    main, _, sub = media.partition("/")
    return main == "application" and (sub == "json" or sub.endswith("+json"))


class RequestBodyGuard:
    def __init__(self, app: ASGIApp, *, max_bytes: int, max_depth: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_depth = max_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # The first of each header, as starlette's Headers.get gives it, from one pass over the
        # scope's list (names come lower-cased from the server).
        length = content_type = None
        for name, value in scope["headers"]:
            if name == b"content-length" and length is None:
                length = value.decode("latin-1")
            elif name == b"content-type" and content_type is None:
                content_type = value.decode("latin-1")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            await _answer(send, self._too_large())
            return
        if scope.get("method") not in _METHODS_WITH_BODIES:
            await self.app(scope, self._counted(receive), send)
            return
        if not _is_json(content_type):
            await self._refuse_unless_empty(scope, receive, send, length, str(content_type))
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away before sending its body: nobody to answer
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await _answer(send, self._too_large())
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if body.strip():
            try:
                check_json_body(body, max_depth=self.max_depth)
            except BodyRefused as refused:
                await _answer(send, refused)
                return
        await self.app(scope, _replay(body, receive), send)

    async def _refuse_unless_empty(
        self, scope: Scope, receive: Receive, send: Send, length: str | None, content_type: str
    ) -> None:
        """A request with a body that is not JSON: 415. Without a body (``Content-Length: 0``, or a
        chunked request whose chunks are all empty), whatever its type says, it goes on."""
        if length is None:
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    return  # the client went away before sending its body: nobody to answer
                if message.get("body", b""):
                    break
                if not message.get("more_body", False):
                    await self.app(scope, _replay(b"", receive), send)
                    return
        elif int(length) == 0:
            await self.app(scope, receive, send)
            return
        media = content_type.split(";", 1)[0].strip()
        await _answer(
            send,
            BodyRefused(
                415,
                "unsupported_media_type",
                f"the request body is sent as {media!r}, but the service reads JSON only: send it with "
                "'Content-Type: application/json' (with curl: -H 'Content-Type: application/json')",
            ),
        )

    def _too_large(self) -> BodyRefused:
        return BodyRefused(
            413, "payload_too_large", f"the request body is larger than {self.max_bytes} bytes"
        )

    def _counted(self, receive: Receive) -> Receive:
        """Count a body that is not checked (not JSON) and stop it at ``max_bytes``."""
        seen = [0]

        async def wrapped() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                seen[0] += len(message.get("body", b""))
                if seen[0] > self.max_bytes:
                    # Passes FastAPI's body parsing untouched and becomes payload_too_large.
                    raise HTTPException(status_code=413)
            return message

        return wrapped


def _replay(body: bytes, receive: Receive) -> Receive:
    """The body once, as one message; then the connection's own messages (disconnects)."""
    pending: Iterator[Message] = iter([{"type": "http.request", "body": body, "more_body": False}])

    async def replayed() -> Message:
        message = next(pending, None)
        return message if message is not None else await receive()

    return replayed


async def _answer(send: Send, refused: BodyRefused) -> None:
    payload = json.dumps(error_body(refused.code, refused.message, refused.details)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": refused.status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
