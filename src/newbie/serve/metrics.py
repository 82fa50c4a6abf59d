"""Prometheus text exposition, written by hand: a few counters and one histogram need no client library."""

from __future__ import annotations

import threading
from collections import Counter

# seconds per image: from the toy model on a CPU (~1 s) to the full model at 2048x2048 on a slow GPU
BUCKETS = (0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300)


class Metrics:
    def __init__(self):
        self._lock = threading.Lock()
        self.images = 0
        self.jobs = Counter()  # final state -> count
        self.http_errors = Counter()  # status -> count
        self._bucket_counts = [0] * len(BUCKETS)
        self._seconds_sum = 0.0
        self._seconds_count = 0

    def job_finished(self, state: str, n_images: int = 0, seconds: float | None = None) -> None:
        with self._lock:
            self.jobs[state] += 1
            self.images += n_images
            if seconds is not None and n_images:
                per_image = seconds / n_images
                for _ in range(n_images):
                    self._observe(per_image)

    def _observe(self, value: float) -> None:
        self._seconds_sum += value
        self._seconds_count += 1
        for i, bound in enumerate(BUCKETS):
            if value <= bound:
                self._bucket_counts[i] += 1

    def http_error(self, status: int) -> None:
        with self._lock:
            self.http_errors[status] += 1

    def render(self, counts: dict[str, int], workers: int, workers_alive: int) -> str:
        with self._lock:
            lines = [
                "# HELP newbie_queue_depth Jobs accepted and waiting for a worker.",
                "# TYPE newbie_queue_depth gauge",
                f"newbie_queue_depth {counts.get('queued', 0)}",
                "# HELP newbie_jobs_running Jobs on a worker now.",
                "# TYPE newbie_jobs_running gauge",
                f"newbie_jobs_running {counts.get('running', 0)}",
                "# HELP newbie_workers_alive GPU workers whose thread is running.",
                "# TYPE newbie_workers_alive gauge",
                f"newbie_workers_alive {workers_alive}",
                "# HELP newbie_workers GPU workers started (one per device or Ray replica).",
                "# TYPE newbie_workers gauge",
                f"newbie_workers {workers}",
                "# HELP newbie_images_total Images generated since the server started.",
                "# TYPE newbie_images_total counter",
                f"newbie_images_total {self.images}",
                "# HELP newbie_jobs_total Jobs finished since the server started, by final state.",
                "# TYPE newbie_jobs_total counter",
            ]
            lines += [
                f'newbie_jobs_total{{state="{s}"}} {self.jobs[s]}' for s in ("done", "failed", "cancelled")
            ]
            lines += [
                "# HELP newbie_errors_total Failed jobs and HTTP error replies since the server started.",
                "# TYPE newbie_errors_total counter",
                f'newbie_errors_total{{kind="job_failed"}} {self.jobs["failed"]}',
            ]
            lines += [
                f'newbie_errors_total{{kind="http_{s}"}} {c}' for s, c in sorted(self.http_errors.items())
            ]
            lines += [
                "# HELP newbie_image_seconds Generation time per image (a job's time / its images).",
                "# TYPE newbie_image_seconds histogram",
            ]
            lines += [
                f'newbie_image_seconds_bucket{{le="{b:g}"}} {c}' for b, c in zip(BUCKETS, self._bucket_counts)
            ]
            lines += [
                f'newbie_image_seconds_bucket{{le="+Inf"}} {self._seconds_count}',
                f"newbie_image_seconds_sum {self._seconds_sum:.6f}",
                f"newbie_image_seconds_count {self._seconds_count}",
            ]
        return "\n".join(lines) + "\n"
