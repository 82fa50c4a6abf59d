"""The job service behind the HTTP API: accept (validate, then commit to SQLite), run (one worker thread
per GPU), cancel, and wake the requests that wait for a result. The same object runs under uvicorn
(`newbie serve`) and inside the Ray Serve ingress (`newbie serve --ray`); only the runners differ."""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
import sqlite3
import threading
import time
import uuid
from pathlib import Path

from newbie.pipeline.images import save_png
from newbie.serve.errors import ApiError
from newbie.serve.inputs import load_inputs, save_inputs
from newbie.serve.limits import ApiLimits
from newbie.serve.metrics import Metrics
from newbie.serve.store import FINAL, Job, JobStore
from newbie.serve.worker import Runner, Worker

log = logging.getLogger("newbie.serve")
JOB_ID = re.compile(r"[0-9a-f]{32}")
SWEEP_EVERY_S = 600.0  # how often an idle worker deletes finished jobs past the retention


class Waiters:
    """asyncio events that worker threads can set: how a synchronous request learns its job is over."""

    def __init__(self):
        self._lock = threading.Lock()
        self._events: dict[str, list[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = {}

    def add(self, job_id: str) -> asyncio.Event:
        event = asyncio.Event()
        with self._lock:
            self._events.setdefault(job_id, []).append((asyncio.get_running_loop(), event))
        return event

    def remove(self, job_id: str, event: asyncio.Event) -> None:
        with self._lock:
            rest = [(lp, ev) for lp, ev in self._events.get(job_id, []) if ev is not event]
            if rest:
                self._events[job_id] = rest
            else:
                self._events.pop(job_id, None)

    def notify(self, job_id: str) -> None:
        with self._lock:
            waiting = list(self._events.get(job_id, []))
        for loop, event in waiting:
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # that request's loop is gone (client went away during shutdown)
                pass


class JobService:
    """The API's jobs, and the host of the workers (the JobHost methods under "-- workers --")."""

    def __init__(
        self,
        data_dir: Path,
        validator,
        runners: list[Runner],
        limits: ApiLimits = ApiLimits(),
        model_name: str = "",
    ):
        self.data_dir = Path(data_dir).resolve()
        self.images_dir = self.data_dir / "images"
        self.images_dir.mkdir(parents=True, exist_ok=True)
        self.store = JobStore(self.data_dir / "jobs.sqlite3")
        self.validator, self.limits, self.model_name = validator, limits, model_name
        self.metrics = Metrics()
        self.waiters = Waiters()
        self._progress: dict[str, tuple[int, int]] = {}  # running job -> (step, steps), kept by its worker
        self._cancels: set[str] = set()  # running jobs whose cancel was asked for in this process
        self._last_sweep = 0.0
        self._store_error: str | None = None  # the last store failure a worker met, until one succeeds
        self._stopping = threading.Event()
        self._wake = threading.Condition()
        self.workers = [Worker(self, r) for r in runners]

    # -- lifecycle --

    def start(self) -> None:
        for note in self.store.recover():
            log.warning("recovered job %s", note)
        for tmp in self.images_dir.glob("*/.newbie-*"):  # save_png's temporary file, orphaned by a kill
            tmp.unlink(missing_ok=True)
        self.sweep()
        for w in self.workers:
            w.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Running jobs stop at their next step and go back to the queue for the next start."""
        self._stopping.set()
        with self._wake:
            self._wake.notify_all()
        for w in self.workers:
            if w.is_alive():
                w.join(timeout)
        self.store.close()

    # -- jobs --

    def unavailable(self) -> str | None:
        """Why no job can run now (no worker alive, the store failing), or None."""
        if not any(w.is_alive() for w in self.workers):
            return "no worker is running"
        if self._store_error:
            return f"the job store fails: {self._store_error}"
        return None

    def submit(self, params: dict, images: dict | None = None) -> Job:
        """Queue a job; its input images go to its folder first, so a queued job always has them. Refused
        (503) while no job could run: a 202 then would be a promise nobody keeps."""
        reason = self.unavailable()
        if reason:
            raise ApiError(503, f"the server cannot run jobs now ({reason}); try again later", "unavailable")
        job_id = uuid.uuid4().hex
        try:
            if self.store.counts()["queued"] >= self.limits.max_queue:
                raise ApiError(
                    503, f"the queue is full ({self.limits.max_queue} jobs); try again later", "queue_full"
                )
            if images:
                save_inputs(self.images_dir / job_id, images)
            job = self.store.add(params, params["n"], job_id)
        except (sqlite3.Error, OSError) as e:
            self.store_trouble(e)
            raise ApiError(503, f"the job store fails ({e}); try again later", "store_unavailable") from None
        with self._wake:
            self._wake.notify()
        return job

    def get(self, job_id: str) -> Job:
        try:
            job = self.store.get(job_id) if JOB_ID.fullmatch(job_id) else None
        except sqlite3.Error as e:
            raise ApiError(503, f"the job store fails ({e}); try again later", "store_unavailable") from None
        if job is None:
            raise ApiError(404, f"no job '{job_id[:64]}'", "job_not_found")
        return job

    def cancel(self, job_id: str) -> Job:
        job = self.get(job_id)
        if job.state in FINAL:
            raise ApiError(409, f"job {job_id} is already {job.state}; nothing to cancel", "job_finished")
        self._cancels.add(job_id)  # before the store: the worker may check between the two
        state = self.store.cancel(job_id)
        if state in FINAL:  # cancelled while queued: it finishes here, not on a worker
            self._cancels.discard(job_id)
            self.metrics.job_finished(state)
            self.waiters.notify(job_id)
        return self.get(job_id)

    async def wait(self, job_id: str, timeout: float) -> Job:
        """The job once it is done, failed or cancelled; ApiError 504 after `timeout` seconds."""
        event = self.waiters.add(job_id)
        try:
            job = self.get(job_id)
            if job.state not in FINAL:
                try:
                    await asyncio.wait_for(event.wait(), timeout)
                except asyncio.TimeoutError:
                    raise ApiError(
                        504,
                        f"job {job_id} is not done after {timeout:g} s; it stays queued, poll "
                        f"GET /v1/jobs/{job_id}",
                        "timeout",
                    ) from None
                job = self.get(job_id)
            return job
        finally:
            self.waiters.remove(job_id, event)

    def step(self, job: Job) -> int:
        if job.state == "done":
            return job.params.get("total_steps", job.params.get("steps", 0))
        return self._progress.get(job.id, (0, 0))[0] if job.state == "running" else 0

    def cancel_asked(self, job_id: str) -> bool:
        """A cancel of this running job was asked for in this process (the store knows it too)."""
        return job_id in self._cancels

    def image_path(self, job_id: str, index: int) -> Path:
        """The only way a path is made from request data: a checked job id and an integer."""
        if not JOB_ID.fullmatch(job_id) or not 0 <= index < self.limits.max_n:
            raise ApiError(404, f"no image {index} for job '{job_id[:64]}'", "image_not_found")
        path = self.images_dir / job_id / f"{index}.png"
        assert path.resolve().is_relative_to(self.data_dir)
        return path

    def existing_image(self, job_id: str, index: int) -> Path:
        """image_path(), or 410 when the file of a done job was deleted (by an operator, a retention sweep)."""
        path = self.image_path(job_id, index)
        if not path.is_file():
            raise ApiError(410, f"image {index} of job {job_id} is no longer on the server", "image_gone")
        return path

    def expand(self, text: str, llm: bool = True, **kwargs):
        """A prompt expansion on the first runner that holds a pipeline's Gemma in this process; the
        rule-based expander when asked for, or when there is none (Ray replicas keep theirs remote)."""
        from newbie.prompts.llm import expand_llm

        runner = next((w.runner for w in self.workers if hasattr(w.runner, "expand")), None) if llm else None
        if runner is None:
            out = expand_llm(text)
            if out.source == "rules":
                out.note = "no Gemma in this server process: rule-based expansion" if llm else ""
            return out
        return runner.expand(text, **kwargs)

    def health(self) -> dict:
        """Liveness: every worker alive and the store readable and writable (as far as the workers saw)."""
        alive = sum(w.is_alive() for w in self.workers)
        reason = None
        try:
            counts = self.store.counts()
        except sqlite3.Error as e:
            counts, reason = {"queued": 0, "running": 0}, f"the job store cannot be read: {e}"
        if alive < len(self.workers):
            reason = f"{len(self.workers) - alive} of {len(self.workers)} workers stopped"
        reason = reason or (f"the job store fails: {self._store_error}" if self._store_error else None)
        health = {
            "status": "degraded" if reason else "ok",
            "model": self.model_name,
            "workers": len(self.workers),
            "workers_alive": alive,
            "queued": counts["queued"],
            "running": counts["running"],
        }
        if reason:
            health["reason"] = reason
        return health

    def metrics_text(self) -> str:
        try:
            counts = self.store.counts()
        except sqlite3.Error:
            counts = {}  # /metrics still answers; /healthz says why
        return self.metrics.render(counts, len(self.workers), sum(w.is_alive() for w in self.workers))

    # -- workers (newbie.serve.worker.JobHost) --

    def store_trouble(self, error: Exception | None) -> None:
        self._store_error = None if error is None else (str(error).splitlines() or [type(error).__name__])[0]

    def is_stopping(self) -> bool:
        return self._stopping.is_set()

    def sweep(self) -> int:
        """With a retention: delete finished jobs older than it, rows first (a GET then says 404, never
        points at a missing file), then their folders. Returns how many."""
        self._last_sweep = time.monotonic()
        if not self.limits.retention_s:
            return 0
        ids = self.store.purge(time.time() - self.limits.retention_s)
        for job_id in ids:
            if JOB_ID.fullmatch(job_id):
                shutil.rmtree(self.images_dir / job_id, ignore_errors=True)
        if ids:
            log.info("retention: deleted %d finished job(s)", len(ids))
        return len(ids)

    def next_job(self, timeout: float) -> Job | None:
        job = self.store.claim()
        self._store_error = None  # the store answered (whoever saw it fail before)
        if job is None and time.monotonic() - self._last_sweep > SWEEP_EVERY_S:
            self.sweep()
        if job is None:
            with self._wake:
                self._wake.wait(timeout)  # a submit wakes us; the timeout covers a notify sent earlier
        return job

    def set_progress(self, job_id: str, step: int, steps: int) -> None:
        self._progress[job_id] = (step, steps)

    def job_inputs(self, job: Job) -> dict | None:
        return load_inputs(self.images_dir / job.id, job.params)

    def save_images(self, job: Job, images: list, recipes: list) -> None:
        for i, (image, recipe) in enumerate(zip(images, recipes)):
            save_png(image, recipe, self.image_path(job.id, i), durable=True)

    def finish(
        self,
        job_id: str,
        state: str,
        *,
        images: int = 0,
        seconds: float | None = None,
        error: str | None = None,
    ) -> None:
        self.store.finish(job_id, state, error=error, seconds=seconds)
        self.metrics.job_finished(state, images, seconds)

    def requeue(self, job_id: str) -> None:
        self.store.requeue(job_id)

    def release(self, job_id: str) -> None:
        self._progress.pop(job_id, None)
        self._cancels.discard(job_id)
        self.waiters.notify(job_id)
