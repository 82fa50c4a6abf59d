"""`newbie serve` on one machine: one Pipeline and one worker thread per device."""

from __future__ import annotations

import sys
from pathlib import Path

from newbie.errors import NewbieError


def devices_from(text: str | None) -> list[str | None]:
    if not text:
        return [None]  # newbie.load's default: cuda when available
    devices = [d.strip() for d in text.split(",") if d.strip()]
    if len(set(devices)) != len(devices):
        raise NewbieError(f"--device lists a device twice: {text}")
    return devices


def local_service(args, limits, load: dict):
    """The JobService of `newbie serve` without Ray. load: newbie.load()'s model keywords without the device
    (newbie.cli.model_args.load_kwargs); args: the serve flags (device, vram, parallel, compile, step cache)."""
    if getattr(args, "parallel", None):  # one image over several devices: one process group per image
        from newbie.serve.parallel import parallel_service

        return parallel_service(args, limits, load)
    from newbie.pipeline.load import load as load_pipeline
    from newbie.pipeline.load import warm_up
    from newbie.serve.limits import PipelineValidator
    from newbie.serve.service import JobService
    from newbie.serve.worker import PipelineRunner

    runners = []
    for device in devices_from(args.device):
        pipe = load_pipeline(**load, device=device, vram=getattr(args, "vram", None))
        if getattr(args, "step_cache", 0.0):
            pipe.step_cache = args.step_cache
        if getattr(args, "compile", False):
            pipe.compile()  # its warm-up images pay the first request's one-time costs too
        elif pipe.device.type == "cuda":
            warm_up(
                pipe
            )  # the first request's one-time GPU costs (first encode, first step) paid before /healthz
        if pipe.notice and not runners:
            print(pipe.notice, file=sys.stderr)
        runners.append(PipelineRunner(pipe, str(pipe.device)))
    first = runners[0].pipe
    return JobService(
        Path(args.data_dir), PipelineValidator(first), runners, limits, model_name=first.folder.name
    )
