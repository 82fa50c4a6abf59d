"""Issue 27's attacks on a real `newbie serve` (demo model, CPU), with caps set low by flags so each attack
stays small: slow and many bodies (memory stays bounded, probes keep answering), a foreign Host header, an
exclusive lock on the job database (the worker survives it; /healthz and POST say so), and an emptied
database at start (refused, exit 2). Bounded: about a minute."""

import socket
import sqlite3
import subprocess
import sys
import time

import httpx
import pytest

from tests.serve.live_server import LiveServer, free_port

pytestmark = pytest.mark.slow
SMALL = {"size": "64x64", "steps": 1}
BODY, BUFFER, TIMEOUT = 256 * 1024, 1024 * 1024, 3


def _rss_mib(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("attack")
    flags = ["--max-body-bytes", str(BODY), "--max-body-buffer", str(BUFFER), "--body-timeout", str(TIMEOUT)]
    s = LiveServer(tmp / "data", tmp / "server.log", None, *flags)
    s.wait_ready()
    s.data_dir = tmp / "data"
    yield s
    s.stop()


def _head(port: int, length: int, host: str = "127.0.0.1") -> bytes:
    return (
        f"POST /v1/jobs HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


def _status(sock: socket.socket) -> int:
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            return 0
        data += chunk
    return int(data.split()[1])


def test_many_slow_bodies_hold_bounded_memory_and_probes_answer(server):
    """30 clients each declare a 200 KiB body and send half: only BUFFER worth is held, the rest get 503 at
    once, the held ones 408 after --body-timeout, and /healthz answers throughout."""
    before = _rss_mib(server.proc.pid)
    socks, codes = [], []
    for _ in range(30):
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT + 10)
        sock.sendall(_head(server.port, 200 * 1024) + b"{" * (100 * 1024))
        socks.append(sock)
    t0 = time.monotonic()
    assert httpx.get(server.url + "/healthz", timeout=5).status_code == 200
    for sock in socks:
        codes.append(_status(sock))
        sock.close()
    held = codes.count(408)
    assert codes.count(503) >= 30 - BUFFER // (200 * 1024) and held <= BUFFER // (200 * 1024), codes
    assert set(codes) <= {408, 503} and time.monotonic() - t0 < TIMEOUT + 5
    grown = _rss_mib(server.proc.pid) - before
    print(f"body attack: 30 x 200 KiB declared, {held} held then 408, RSS +{grown:.1f} MiB")
    assert grown < 64
    assert httpx.post(server.url + "/v1/jobs", json={"prompt": "1girl", **SMALL}).status_code == 202


def test_a_foreign_host_is_refused(server):
    r = httpx.get(server.url + "/healthz", headers={"host": "evil.example:80"})
    assert r.status_code == 421 and r.json()["error"]["code"] == "bad_host"
    r = httpx.post(
        server.url + "/v1/jobs", json={"prompt": "1girl", **SMALL}, headers={"host": "evil.example"}
    )
    assert r.status_code == 421 and "location" not in r.headers


def test_a_locked_database_is_survived_and_reported(server):
    db = sqlite3.connect(server.data_dir / "jobs.sqlite3", isolation_level=None, timeout=10)
    job = httpx.post(server.url + "/v1/jobs", json={"prompt": "1girl", **SMALL}).json()["id"]
    db.execute("BEGIN EXCLUSIVE")  # a backup or an operator's sqlite3, for 8 s
    locked = time.monotonic()
    try:
        deadline = time.monotonic() + 20
        while (r := httpx.get(server.url + "/healthz", timeout=10)).status_code == 200:
            assert time.monotonic() < deadline, "healthz never noticed the lock"
            time.sleep(0.2)
        assert r.status_code == 503 and r.json().get("reason"), r.text
        assert (
            httpx.post(server.url + "/v1/jobs", json={"prompt": "a", **SMALL}, timeout=15).status_code == 503
        )
        time.sleep(max(0.0, locked + 8 - time.monotonic()))
    finally:
        db.execute("COMMIT")
        db.close()
    deadline = time.monotonic() + 60
    while (state := httpx.get(f"{server.url}/v1/jobs/{job}").json()["state"]) not in ("done", "failed"):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert state == "done"
    assert httpx.get(server.url + "/healthz").json()["workers_alive"] == 1


def test_an_emptied_database_is_refused_at_start(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "jobs.sqlite3").write_bytes(b"")
    cmd = [sys.executable, "-m", "newbie", "serve", "--port", str(free_port()), "--device", "cpu"]
    proc = subprocess.run(
        [*cmd, "--data-dir", str(tmp_path / "data")], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2 and "is empty (0 bytes)" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
