"""What `newbie ui` passes to the page: environment variables, because `streamlit run` owns the command line
and Streamlit's AppTest runs the page without one."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from newbie.ui.gallery import default_data_dir

ENV_MODEL = "NEWBIE_UI_MODEL"  # model folder; unset = the embedded demo model
ENV_DATA_DIR = "NEWBIE_UI_DATA_DIR"  # gallery folder
ENV_DEVICE = "NEWBIE_UI_DEVICE"  # cpu or cuda; unset = cuda when available
ENV_CPU_THREADS = "NEWBIE_UI_CPU_THREADS"  # torch threads when generating on the CPU; unset = torch's choice
ENV_ACCESS_KEY = "NEWBIE_UI_ACCESS_KEY"  # the page asks for it (?key=...) before showing anything
ENV_REMOTE = "NEWBIE_UI_REMOTE"  # 1: served beyond loopback; LoRA lines name DATA/adapters/ entries only


def cpu_threads() -> int:
    """Torch threads for generating on the CPU beside the web server: every core but one.

    OpenMP's worker threads wait for each other at every parallel region; when the server's own threads take
    one of their cores, the whole team stalls: on a 2-core machine, 2 threads inside Streamlit ran ten times
    slower than 1 (docs/benchmarks.md, "Figures behind the code").
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores - 1)


@dataclass(frozen=True)
class UISettings:
    model: str | None
    data_dir: Path
    device: str | None
    cpu_threads: int | None = None
    access_key: str | None = None
    remote: bool = False

    @classmethod
    def from_env(cls) -> UISettings:
        threads = os.environ.get(ENV_CPU_THREADS, "")
        return cls(
            model=os.environ.get(ENV_MODEL) or None,
            data_dir=Path(os.environ.get(ENV_DATA_DIR) or default_data_dir()).expanduser(),
            device=os.environ.get(ENV_DEVICE) or None,
            cpu_threads=int(threads) if threads.isdigit() and int(threads) > 0 else None,
            access_key=os.environ.get(ENV_ACCESS_KEY) or None,
            remote=os.environ.get(ENV_REMOTE, "") == "1",
        )

    def env(self) -> dict[str, str]:
        out = {ENV_DATA_DIR: str(self.data_dir)}
        if self.model:
            out[ENV_MODEL] = self.model
        if self.device:
            out[ENV_DEVICE] = self.device
        if self.cpu_threads:
            out[ENV_CPU_THREADS] = str(self.cpu_threads)
        if self.access_key:
            out[ENV_ACCESS_KEY] = self.access_key
        if self.remote:
            out[ENV_REMOTE] = "1"
        return out
