"""The HTTP API in process (TestClient) on the tiny checkpoint: results, job lifecycle, errors, auth and
metrics."""

import base64
import io
import json
import re
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.serve.conftest import FAST


def _wait(client, job_id, until=("done", "failed", "cancelled"), timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.get(f"/v1/jobs/{job_id}").json()
        if status["state"] in until:
            return status
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} still {status['state']} after {timeout} s")


def _error(response, status):
    assert response.status_code == status, response.text
    body = response.json()["error"]
    assert body["message"] and "\n" not in body["message"]
    return body


def test_openai_endpoint_returns_the_pipelines_images(make_client, tiny_pipeline):
    client, _ = make_client()
    r = client.post(
        "/v1/images/generations",
        json={"prompt": "1girl, red_hair", "n": 2, **FAST, "model": "x", "quality": "hd"},
    )  # OpenAI fields we ignore
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert [d["seed"] for d in data] == [7, 8]
    ref = tiny_pipeline.generate("1girl, red_hair", seed=7, steps=2, width=32, height=32, batch=2)
    for item, expected, recipe in zip(data, ref.images, ref.recipes):
        with Image.open(io.BytesIO(base64.b64decode(item["b64_json"]))) as im:
            assert im.size == (32, 32)
            assert np.array_equal(np.asarray(im), np.asarray(expected))
            assert json.loads(im.info["newbie"])["seed"] == recipe.seed
    r = client.post("/v1/images/generations", json={"prompt": "1girl", **FAST, "response_format": "url"})
    url = r.json()["data"][0]["url"]
    assert (
        url.startswith("http://testserver/v1/jobs/")
        and client.get(url).headers["content-type"] == "image/png"
    )


def test_job_lifecycle_with_progress_and_location(make_client, tiny_pipeline):
    client, service = make_client()
    r = client.post("/v1/jobs", json={"prompt": "1boy, blue_hair", "size": "48x32", "steps": 3})
    assert r.status_code == 202 and r.headers["location"].endswith(r.json()["id"])
    job = r.json()
    assert job["state"] in ("queued", "running") and job["steps"] == 3
    assert isinstance(job["params"]["seed"], int)  # drawn at acceptance: a retry after a crash is identical
    done = _wait(client, job["id"])
    assert done["state"] == "done" and done["step"] == 3 and done["seconds"] > 0 and len(done["images"]) == 1
    png = client.get(done["images"][0])
    assert png.status_code == 200
    ref = tiny_pipeline.generate("1boy, blue_hair", seed=job["params"]["seed"], steps=3, width=48, height=32)
    with Image.open(io.BytesIO(png.content)) as im:
        assert np.array_equal(np.asarray(im), np.asarray(ref.images[0]))
    assert (service.data_dir / "images" / job["id"] / "0.png").is_file()
    assert not list((service.data_dir / "images" / job["id"]).glob(".newbie-*"))  # no temporary file left


def test_progress_is_visible_and_a_running_job_can_be_cancelled(make_client):
    client, _ = make_client()
    job = client.post("/v1/jobs", json={"prompt": "1girl", "size": "32x32", "steps": 400}).json()
    running = _wait(client, job["id"], until=("running",))
    while running["step"] == 0:
        running = client.get(f"/v1/jobs/{job['id']}").json()
    assert 0 < running["step"] < 400
    r = client.delete(f"/v1/jobs/{job['id']}")
    assert r.status_code == 200 and r.json()["cancel_requested"]
    final = _wait(client, job["id"])
    assert final["state"] == "cancelled" and final["step"] == 0
    _error(client.delete(f"/v1/jobs/{job['id']}"), 409)
    _error(client.get(f"/v1/jobs/{job['id']}/image"), 409)


def test_a_queued_job_is_cancelled_at_once(make_client):
    client, _ = make_client()
    first = client.post("/v1/jobs", json={"prompt": "1girl", "size": "32x32", "steps": 200}).json()
    second = client.post("/v1/jobs", json={"prompt": "1girl", **FAST}).json()
    r = client.delete(f"/v1/jobs/{second['id']}")
    assert r.json()["state"] == "cancelled"
    client.delete(f"/v1/jobs/{first['id']}")
    assert _wait(client, first["id"])["state"] == "cancelled"


def test_bad_input_gets_one_line_4xx(make_client):
    client, _ = make_client()
    post = lambda body: client.post("/v1/jobs", json={**FAST, **body})  # noqa: E731
    assert "multiple of 16" in _error(post({"prompt": "a", "size": "40x40"}), 422)["message"]
    assert "largest side" in _error(post({"prompt": "a", "size": "512x16"}), 400)["message"]
    assert "pixels" in _error(post({"prompt": "a", "size": "256x256"}), 400)["message"]
    assert _error(post({"prompt": "a", "size": "big"}), 422)["param"] == "size"
    assert _error(post({"prompt": "a", "n": 4}), 400)["code"] == "invalid_n"
    assert _error(post({"prompt": "a", "steps": 0}), 422)["code"] == "invalid_steps"
    assert _error(post({"prompt": "a", "steps": 401}), 400)["code"] == "invalid_steps"  # the server's limit
    assert "unknown sampler 'ddim'" in _error(post({"prompt": "a", "sampler": "ddim"}), 422)["message"]
    assert _error(post({"prompt": "a", "cfg": -1}), 422)["code"] == "invalid_cfg"
    assert _error(post({"prompt": "a", "steps": "5"}), 422)["param"] == "steps"  # strict types
    assert _error(post({"prompt": "a", "steps": True}), 422)["param"] == "steps"
    assert _error(post({"prompt": "a", "seed": "abc"}), 422)["param"] == "seed"
    assert _error(post({"prompt": "  "}), 400)["code"] == "empty_prompt"
    assert _error(post({"prompt": "a" * 2001}), 400)["code"] == "prompt_too_long"
    xml = _error(post({"prompt": "<character_1>\n<gender>1girl</character_1>"}), 422)
    assert xml["code"] == "invalid_xml" and "line 2, column" in xml["message"]
    assert _error(post({"prompt": "a", "negative": "<a><b></a>"}), 422)["param"] == "negative"
    assert _error(post({"prompt": 3}), 422)["param"] == "prompt"
    assert (
        _error(post({"prompt": "a", "nope": 1}), 422)["param"] == "nope"
    )  # typos in the native API are errors
    assert _error(client.post("/v1/jobs", json=[1]), 422)["code"] == "invalid_body"
    bad_json = client.post(
        "/v1/jobs", content=b'{"prompt": "a",', headers={"content-type": "application/json"}
    )
    assert _error(bad_json, 400)["code"] == "invalid_json"
    assert _error(client.post("/v1/images/generations", json={"prompt": "a", "response_format": "x"}), 422)


@pytest.mark.parametrize(
    "body, message",
    [
        ({"shift": -1}, "shift must be between 0.01 and 100, got -1"),
        ({"shift": 1e-300}, "shift must be between 0.01 and 100, got 1e-300"),
        ({"cfg": 1e308}, "cfg must be between 0 and 100, got 1e+308"),
        ({"cfg_trunc": 7}, "cfg_trunc must be between 0 and 1, got 7"),
        ({"cfg_trunc": -0.5}, "cfg_trunc must be between 0 and 1, got -0.5"),
        ({"renorm_cfg": -3}, "renorm_cfg must be between 0 and 100, got -3"),
        ({"seed": -1}, "seed must be between 0 and 18446744073709551615, got -1"),
        ({"noise": "white"}, "unknown noise 'white' (choose from newbie, comfy)"),
    ],
)
def test_a_bad_setting_is_a_422_naming_it_with_the_engines_message(make_client, body, message):
    from newbie.pipeline.request import SettingError, Settings, check

    client, _ = make_client()
    (name,) = body
    err = _error(client.post("/v1/jobs", json={"prompt": "a", **FAST, **body}), 422)
    assert (err["param"], err["code"], err["message"]) == (name, f"invalid_{name}", message)
    with pytest.raises(SettingError, match=re.escape(message)):
        check(Settings(prompt="a", **body))  # the same words as through Python and the CLI


def test_the_body_covers_every_setting_with_the_same_defaults_and_bounds():
    from newbie.pipeline.request import Settings
    from newbie.serve.schemas import BODY_NAMES, GenerationParams

    fields = GenerationParams.model_fields
    schema = GenerationParams.model_json_schema()["properties"]
    for name in Settings.fields():
        body = BODY_NAMES.get(name, name)
        assert body in fields, name
        if body != name:
            continue
        rule, default = Settings.rule(name), Settings.__dataclass_fields__[name].default
        if rule.kind in ("int", "float", "str", "bool"):
            assert fields[name].default == default, name
            assert schema[name].get("minimum") == rule.lo and schema[name].get("maximum") == rule.hi, name
            assert schema[name].get("enum", []) == list(rule.choices), name
    assert schema["n"]["maximum"] == Settings.rule("batch").hi


def test_body_limit_before_the_route(make_client):
    client, service = make_client()
    big = json.dumps({"prompt": "a" * 9000}).encode()
    assert (
        _error(client.post("/v1/jobs", content=big, headers={"content-type": "application/json"}), 413)[
            "code"
        ]
        == "body_too_large"
    )

    def chunks():  # no Content-Length: the limit must hold on the streamed bytes too
        for _ in range(10):
            yield b" " * 1000

    assert _error(
        client.post("/v1/jobs", content=chunks(), headers={"content-type": "application/json"}), 413
    )
    assert service.store.counts()["queued"] == 0


def test_unknown_jobs_and_paths_stay_inside_the_data_folder(make_client):
    client, service = make_client()
    _error(client.get("/v1/jobs/" + "0" * 32), 404)
    for bad in ("..", "..%2F..%2Fetc%2Fpasswd", "%2e%2e", "a" * 32, "0" * 31):
        r = client.get(f"/v1/jobs/{bad}/image")
        assert r.status_code == 404 and r.headers["content-type"] == "application/json"
    job = client.post("/v1/jobs", json={"prompt": "1girl", **FAST}).json()
    _wait(client, job["id"])
    _error(client.get(f"/v1/jobs/{job['id']}/image?index=1"), 404)
    _error(client.get(f"/v1/jobs/{job['id']}/image?index=-1"), 422)
    _error(client.get("/nope"), 404)
    written = {p.relative_to(service.data_dir).parts[0] for p in service.data_dir.rglob("*")}
    assert written <= {"images", "jobs.sqlite3", "jobs.sqlite3-wal", "jobs.sqlite3-shm"}


def test_api_key_in_constant_time_and_open_health(make_client):
    client, _ = make_client(api_key="s3cret")
    assert _error(client.get("/metrics"), 401)["code"] == "invalid_api_key"
    _error(
        client.post("/v1/jobs", json={"prompt": "a", **FAST}, headers={"Authorization": "Bearer wrong"}), 401
    )
    _error(client.get("/metrics", headers={"Authorization": "Basic s3cret"}), 401)
    assert client.get("/metrics", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert client.get("/healthz").json()["status"] == "ok"


def test_metrics_and_health(make_client):
    client, _ = make_client()
    client.post("/v1/images/generations", json={"prompt": "1girl", **FAST, "n": 2})
    client.post("/v1/jobs", json={"prompt": "a", "n": 9})  # over the server's limit: a 400
    text = client.get("/metrics").text
    lines = dict(line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#"))
    assert lines["newbie_images_total"] == "2" and lines["newbie_image_seconds_count"] == "2"
    assert lines['newbie_jobs_total{state="done"}'] == "1" and lines["newbie_queue_depth"] == "0"
    assert lines['newbie_errors_total{kind="http_400"}'] == "1"
    assert float(lines["newbie_image_seconds_sum"]) > 0
    health = client.get("/healthz").json()
    assert health == {
        "status": "ok",
        "model": "tiny",
        "workers": 1,
        "workers_alive": 1,
        "queued": 0,
        "running": 0,
    }


def test_committed_openapi_schema_matches_the_app():
    from newbie.serve.openapi import schema_text

    committed = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"
    assert committed.read_text() == schema_text(), (
        "regenerate: python -m newbie.serve.openapi > docs/openapi.json"
    )
    paths = json.loads(committed.read_text())["paths"]
    assert {
        "/v1/images/generations",
        "/v1/jobs",
        "/v1/jobs/{job_id}",
        "/v1/jobs/{job_id}/image",
        "/healthz",
        "/metrics",
    } <= set(paths)


def test_a_lone_surrogate_is_a_422_and_commits_nothing(make_client):
    client, service = make_client()
    raw = b'{"prompt": "1girl \\ud800", "size": "32x32", "steps": 2}'
    for path in ("/v1/jobs", "/v1/images/generations"):
        r = client.post(path, content=raw, headers={"content-type": "application/json"})
        assert _error(r, 422)["code"] == "invalid_text"
    assert sum(service.store.counts().values()) == 0  # no ghost job


def test_a_deleted_image_is_410_and_a_crash_is_a_counted_json_500(make_client, monkeypatch, caplog):
    monkeypatch.setenv("NEWBIE_DEBUG", "0")
    client, service = make_client()
    job = _wait(client, client.post("/v1/jobs", json={"prompt": "1girl", **FAST}).json()["id"])
    (service.images_dir / job["id"] / "0.png").unlink()
    assert _error(client.get(job["images"][0]), 410)["code"] == "image_gone"

    def crash(job_id):
        raise RuntimeError("a bug")

    monkeypatch.setattr(service, "get", crash)
    assert _error(client.get(f"/v1/jobs/{job['id']}"), 500)["code"] == "internal_error"
    assert 'newbie_errors_total{kind="http_500"} 1' in client.get("/metrics").text
    assert "a bug" in caplog.text and "Traceback" not in caplog.text


def test_retention_deletes_finished_jobs_and_their_images(make_client):
    import dataclasses

    from tests.serve.conftest import LIMITS

    client, service = make_client(limits=dataclasses.replace(LIMITS, retention_s=0.5))
    job = _wait(client, client.post("/v1/jobs", json={"prompt": "1girl", **FAST}).json()["id"])
    assert job["state"] == "done" and service.sweep() == 0  # not old enough yet
    time.sleep(0.6)
    assert service.sweep() == 1
    assert client.get(f"/v1/jobs/{job['id']}").status_code == 404
    assert not (service.images_dir / job["id"]).exists()
