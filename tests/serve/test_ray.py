"""Ray Serve on a local CPU Ray: two demo-model replicas behind the same API, validated by a replica,
running two jobs at the same time. One Ray start for the whole module (it costs seconds)."""

import io
import json
import time

import httpx
import pytest
from PIL import Image

from tests.serve.live_server import free_port

ray = pytest.importorskip("ray", reason="ray[serve] is in requirements-extras.txt")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_url(tmp_path_factory):
    from ray import serve

    from newbie.serve.ray_app import build_app

    port = free_port()
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200 * 2**20, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        app = build_app(
            {
                "replicas": 2,
                "gpus_per_replica": 0,
                "cpus_per_replica": 0.5,
                "data_dir": str(tmp_path_factory.mktemp("ray") / "data"),
                "limits": {"max_n": 2},
                "hosts": ["127.0.0.1", "localhost", "::1"],
            }
        )
        serve.run(app, name="newbie", route_prefix="/")
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()


def _wait(url, job_id, timeout=120):
    deadline = time.monotonic() + timeout
    while (job := httpx.get(f"{url}/v1/jobs/{job_id}").json())["state"] not in (
        "done",
        "failed",
        "cancelled",
    ):
        assert time.monotonic() < deadline, job
        time.sleep(0.1)
    return job


def test_two_replicas_serve_the_same_api(ray_url):
    health = httpx.get(ray_url + "/healthz").json()
    assert health["workers"] == 2 and health["workers_alive"] == 2
    body = {"prompt": "1girl, red_hair", "size": "64x64", "steps": 6}
    ids = [httpx.post(ray_url + "/v1/jobs", json={**body, "seed": k}).json()["id"] for k in range(2)]
    a, b = (_wait(ray_url, i) for i in ids)
    assert a["state"] == b["state"] == "done" and a["step"] == 6
    assert b["started"] < a["finished"]  # both replicas worked at the same time
    for k, job in enumerate((a, b)):
        with Image.open(io.BytesIO(httpx.get(job["images"][0]).content)) as im:
            assert im.size == (64, 64) and json.loads(im.info["newbie"])["seed"] == k
    r = httpx.post(
        ray_url + "/v1/images/generations", timeout=120, json={**body, "seed": 0, "response_format": "url"}
    )
    assert r.status_code == 200
    assert (
        httpx.get(r.json()["data"][0]["url"]).content == httpx.get(a["images"][0]).content
    )  # same seed, same PNG


def test_validation_comes_from_the_engine_on_a_replica(ray_url):
    r = httpx.post(ray_url + "/v1/jobs", json={"prompt": "a", "sampler": "ddim"})
    assert r.status_code == 422 and "unknown sampler" in r.json()["error"]["message"]
    r = httpx.post(ray_url + "/v1/jobs", json={"prompt": "a", "size": "4096x16"})  # the replica's model spec
    assert r.status_code == 422 and r.json()["error"]["param"] == "size"
    r = httpx.post(ray_url + "/v1/jobs", json={"prompt": "a", "n": 3})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_n"
    assert httpx.post(ray_url + "/v1/jobs", json={"prompt": "<a>"}).status_code == 422


def test_the_ingress_checks_the_host(ray_url):
    r = httpx.get(ray_url + "/healthz", headers={"host": "evil.example"})
    assert r.status_code == 421 and r.json()["error"]["code"] == "bad_host"
