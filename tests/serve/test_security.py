"""The transport guards, driven at the ASGI level: a body cap per request, a memory budget for all bodies in
flight together, and a body-read deadline, so slow or many clients cannot hold the server's memory."""

import asyncio
import json

from newbie.serve.security import BodyLimitMiddleware


async def _echo(scope, receive, send):
    message = await receive()
    body = json.dumps({"got": len(message["body"])}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


def _scope(length: int | None = None) -> dict:
    headers = [] if length is None else [(b"content-length", str(length).encode())]
    return {"type": "http", "method": "POST", "path": "/v1/jobs", "headers": headers}


def _stalled(first: bytes):
    """A client that sends `first` and then nothing: the slow-body attack."""
    sent = []

    async def receive():
        if not sent:
            sent.append(1)
            return {"type": "http.request", "body": first, "more_body": True}
        await asyncio.sleep(3600)

    return receive


async def _call(app, scope, receive) -> tuple[int, dict]:
    out = []

    async def send(message):
        out.append(message)

    await app(scope, receive, send)
    return out[0]["status"], json.loads(out[1]["body"])


def test_a_stalled_body_gets_408_and_releases_its_budget():
    app = BodyLimitMiddleware(_echo, max_bytes=1000, buffer_bytes=1000, timeout_s=0.2)

    async def go():
        status, body = await _call(app, _scope(), _stalled(b"x" * 600))
        assert status == 408 and body["error"]["code"] == "body_timeout"
        assert app.held == 0

    asyncio.run(asyncio.wait_for(go(), 10))


def test_bodies_in_flight_share_one_budget():
    app = BodyLimitMiddleware(_echo, max_bytes=1000, buffer_bytes=1200, timeout_s=5)

    async def go():
        # two slow clients each declaring 700 bytes: the second is refused at once, before any byte is read
        first = asyncio.create_task(_call(app, _scope(700), _stalled(b"x" * 10)))
        await asyncio.sleep(0.05)
        status, body = await _call(app, _scope(700), _stalled(b"x" * 10))
        assert status == 503 and body["error"]["code"] == "busy" and app.held == 700
        # chunked (no Content-Length): reserved as it arrives (700 + 600 > 1200)
        status, _ = await _call(app, _scope(), _stalled(b"x" * 600))
        assert status == 503
        first.cancel()  # the client went away
        await asyncio.gather(first, return_exceptions=True)
        assert app.held == 0

        async def whole():
            return {"type": "http.request", "body": b"y" * 800, "more_body": False}

        assert await _call(app, _scope(800), whole) == (200, {"got": 800})
        assert app.held == 0

    asyncio.run(asyncio.wait_for(go(), 10))
