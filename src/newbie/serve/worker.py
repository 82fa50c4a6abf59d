"""One worker thread per device: it takes the oldest queued job, runs it, writes its images atomically and
only then marks it done, so a crash at any point leaves the job 'running' for recovery, never half-done.

The worker knows its service only through the JobHost protocol below (JobService implements it), so this
module imports nothing from newbie.serve.service."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Protocol

from newbie.errors import NewbieError, debug_enabled, describe, failure_context
from newbie.serve.store import CANCELLED, DONE, FAILED, Job

log = logging.getLogger("newbie.serve")


class Runner(Protocol):
    """Runs one job on one device: (params, on_step(step, steps), input images, data folder) -> (PIL images,
    recipes). on_step may raise to stop the job; the runner lets that exception through."""

    name: str

    def run(
        self, params: dict, on_step, images: dict | None = None, data_dir: Path | None = None
    ) -> tuple[list, list]: ...


class JobHost(Protocol):
    """What a worker needs from the service that owns it."""

    data_dir: Path

    def is_stopping(self) -> bool: ...

    def next_job(self, timeout: float) -> Job | None:
        """Claim the oldest queued job, or wait up to `timeout` s for a submit and return None."""

    def cancel_asked(self, job_id: str) -> bool: ...

    def set_progress(self, job_id: str, step: int, steps: int) -> None: ...

    def job_inputs(self, job: Job) -> dict | None: ...

    def save_images(self, job: Job, images: list, recipes: list) -> None: ...

    def finish(
        self,
        job_id: str,
        state: str,
        *,
        images: int = 0,
        seconds: float | None = None,
        error: str | None = None,
    ) -> None: ...

    def requeue(self, job_id: str) -> None: ...

    def store_trouble(self, error: Exception | None) -> None:
        """The job store failed (error) or works again (None): what /healthz and POST report meanwhile."""

    def release(self, job_id: str) -> None:
        """The job left this worker (any way): drop its progress and wake whoever waits for it."""


class JobCancelled(Exception):
    pass


class ShuttingDown(Exception):
    pass


# Backoff between retries of a failed store call: a lock held by a backup or a full disk passes; the worker
# waits it out instead of dying (the job stays 'running' in the store, so even a kill loses nothing).
BACKOFF_S = (0.1, 0.5, 1.0, 2.0, 5.0)


class Worker(threading.Thread):
    def __init__(self, host: JobHost, runner: Runner, backoff: tuple[float, ...] = BACKOFF_S):
        super().__init__(name=f"newbie-worker-{runner.name}", daemon=True)
        self.host, self.runner, self.backoff = host, runner, backoff

    def run(self) -> None:
        while not self.host.is_stopping():
            job = self._store(lambda: self.host.next_job(timeout=1.0))
            if job is not None:
                self.process(job)

    def _store(self, call):
        """call() until it succeeds or the server stops (then None): any exception from the store is
        logged once per outage, reported to the host, and retried with backoff."""
        failures = 0
        while True:
            try:
                result = call()
            except Exception as e:
                if failures == 0:
                    log.error("job store error: %s; retrying", describe(e)[0])
                self.host.store_trouble(e)
                if self.host.is_stopping():
                    return None
                time.sleep(self.backoff[min(failures, len(self.backoff) - 1)])
                failures += 1
                continue
            if failures:
                log.warning("job store works again after %d failed tries", failures)
                self.host.store_trouble(None)
            return result

    def process(self, job: Job) -> None:
        try:
            self._process(job)
        except Exception as e:  # a bug on the way to finish(): the job fails, the worker goes on
            error = f"internal error: {describe(e)[0]}"
            log.error("job %s: %s", job.id, error)
            self._store(lambda: self.host.finish(job.id, FAILED, error=error))
        finally:
            self._store(lambda: self.host.release(job.id))

    def _process(self, job: Job) -> None:
        host = self.host
        if not isinstance(job.params.get("steps"), int):  # a row written by hand or by a broken version
            log.error("job %s failed: its stored parameters have no steps", job.id)
            self._store(lambda: host.finish(job.id, FAILED, error="its stored parameters have no steps"))
            return
        host.set_progress(job.id, 0, job.params.get("total_steps", job.params["steps"]))

        def on_step(step: int, total: int) -> None:
            host.set_progress(job.id, step, total)
            if host.cancel_asked(job.id):
                raise JobCancelled()
            if host.is_stopping():
                raise ShuttingDown()

        t0 = time.perf_counter()
        try:
            if job.cancel_requested or host.cancel_asked(job.id):
                raise JobCancelled()
            with failure_context(size=(job.params.get("width"), job.params.get("height"))):
                images, recipes = self.runner.run(job.params, on_step, host.job_inputs(job), host.data_dir)
            host.save_images(job, images, recipes)
        except JobCancelled:
            self._store(lambda: host.finish(job.id, CANCELLED, error="cancelled while running"))
        except ShuttingDown:
            self._store(lambda: host.requeue(job.id))
            log.warning("job %s interrupted by shutdown; queued again", job.id)
        except Exception as e:  # any failure of one job must not stop the worker
            message, _ = describe(e)
            if debug_enabled():
                log.exception("job %s failed", job.id)
            else:
                log.error("job %s failed: %s", job.id, message)
            self._store(lambda: host.finish(job.id, FAILED, error=message))
        else:  # outside the try: a store error here is retried, never turned into a failed job
            seconds = time.perf_counter() - t0
            self._store(lambda: host.finish(job.id, DONE, images=len(images), seconds=seconds))


# The engine's own checks of a finished image (pipeline.guards.problems), which no request rule can foresee (a
# LoRA or a weights file holding NaN): such an image is a failed job with the reason, never "done".
BAD_OUTPUT = ("latent has NaN/Inf values", "image has NaN/Inf values", "image is all black")


def refuse_bad_output(recipes: list) -> None:
    for i, recipe in enumerate(recipes):
        found = [w for w in recipe.warnings if w in BAD_OUTPUT]
        if found:
            raise NewbieError(
                f"image {i} is garbage ({'; '.join(found)}): check the LoRA and model weights, or lower "
                "cfg and shift; nothing was saved"
            )


class PipelineRunner:
    """Runs jobs on a loaded Pipeline in this process (`newbie serve`)."""

    def __init__(self, pipe, name: str):
        self.pipe, self.name = pipe, name
        # a job and a prompt expansion share the pipeline's Gemma (and a memory plan's stages): one at a time
        self.lock = threading.Lock()

    def run(self, params: dict, on_step, images=None, data_dir=None) -> tuple[list, list]:
        from newbie.serve.limits import to_request

        req = to_request(self.pipe, params, data_dir, images)
        plan = self.pipe.plan.name if self.pipe.plan else None
        with failure_context(size=(req.width, req.height), plan=plan), self.lock:
            gen = self.pipe.run(req, progress=lambda d: on_step(d["step"], d["steps"]))
        refuse_bad_output(gen.recipes)
        return gen.images, gen.recipes

    def expand(self, text: str, **kwargs):
        """`POST /v1/prompts/expand`: the pipeline's own Gemma writes the XML (newbie.prompts.llm)."""
        from newbie.prompts.llm import expand_with_pipeline

        with self.lock:
            return expand_with_pipeline(self.pipe, text, **kwargs)
