import pytest

from newbie.serve.limits import ApiLimits, PipelineValidator

LIMITS = ApiLimits(
    max_side=256,
    max_pixels=128 * 128,
    max_steps=400,
    max_n=3,
    max_prompt_chars=2000,
    max_body_bytes=8192,
    max_queue=50,
)
FAST = {"size": "32x32", "steps": 2, "seed": 7}  # the tiny checkpoint defaults to 1024x1024, 18 steps


@pytest.fixture
def make_client(tiny_pipeline, tmp_path):
    """A TestClient over a JobService on the tiny pipeline; the worker thread stops with the client."""
    from fastapi.testclient import TestClient

    from newbie.serve.app import create_app
    from newbie.serve.service import JobService
    from newbie.serve.worker import PipelineRunner

    opened = []

    def make(api_key=None, limits=LIMITS, data_dir=None):
        service = JobService(
            data_dir or tmp_path / "data",
            PipelineValidator(tiny_pipeline),
            [PipelineRunner(tiny_pipeline, "cpu")],
            limits,
            model_name="tiny",
        )
        client = TestClient(create_app(service, api_key, sync_timeout=60))
        client.__enter__()
        opened.append(client)
        return client, service

    yield make
    for client in opened:
        client.__exit__(None, None, None)
