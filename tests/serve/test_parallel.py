"""`newbie serve --parallel sp:2 --device cpu`: the HTTP API's images come from a kept group of two CPU
processes and equal the one-process images within one level; the group validates requests too."""

import argparse
import base64
import io

import numpy as np
from PIL import Image

from newbie.cli.model_args import load_kwargs
from newbie.cli.serve import add_parser
from newbie.serve.parallel import parallel_service

from .conftest import FAST, LIMITS


def _args(model_dir, tmp_path, *extra):
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    return parser.parse_args(
        [
            "serve",
            "--model",
            str(model_dir),
            "--dtype",
            "fp32",
            "--device",
            "cpu",
            "--data-dir",
            str(tmp_path / "data"),
            *extra,
        ]
    )


def test_serve_with_an_sp2_group(tiny_model_dir, tiny_pipeline, tmp_path):
    from fastapi.testclient import TestClient

    from newbie.serve.app import create_app

    args = _args(tiny_model_dir, tmp_path, "--parallel", "sp:2")
    service = parallel_service(args, LIMITS, load_kwargs(args))
    runner = service.workers[0].runner
    try:
        with TestClient(create_app(service, None, sync_timeout=120)) as client:
            r = client.post("/v1/images/generations", json={"prompt": "1girl, red_hair", "n": 2, **FAST})
            assert r.status_code == 200, r.text
            ref = tiny_pipeline.generate("1girl, red_hair", seed=7, steps=2, width=32, height=32, batch=2)
            for item, expected in zip(r.json()["data"], ref.images):
                with Image.open(io.BytesIO(base64.b64decode(item["b64_json"]))) as im:
                    diff = np.abs(np.asarray(im, dtype=int) - np.asarray(expected, dtype=int))
                    assert diff.max() <= 1
            bad = client.post("/v1/images/generations", json={"prompt": "x", "size": "33x32"})
            assert bad.status_code == 400 and "multiple of 16" in bad.text
    finally:
        runner.close()
    assert runner.group is None
