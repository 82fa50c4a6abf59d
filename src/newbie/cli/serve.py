"""`newbie serve`: the HTTP API on one machine (one worker per device), or on a Ray cluster (--ray)."""

from __future__ import annotations

import ipaddress
import os
import sys

from newbie.errors import NewbieError

DEFAULT_PORT = 8000


def add_parser(subparsers) -> None:
    from newbie.cli.model_args import add_model_args
    from newbie.cli.request_args import HelpFormatter  # a default shown once: none where the help states it

    p = subparsers.add_parser(
        "serve",
        help="HTTP API: OpenAI-compatible images and a durable job queue",
        formatter_class=HelpFormatter,
    )
    p.add_argument(
        "--host", default="127.0.0.1", help="address to bind; anything but loopback needs --api-key"
    )
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="port to listen on")
    p.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        help="a Host name the API answers to besides the bound address and loopback (repeatable; '*': any)",
    )
    p.add_argument(
        "--data-dir",
        default="newbie-serve-data",
        help="job database and images; nothing is read or written outside it",
    )
    p.add_argument(
        "--api-key",
        help="require 'Authorization: Bearer KEY' (default: $NEWBIE_API_KEY, else none)",
    )
    p.add_argument("--max-side", type=int, default=2048, help="largest width or height a request may ask for")
    p.add_argument("--max-pixels", type=int, default=2048 * 2048, help="largest width x height per image")
    p.add_argument("--max-steps", type=int, default=100, help="most sampler steps per request")
    p.add_argument("--max-n", type=int, default=4, help="most images per request")
    p.add_argument("--max-prompt-chars", type=int, default=16_384, help="longest prompt, in characters")
    p.add_argument(
        "--max-body-bytes", type=int, default=32 * 1024 * 1024, help="largest request body (base64 images)"
    )
    p.add_argument("--max-queue", type=int, default=1000, help="most jobs waiting; more get 503")
    p.add_argument(
        "--max-body-buffer",
        type=int,
        default=256 * 1024 * 1024,
        help="bytes of request bodies held at once, all clients together (past it: 503)",
    )
    p.add_argument(
        "--body-timeout", type=float, default=60.0, help="seconds a request body may take to arrive (408)"
    )
    p.add_argument("--max-expands", type=int, default=4, help="prompt expansions running or waiting")
    p.add_argument(
        "--retention-hours",
        type=float,
        default=0.0,
        help="delete finished jobs and their images this long after they finish (0: keep them)",
    )
    p.add_argument(
        "--sync-timeout", type=float, default=600.0, help="seconds POST /v1/images/generations waits"
    )
    p.add_argument(
        "--ray", action="store_true", help="run on Ray Serve: one replica per GPU behind the same API"
    )
    p.add_argument("--replicas", type=int, default=1, help="with --ray: model replicas (one GPU each)")
    p.add_argument("--ray-address", help="with --ray: an existing cluster (default: start a local Ray)")
    p.add_argument("--print-openapi", action="store_true", help="print the OpenAPI schema and exit")
    add_model_args(p)
    p.add_argument(
        "--parallel",
        help="one image over several devices: sp:N, cfg:2 or cfg:2,sp:N; the "
        "--device list is cut into groups of that many (default: one replica per device)",
    )
    p.epilog = (
        "--device takes a comma list (cuda:0,cuda:1): one worker per device, or with --parallel one "
        "worker per group of devices."
    )
    p.set_defaults(func=run)


def limits_from(args):
    from newbie.serve.limits import ApiLimits

    values = dict(
        max_side=args.max_side,
        max_pixels=args.max_pixels,
        max_steps=args.max_steps,
        max_n=args.max_n,
        max_prompt_chars=args.max_prompt_chars,
        max_body_bytes=args.max_body_bytes,
        max_queue=args.max_queue,
        max_body_buffer=args.max_body_buffer,
        max_expands=args.max_expands,
    )
    for name, value in values.items():
        if value < 1:
            raise NewbieError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if not args.body_timeout > 0:
        raise NewbieError(f"--body-timeout must be > 0, got {args.body_timeout}")
    if not 0 <= args.retention_hours < float("inf"):
        raise NewbieError(f"--retention-hours must be >= 0, got {args.retention_hours}")
    return ApiLimits(**values, body_timeout_s=args.body_timeout, retention_s=args.retention_hours * 3600)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run(args) -> int:
    if args.print_openapi:
        import json

        from newbie.serve.openapi import schema

        print(json.dumps(schema(), indent=2, sort_keys=True))
        return 0
    api_key = args.api_key or os.environ.get("NEWBIE_API_KEY") or None
    if not 0 < args.port < 65536:
        raise NewbieError(f"--port must be 1..65535, got {args.port}")
    if not is_loopback(args.host) and not api_key:
        raise NewbieError(
            f"binding to {args.host} exposes the server to the network: give --api-key (or "
            "NEWBIE_API_KEY), or keep the default --host 127.0.0.1"
        )
    limits = limits_from(args)
    if not args.ray:  # before the model loads and before the URL is printed
        from newbie.cli.ports import check_port_free

        check_port_free(args.host, args.port)
    if args.ray and getattr(args, "parallel", None):
        raise NewbieError("--parallel groups devices on one machine; it cannot be combined with --ray")
    if args.ray and getattr(args, "comfy_dir", None):
        if args.model:
            raise NewbieError("with --ray give --model or --comfy-dir, not both")
        args.model = (
            args.comfy_dir
        )  # a ComfyUI models/ folder is also a model path (newbie.loading.folder.locate)
    if args.ray:
        from newbie.serve.ray_app import run_ray

        return run_ray(args, limits, api_key)
    try:
        import uvicorn
    except ModuleNotFoundError:
        raise NewbieError(
            "`newbie serve` needs fastapi and uvicorn: pip install -r requirements-extras.txt"
        ) from None
    from newbie.cli.model_args import load_kwargs
    from newbie.serve.app import create_app
    from newbie.serve.local import local_service

    service = local_service(args, limits, load_kwargs(args))
    where = f"http://{args.host}:{args.port}"
    workers = len(service.workers)
    print(
        f"newbie serve: {service.model_name}, {workers} worker(s), data in {service.data_dir}, {where}",
        file=sys.stderr,
        flush=True,
    )
    from newbie.serve.security import allowed_hosts

    app = create_app(service, api_key, args.sync_timeout, allowed_hosts(args.host, args.allowed_host))
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", timeout_graceful_shutdown=30)
    return 0
