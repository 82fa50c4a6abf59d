import pytest
import torch

from newbie.errors import NewbieError
from newbie.ui.gallery import Gallery
from newbie.ui.job import Job
from newbie.ui.preview import Previewer

SMALL = dict(steps=3, width=64, height=64, seed=3)


class Wrapped:
    """The tiny pipeline with a hook around generate(), to act in the middle of a real generation."""

    def __init__(self, pipe, around):
        self._pipe, self._around = pipe, around

    def __getattr__(self, name):
        return getattr(self._pipe, name)

    def generate(self, prompt, negative=None, *, progress=None, **kwargs):
        return self._around(self._pipe, prompt, negative, progress, kwargs)


def test_a_generation_lands_in_the_gallery_with_progress_and_preview(tiny_pipeline, tmp_path):
    gallery = Gallery(tmp_path)
    job = Job(tiny_pipeline, "1girl, red_hair", "", dict(SMALL), gallery, Previewer(tiny_pipeline.codec))
    job.start()
    assert job.wait(120)
    assert job.status == "done", job.message
    entry = gallery.get(job.entry_ids[0])
    assert entry.recipe.prompt == "1girl, red_hair" and entry.recipe.seed == 3 and entry.recipe.steps == 3
    assert entry.peak_gib > 0 and entry.peak_kind == "process RSS" and entry.seconds > 0
    p = job.progress
    assert (p.step, p.steps) == (3, 3) and p.rate > 0 and p.eta == 0
    assert p.preview.size == (64, 64)  # latent projection, upscaled to the image size
    assert "step 3/3" in p.line()


def test_cancel_mid_sampling_keeps_the_gallery(tiny_pipeline, tmp_path, recipe_factory):
    gallery = Gallery(tmp_path)
    from PIL import Image

    earlier = gallery.add(Image.new("RGB", (8, 8)), recipe_factory(), seconds=1, peak_gib=None, peak_kind="x")
    steps_seen = []

    def cancel_at_step_2(pipe, prompt, negative, progress, kwargs):
        def spy(info):
            steps_seen.append(info["step"])
            if info["step"] == 2:
                job.cancel()
            progress(info)

        return pipe.generate(prompt, negative, progress=spy, **kwargs)

    job = Job(Wrapped(tiny_pipeline, cancel_at_step_2), "1girl", "", dict(SMALL, steps=6), gallery)
    job.run()
    assert (job.status, job.message) == ("cancelled", "cancelled")
    assert steps_seen == [1, 2]  # the callback that saw the flag stopped the sampler: no step 3
    assert [e.id for e in gallery.list()] == [earlier.id]


def test_cancel_before_start(tiny_pipeline, tmp_path):
    job = Job(tiny_pipeline, "1girl", "", dict(SMALL), Gallery(tmp_path))
    job.cancel()
    job.run()
    assert job.status == "cancelled" and Gallery(tmp_path).count() == 0


@pytest.mark.parametrize(
    "error, expected",
    [
        (
            NewbieError("width 100 is not a positive multiple of 16"),
            "width 100 is not a positive multiple of 16",
        ),
        (
            RuntimeError("boom"),
            "generation failed: RuntimeError: boom (run again with --debug or NEWBIE_DEBUG=1",
        ),
        (
            RuntimeError("Expected all tensors to be on the same device, but found at least two devices"),
            "internal device/dtype mismatch (Expected all tensors to be on the same device",
        ),
    ],
)
def test_failures_are_one_line_and_lose_nothing(
    tiny_pipeline, tmp_path, recipe_factory, error, expected, monkeypatch, caplog
):
    from PIL import Image

    monkeypatch.delenv("NEWBIE_DEBUG", raising=False)
    gallery = Gallery(tmp_path)
    earlier = gallery.add(Image.new("RGB", (8, 8)), recipe_factory(), seconds=1, peak_gib=None, peak_kind="x")

    def fail(*_):
        raise error

    job = Job(Wrapped(tiny_pipeline, fail), "1girl", "", dict(SMALL), gallery)
    job.run()
    assert job.status == "failed" and job.message.startswith(expected) and "\n" not in job.message
    assert [e.id for e in gallery.list()] == [earlier.id]
    assert "Traceback" not in caplog.text  # the server log gets the traceback only with NEWBIE_DEBUG=1
    monkeypatch.setenv("NEWBIE_DEBUG", "1")
    Job(Wrapped(tiny_pipeline, fail), "1girl", "", dict(SMALL), gallery).run()
    assert "Traceback" in caplog.text


def test_bad_request_from_the_real_pipeline(tiny_pipeline, tmp_path):
    job = Job(tiny_pipeline, "1girl", "", dict(SMALL, width=100), Gallery(tmp_path))
    job.run()
    assert job.status == "failed" and "width 100" in job.message


def test_out_of_memory_is_explained(tiny_pipeline, tmp_path):
    def oom(*_):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    job = Job(Wrapped(tiny_pipeline, oom), "1girl", "", dict(SMALL), Gallery(tmp_path))
    job.run()
    assert job.status == "failed"
    assert job.message.startswith("out of memory at 64x64 (fp32 on cpu)")
