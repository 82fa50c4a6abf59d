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


def test_only_allowed_host_names_are_answered(make_client, tmp_path):
    """DNS rebinding: a page at evil.example resolved to 127.0.0.1 sends Host: evil.example (issue 27)."""
    from fastapi.testclient import TestClient

    from newbie.serve.app import create_app
    from newbie.serve.security import allowed_hosts

    _, service = make_client()
    assert allowed_hosts("0.0.0.0") is None and allowed_hosts("127.0.0.1", ["*"]) is None
    hosts = allowed_hosts("127.0.0.1", ["gpu-box.lan"])
    client = TestClient(create_app(service, None, hosts=hosts), base_url="http://127.0.0.1:8000")
    for good in ("127.0.0.1:8000", "localhost", "[::1]:8000", "GPU-box.lan:8000"):
        assert client.get("/healthz", headers={"host": good}).status_code == 200, good
    for bad in ("evil.example", "evil.example:8000", "127.0.0.1.evil.example", "[::2]"):
        r = client.get("/healthz", headers={"host": bad})
        assert r.status_code == 421 and r.json()["error"]["code"] == "bad_host", bad
    r = client.post("/v1/jobs", json={"prompt": "1girl"}, headers={"host": "evil.example"})
    assert r.status_code == 421 and "location" not in r.headers
    assert sum(service.store.counts().values()) == 0
