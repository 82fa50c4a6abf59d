"""A job whose generation fails: the API and the job say what failed in one line; the server log gets the
traceback only with NEWBIE_DEBUG=1; the worker goes on with the next job."""

import sqlite3
import threading
import time

import pytest
import torch

from tests.serve.conftest import FAST
from tests.serve.test_api import _wait


@pytest.mark.parametrize(
    "error, message",
    [
        (
            torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"),
            "out of GPU memory at 32x32: try --vram",
        ),
        (
            RuntimeError(
                "Input type (torch.cuda.FloatTensor) and weight type (torch.FloatTensor) should be the same"
            ),
            "internal device/dtype mismatch (Input type",
        ),
        (ValueError("boom"), "generation failed: ValueError: boom (run again with --debug"),
    ],
    ids=["out-of-memory", "device", "other"],
)
def test_a_failed_job_is_one_line_and_the_worker_goes_on(
    make_client, tiny_pipeline, monkeypatch, caplog, error, message
):
    monkeypatch.setenv("NEWBIE_DEBUG", "0")
    real_run = type(tiny_pipeline).run
    calls = []

    def fail_once(self, req, progress=None):
        calls.append(req)
        if len(calls) == 1:
            raise error
        return real_run(self, req, progress)

    monkeypatch.setattr(type(tiny_pipeline), "run", fail_once)
    client, _ = make_client()
    r = client.post("/v1/images/generations", json={"prompt": "1girl", **FAST})
    assert r.status_code == 500
    body = r.json()["error"]
    assert body["code"] == "generation_failed"
    assert body["message"].startswith(
        message if message.startswith("generation") else f"generation failed: {message}"
    )
    assert "\n" not in body["message"] and "Traceback" not in caplog.text
    assert f"failed: {message}" in caplog.text  # the one line in the server log
    assert client.post("/v1/images/generations", json={"prompt": "1girl", **FAST}).status_code == 200


def test_debug_logs_the_traceback(make_client, tiny_pipeline, monkeypatch, caplog):
    monkeypatch.setenv("NEWBIE_DEBUG", "1")

    def fail(self, req, progress=None):
        raise ValueError("boom")

    monkeypatch.setattr(type(tiny_pipeline), "run", fail)
    client, _ = make_client()
    r = client.post("/v1/jobs", json={"prompt": "1girl", **FAST})
    status = _wait(client, r.json()["id"])
    assert status["state"] == "failed"
    assert status["error"].startswith("generation failed: ValueError: boom")
    assert "Traceback" in caplog.text and "ValueError: boom" in caplog.text


def _flaky(real, failures: int, error=None):
    """real(), but the first `failures` calls raise what a locked or full database raises."""
    calls = []

    def call(*args, **kwargs):
        calls.append(1)
        if len(calls) <= failures:
            raise error or sqlite3.OperationalError("database is locked")
        return real(*args, **kwargs)

    call.calls = calls
    return call


def test_store_errors_are_retried_and_reported_and_the_worker_survives(make_client, monkeypatch):
    client, service = make_client()
    gate = threading.Event()
    real_claim = service.store.claim

    def locked_claim():
        if not gate.is_set():
            raise sqlite3.OperationalError("database is locked")
        return real_claim()

    monkeypatch.setattr(service.store, "claim", locked_claim)
    deadline = time.monotonic() + 10
    while client.get("/healthz").status_code == 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    r = client.get("/healthz")
    assert r.status_code == 503 and "database is locked" in r.json()["reason"]
    assert r.json()["workers_alive"] == 1
    refused = client.post("/v1/jobs", json={"prompt": "1girl", **FAST})
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "unavailable"
    gate.set()  # the lock is gone: the same worker goes on
    while client.get("/healthz").status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    r = client.post("/v1/jobs", json={"prompt": "1girl", **FAST})
    assert r.status_code == 202 and _wait(client, r.json()["id"])["state"] == "done"


def test_a_failing_finish_write_is_retried_not_fatal(make_client, monkeypatch):
    client, service = make_client()
    flaky = _flaky(service.store.finish, 2, sqlite3.OperationalError("disk I/O error"))
    monkeypatch.setattr(service.store, "finish", flaky)
    r = client.post("/v1/jobs", json={"prompt": "1girl", **FAST})
    assert _wait(client, r.json()["id"])["state"] == "done" and len(flaky.calls) == 3
    assert all(w.is_alive() for w in service.workers)


def test_a_poisoned_row_fails_with_a_reason_and_the_queue_goes_on(make_client, tmp_path):
    client, service = make_client()
    path = service.store.path
    with sqlite3.connect(path) as db:  # rows a broken version or an operator wrote by hand
        for i, params in enumerate(("{broken", '{"prompt": "1girl"}')):
            db.execute(
                "INSERT INTO jobs (id, state, params, n, created) VALUES (?, 'queued', ?, 1, 0)",
                (f"{i:032x}", params),
            )
    with service._wake:
        service._wake.notify_all()
    for i, reason in enumerate(("unreadable", "no steps")):
        status = _wait(client, f"{i:032x}")
        assert status["state"] == "failed" and reason in status["error"]
    r = client.post("/v1/jobs", json={"prompt": "1girl", **FAST})
    assert _wait(client, r.json()["id"])["state"] == "done"
    assert client.get("/healthz").json()["workers_alive"] == 1


def test_no_worker_alive_means_503_not_202(make_client, monkeypatch):
    client, service = make_client()
    for w in service.workers:
        monkeypatch.setattr(w, "is_alive", lambda: False)
    r = client.post("/v1/jobs", json={"prompt": "1girl", **FAST})
    assert r.status_code == 503 and "no worker" in r.json()["error"]["message"]
    assert client.get("/healthz").status_code == 503


def test_a_store_error_seen_by_a_submit_clears_once_the_store_answers(make_client, monkeypatch):
    client, service = make_client()
    monkeypatch.setattr(service.store, "add", _flaky(service.store.add, 1))
    r = client.post("/v1/jobs", json={"prompt": "1girl", **FAST})
    assert r.status_code == 503 and r.json()["error"]["code"] == "store_unavailable"
    deadline = time.monotonic() + 10
    while client.get("/healthz").status_code != 200:  # the worker's next claim clears it
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert client.post("/v1/jobs", json={"prompt": "1girl", **FAST}).status_code == 202
