"""ASGI middleware that runs before any route: the API key, the request body limit, and error counting.
Plain ASGI (not BaseHTTPMiddleware) so a rejected body is never read past the limit."""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time

from newbie.serve.errors import error_body

log = logging.getLogger("newbie.serve")
# load balancers and client generators call these without a key; /docs and /redoc are static pages (a browser
# cannot send the key), the API calls made from them still need it
OPEN_PATHS = ("/healthz", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc")


async def send_error(send, status: int, message: str, code: str, headers: list | None = None) -> None:
    body = json.dumps(error_body(status, message, code)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
WILDCARDS = ("0.0.0.0", "::", "")


def allowed_hosts(bound: str, extra: list[str] | None = None) -> set[str] | None:
    """The names a request's Host header may carry: the bound address, loopback's names, and `extra`.
    None (no check) for a wildcard bind without an explicit list, or when the list holds '*'."""
    extra = [h.strip().lower() for h in extra or [] if h.strip()]
    if "*" in extra or (bound in WILDCARDS and not extra):
        return None
    names = set(LOOPBACK_NAMES) | set(extra)
    if bound not in WILDCARDS:
        names.add(bound.lower().strip("[]"))
    return names


def host_name(value: bytes) -> str:
    """'example.com:8000' -> 'example.com'; '[::1]:8000' -> '::1'."""
    text = value.decode("latin-1").strip().lower()
    if text.startswith("["):
        return text[1 : text.find("]")] if "]" in text else text
    return text.rsplit(":", 1)[0] if text.count(":") == 1 else text


class HostCheckMiddleware:
    """Answers only to the names it is reached by: a page on another site that makes a browser resolve its
    own name to 127.0.0.1 (DNS rebinding) sends that name in Host and is refused here, before any route,
    and Location headers and image URLs are only ever built from an allowed name."""

    def __init__(self, app, hosts: set[str]):
        self.app, self.hosts = app, hosts

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        given = next((v for n, v in scope["headers"] if n == b"host"), None)
        if given is not None and host_name(given) not in self.hosts:
            shown = repr(given.decode("latin-1")[:100])
            message = f"Host {shown} is not a name this server answers to (see --allowed-host)"
            return await send_error(send, 421, message, "bad_host")
        return await self.app(scope, receive, send)


class ApiKeyMiddleware:
    """`Authorization: Bearer KEY` on every path but OPEN_PATHS, compared in constant time."""

    def __init__(self, app, api_key: str):
        self.app = app
        self.expected = api_key.encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            return await self.app(scope, receive, send)
        given = b""
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, token = value.partition(b" ")
                if scheme.lower() == b"bearer":
                    given = token.strip()
        if not hmac.compare_digest(given, self.expected):
            return await send_error(
                send,
                401,
                "missing or wrong API key (send 'Authorization: Bearer KEY')",
                "invalid_api_key",
                [(b"www-authenticate", b"Bearer")],
            )
        return await self.app(scope, receive, send)


class BodyLimitMiddleware:
    """Reads the whole body (it is small JSON) and stops at `max_bytes`: 413 before the route sees it,
    whether the client sent a Content-Length or a chunked body. Memory stays bounded however many clients
    send at once: all bodies being read or handled share `buffer_bytes` (a declared Content-Length is
    reserved up front; past the budget: 503 at once), and a body that does not arrive within `timeout_s`
    gets 408 and its connection closed (a client trickling bytes holds nothing for long)."""

    def __init__(self, app, max_bytes: int, buffer_bytes: int | None = None, timeout_s: float = 60.0):
        self.app, self.max_bytes, self.timeout_s = app, max_bytes, timeout_s
        self.buffer_bytes = buffer_bytes if buffer_bytes is not None else 8 * max_bytes
        self.held = 0  # bytes reserved by bodies in flight (one event loop: no lock needed)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        too_big = f"request body is larger than {self.max_bytes} bytes"
        declared = 0
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    return await send_error(send, 400, "bad Content-Length header", "bad_request")
                if declared > self.max_bytes:
                    return await send_error(send, 413, too_big, "body_too_large")
        reserved = 0
        try:
            body = b""
            if declared and not self._reserve(declared):
                return await self._busy(send)
            reserved = declared
            chunks, size, deadline = [], 0, time.monotonic() + self.timeout_s
            while True:
                try:
                    message = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
                except asyncio.TimeoutError:
                    message = f"the request body did not arrive within {self.timeout_s:g} s"
                    return await send_error(send, 408, message, "body_timeout", [(b"connection", b"close")])
                if message["type"] == "http.disconnect":
                    return
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > self.max_bytes:
                    return await send_error(send, 413, too_big, "body_too_large")
                if size > reserved:  # chunked, or more than declared: reserve as it comes
                    if not self._reserve(size - reserved):
                        return await self._busy(send)
                    reserved = size
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
            body = b"".join(chunks)
            del chunks
            replayed = False

            async def replay():
                nonlocal replayed
                if not replayed:
                    replayed = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()  # after the body: wait for the disconnect, as the server would

            return await self.app(scope, replay, send)
        finally:
            self.held -= reserved

    def _reserve(self, n: int) -> bool:
        if self.held + n > self.buffer_bytes:
            return False
        self.held += n
        return True

    @staticmethod
    async def _busy(send) -> None:
        message = "the server is receiving too many request bodies at once; try again shortly"
        await send_error(send, 503, message, "busy", [(b"retry-after", b"1"), (b"connection", b"close")])


class ErrorCountMiddleware:
    """Counts every 4xx/5xx reply for /metrics, including those of the middleware above, and turns an
    exception of a route into a JSON 500 here: counted, logged in one line (the traceback only with
    NEWBIE_DEBUG), the connection kept, instead of the server's traceback and a dropped keep-alive."""

    def __init__(self, app, metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def counting_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if message["status"] >= 400:
                    self.metrics.http_error(message["status"])
            await send(message)

        try:
            return await self.app(scope, receive, counting_send)
        except Exception as e:
            from newbie.errors import debug_enabled, describe

            where = f"{scope.get('method', '')} {scope.get('path', '')}"
            if debug_enabled():
                log.exception("internal error in %s", where)
            else:
                log.error("internal error in %s: %s", where, describe(e)[0])
            if started:  # the reply is half sent: only closing the connection can tell the client
                raise
            await send_error(
                counting_send, 500, "internal server error; see the server log", "internal_error"
            )
