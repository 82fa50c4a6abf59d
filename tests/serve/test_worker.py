"""A job whose generation fails: the API and the job say what failed in one line; the server log gets the
traceback only with NEWBIE_DEBUG=1; the worker goes on with the next job."""

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
