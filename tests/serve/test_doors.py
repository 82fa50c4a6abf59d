"""Issue 24, the server's doors: Swagger UI at /docs (and ReDoc), a body sent without a JSON Content-Type told
so, jobs cancelled while queued counted, a busy port reported before any URL is printed."""

import socket
import time

import pytest

from newbie.cli.main import main
from tests.serve.conftest import FAST


def _metric(client, name):
    lines = dict(line.rsplit(" ", 1) for line in client.get("/metrics").text.splitlines() if line[:1] != "#")
    return lines[name]


def test_swagger_ui_and_redoc_are_served_without_the_key(make_client):
    client, _ = make_client(api_key="s3cret")
    docs = client.get("/docs")
    assert docs.status_code == 200 and "swagger-ui" in docs.text and "/openapi.json" in docs.text
    redoc = client.get("/redoc")
    assert redoc.status_code == 200 and "redoc" in redoc.text.lower()
    assert client.get("/metrics").status_code == 401  # the API itself still needs the key


def test_a_body_without_json_content_type_is_told_so(make_client):
    client, _ = make_client()
    for headers in ({}, {"content-type": "text/plain"}):
        r = client.post("/v1/jobs", content=b'{"prompt": "a"}', headers=headers)
        assert r.status_code == 415, r.text
        error = r.json()["error"]
        assert (
            error["code"] == "invalid_content_type" and "Content-Type: application/json" in error["message"]
        )
    assert client.post("/v1/jobs", json=[1]).json()["error"]["code"] == "invalid_body"  # JSON, not an object


def test_jobs_cancelled_while_queued_are_counted(make_client):
    client, _ = make_client()
    first = client.post("/v1/jobs", json={"prompt": "1girl", "size": "32x32", "steps": 300}).json()
    second = client.post("/v1/jobs", json={"prompt": "1girl", **FAST}).json()
    assert client.delete(f"/v1/jobs/{second['id']}").json()["state"] == "cancelled"
    assert _metric(client, 'newbie_jobs_total{state="cancelled"}') == "1"
    client.delete(f"/v1/jobs/{first['id']}")
    deadline = time.monotonic() + 60
    while client.get(f"/v1/jobs/{first['id']}").json()["state"] != "cancelled":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert _metric(client, 'newbie_jobs_total{state="cancelled"}') == "2"


@pytest.fixture
def busy_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


@pytest.mark.parametrize("command", ["serve", "ui"])
def test_a_busy_port_is_reported_before_the_url(busy_port, command, capsys, tmp_path, monkeypatch):
    if command == "ui":
        pytest.importorskip("streamlit")
        monkeypatch.setattr("os.execve", lambda *a: pytest.fail("streamlit was started on a busy port"))
    if command == "serve":
        pytest.importorskip("uvicorn")
    code = main([command, "--port", str(busy_port), "--data-dir", str(tmp_path)])
    out, err = capsys.readouterr()
    assert code == 2
    assert (
        err
        == f"error: port {busy_port} on 127.0.0.1 is already in use (another server?); choose another with --port\n"
    )
    assert "http://" not in out + err


def test_serve_help_explains_its_flags_and_shows_each_default_once(capsys):
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for flag, words in {
        "--port PORT": "port to listen on (default: 8000)",
        "--max-steps MAX_STEPS": "most sampler steps per request (default: 100)",
        "--max-queue MAX_QUEUE": "most jobs waiting; more get 503 (default: 1000)",
    }.items():
        assert f"{flag} {words}" in text
    assert "(default: $NEWBIE_API_KEY, else none) --max-side" in text  # not followed by "(default: None)"
