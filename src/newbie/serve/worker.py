"""One worker thread per device: it takes the oldest queued job, runs it, writes its images atomically and
only then marks it done, so a crash at any point leaves the job 'running' for recovery, never half-done."""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from newbie.pipeline.images import save_png
from newbie.serve.inputs import load_inputs
from newbie.serve.store import CANCELLED, DONE, FAILED

if TYPE_CHECKING:
    from newbie.serve.service import JobService, Runner

log = logging.getLogger("newbie.serve")


class JobCancelled(Exception):
    pass


class ShuttingDown(Exception):
    pass


def one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:300] if text else ''}".rstrip(": ")


class Worker(threading.Thread):
    def __init__(self, service: JobService, runner: Runner):
        super().__init__(name=f"newbie-worker-{runner.name}", daemon=True)
        self.service, self.runner = service, runner

    def run(self) -> None:
        s = self.service
        while not s.stopping.is_set():
            job = s.store.claim()
            if job is None:
                with s.wake:
                    s.wake.wait(
                        timeout=1.0
                    )  # a submit wakes us; the timeout covers a notify sent before we waited
                continue
            self.process(job)

    def process(self, job) -> None:
        s = self.service
        steps = job.params.get("total_steps", job.params["steps"])
        s.progress[job.id] = (0, steps)

        def on_step(step: int, total: int) -> None:
            s.progress[job.id] = (step, total)
            if job.id in s.cancels:
                raise JobCancelled()
            if s.stopping.is_set():
                raise ShuttingDown()

        t0 = time.perf_counter()
        try:
            if job.cancel_requested or job.id in s.cancels:
                raise JobCancelled()
            inputs = load_inputs(s.images_dir / job.id, job.params)
            images, recipes = self.runner.run(job.params, on_step, inputs, s.data_dir)
            for i, (image, recipe) in enumerate(zip(images, recipes)):
                save_png(image, recipe, s.image_path(job.id, i))
            seconds = time.perf_counter() - t0
            s.store.finish(job.id, DONE, seconds=seconds)
            s.metrics.job_finished(DONE, len(images), seconds)
        except JobCancelled:
            s.store.finish(job.id, CANCELLED, error="cancelled while running")
            s.metrics.job_finished(CANCELLED)
        except ShuttingDown:
            s.store.requeue(job.id)
            log.warning("job %s interrupted by shutdown; queued again", job.id)
        except Exception as e:  # any failure of one job must not stop the worker
            log.exception("job %s failed", job.id)
            s.store.finish(job.id, FAILED, error=one_line(e))
            s.metrics.job_finished(FAILED)
        finally:
            s.progress.pop(job.id, None)
            s.cancels.discard(job.id)
            s.waiters.notify(job.id)


class PipelineRunner:
    """Runs jobs on a loaded Pipeline in this process (`newbie serve`)."""

    def __init__(self, pipe, name: str):
        self.pipe, self.name = pipe, name

    def run(self, params: dict, on_step, images=None, data_dir=None) -> tuple[list, list]:
        from newbie.serve.limits import to_request

        req = to_request(self.pipe, params, data_dir, images)
        gen = self.pipe.run(req, progress=lambda d: on_step(d["step"], d["steps"]))
        return gen.images, gen.recipes
