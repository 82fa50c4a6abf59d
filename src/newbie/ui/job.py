"""One generation started from the page: runs `Pipeline.generate()` in a thread, reports step, it/s, ETA
and a latent preview, can be cancelled, and files its images in the gallery.

The page only reads a Job's fields; it never blocks on it, so Streamlit reruns (other clicks, the polling
fragment) do not interrupt a generation. Every failure becomes a one-line `message`; the gallery is
written only after the generation succeeded, so a failed or cancelled one loses no earlier entry.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

import torch

from newbie.errors import debug_enabled, describe, failure_context
from newbie.ui.gallery import Gallery
from newbie.ui.memory import measure, out_of_memory_message
from newbie.ui.preview import Previewer

log = logging.getLogger(__name__)

# One model, one device: generations from several browser tabs queue instead of sharing memory.
_DEVICE_LOCK = threading.Lock()


class _Cancelled(Exception):
    """Raised from the progress callback to leave the sampler loop when the user pressed Cancel."""


@dataclass
class Progress:
    step: int = 0
    steps: int = 0
    rate: float | None = None  # sampler steps per second
    eta: float | None = None  # seconds left in the denoising loop
    preview: object = None  # PIL image of the current x0 estimate

    def line(self) -> str:
        rate = f"{self.rate:.2f} it/s" if self.rate else "-- it/s"
        eta = f"ETA {self.eta:.1f}s" if self.eta is not None else "ETA --"
        return f"step {self.step}/{self.steps} · {rate} · {eta}"


@dataclass
class Job:
    pipe: object  # newbie Pipeline
    prompt: str
    negative: str
    kwargs: dict
    gallery: Gallery
    previewer: Previewer | None = None
    preview_every: int = 2  # steps between previews
    status: str = "queued"  # queued, running, done, cancelled, failed
    message: str = ""
    entry_ids: list[int] = field(default_factory=list)
    progress: Progress = field(default_factory=Progress)
    _cancel: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _first_step_at: float | None = None

    @property
    def active(self) -> bool:
        return self.status in ("queued", "running")

    @property
    def cancelling(self) -> bool:
        return self._cancel.is_set() and self.active

    def start(self) -> Job:
        self._thread = threading.Thread(target=self.run, name="newbie-ui-generate", daemon=True)
        self._thread.start()
        return self

    def wait(self, timeout: float | None = None) -> bool:
        if self._thread is not None:
            self._thread.join(timeout)
        return not self.active

    def cancel(self) -> None:
        self._cancel.set()

    def run(self) -> None:
        with _DEVICE_LOCK:
            if self._cancel.is_set():
                self._finish("cancelled", "cancelled")
                return
            self.status = "running"
            self.progress.steps = int(self.kwargs.get("steps") or self.pipe.spec.sampling.steps)
            try:
                self._generate()
            except _Cancelled:
                self._finish("cancelled", "cancelled")
            except torch.OutOfMemoryError:  # the page's own advice: the plan that fits the memory free now
                self._finish("failed", self._oom())
            except Exception as e:  # the page shows one line; the traceback goes to the server log on request
                message, _ = describe(e)
                if debug_enabled():
                    log.exception("generation failed")
                self._finish("failed", message)

    def _generate(self) -> None:
        k, plan, default = self.kwargs, self.pipe.plan, self.pipe.spec.sampling
        size = (k.get("width") or default.width, k.get("height") or default.height)
        with measure(self.pipe.device) as used, failure_context(size=size, plan=plan.name if plan else None):
            gen = self.pipe.generate(self.prompt, self.negative, progress=self._on_step, **self.kwargs)
        if self.previewer is not None:
            self.previewer.learn(gen.latents, gen.images)
        for image, recipe in zip(gen.images, gen.recipes, strict=True):
            entry = self.gallery.add(
                image, recipe, seconds=used.seconds, peak_gib=used.peak_gib, peak_kind=used.peak_kind
            )
            self.entry_ids.append(entry.id)
        self._finish("done", f"done in {used.seconds:.1f}s")

    def _on_step(self, info: dict) -> None:
        if self._cancel.is_set():
            raise _Cancelled()
        now = time.perf_counter()
        step, steps = info["step"], info["steps"]
        if self._first_step_at is None:
            self._first_step_at = now
        elif step > 1:
            # From the first reported step on, so text encoding does not count as sampling time.
            rate = (step - 1) / max(now - self._first_step_at, 1e-9)
            self.progress.rate, self.progress.eta = rate, (steps - step) / rate
        self.progress.step, self.progress.steps = step, steps
        if self.previewer is not None and (step % self.preview_every == 0 or step == 1 or step == steps):
            latent = info["denoised"] if info.get("denoised") is not None else info["x"]
            self.progress.preview = self.previewer.image(latent, scale=self.pipe.codec.cfg.downscale)

    def _oom(self) -> str:
        if self.pipe.device.type == "cuda":
            torch.cuda.empty_cache()
        k = self.kwargs
        return out_of_memory_message(
            k.get("width") or self.pipe.spec.sampling.width,
            k.get("height") or self.pipe.spec.sampling.height,
            self.pipe.dtypes["dit"],
            self.pipe.device,
        )

    def _finish(self, status: str, message: str) -> None:
        self.message = message
        self.status = status
