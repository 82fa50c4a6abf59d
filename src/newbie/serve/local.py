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


def local_service(args, limits):
    if getattr(args, "parallel", None):  # one image over several devices: one process group per image
        from newbie.parallel.serve import parallel_service

        return parallel_service(args, limits)
    from newbie.cli.model_args import load_from_args
    from newbie.serve.limits import PipelineValidator
    from newbie.serve.service import JobService
    from newbie.serve.worker import PipelineRunner

    runners = []
    for device in devices_from(args.device):
        pipe = load_from_args(args, device=device)
        if getattr(args, "compile", False):
            pipe.compile()
        if pipe.notice and not runners:
            print(pipe.notice, file=sys.stderr)
        runners.append(PipelineRunner(pipe, str(pipe.device)))
    first = runners[0].pipe
    return JobService(
        Path(args.data_dir), PipelineValidator(first), runners, limits, model_name=first.folder.name
    )
