"""`newbie serve --ray`: the same API on Ray Serve, one model replica per GPU, on one machine or a cluster.

Layout: one ingress replica (the FastAPI app, the SQLite queue and the images: the same JobService as
`newbie serve`, pinned to the head node so its files stay in one place) and N generator deployments of one
replica each, one GPU each. The ingress runs one worker thread per generator, so each GPU runs one job at a
time; a job streams its step progress back. Validation runs Pipeline.request on a generator, so the API
accepts exactly what the engine accepts.

Config-file form (`serve run config.yaml`), see docs/api.md:

    applications:
      - name: newbie
        route_prefix: /
        import_path: newbie.serve.ray_app:build_app
        args: {model: /models/NewBie-image-Exp0.1, replicas: 8, data_dir: /srv/newbie}
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import os
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ray import serve

from newbie.errors import NewbieError, describe, failure_context
from newbie.serve.limits import ApiLimits


@dataclass
class RayConfig:
    model: str | None = None  # model folder on every node (None: the embedded demo model)
    replicas: int = 1
    gpus_per_replica: float = 1.0  # 0 = CPU replicas (tests, demo)
    cpus_per_replica: float = 1.0
    device: str | None = None  # default: cuda with GPUs, else cpu
    dtype: str = "auto"
    data_dir: str = "newbie-serve-data"  # on the head node, where the ingress runs
    limits: dict = field(default_factory=dict)  # ApiLimits fields
    api_key_env: str = "NEWBIE_API_KEY"  # read in the ingress: no secret in the config file
    sync_timeout: float = 600.0
    ingress_on_head: bool = True
    hosts: list | None = None  # Host names answered (security.allowed_hosts); None: any

    @classmethod
    def from_dict(cls, raw: dict) -> RayConfig:
        unknown = set(raw) - set(cls.__dataclass_fields__)
        if unknown:
            raise NewbieError(f"unknown newbie Ray config keys: {', '.join(sorted(unknown))}")
        cfg = cls(**raw)
        if cfg.replicas < 1:
            raise NewbieError(f"replicas must be >= 1, got {cfg.replicas}")
        ApiLimits(**cfg.limits)  # unknown limit names fail here, not in a replica
        return cfg


@serve.deployment(max_ongoing_requests=8)  # one generation at a time (executor below) + validation calls
class Generator:
    def __init__(self, model: str | None, device: str | None, dtype: str):
        import newbie

        self.pipe = newbie.load(model, device=device, dtype=dtype)
        self.gpu = concurrent.futures.ThreadPoolExecutor(max_workers=1)  # serializes GPU work on this replica

    async def check(self, settings) -> dict:
        from newbie.serve.limits import PipelineValidator

        try:
            return {"params": PipelineValidator(self.pipe).resolve(settings)}
        except NewbieError as e:  # a bad setting keeps its field: the API names it in a 422
            return {"error": str(e), "field": getattr(e, "field", None)}

    async def generate(self, params: dict, images: dict | None = None, data_dir: str | None = None):
        """Streams {"step", "steps"} dicts, then {"images", "recipes"} or {"error"}."""
        from newbie.serve.limits import to_request
        from newbie.serve.worker import JobCancelled

        loop = asyncio.get_running_loop()
        messages: asyncio.Queue = asyncio.Queue()
        stop = threading.Event()

        def on_step(d: dict) -> None:
            loop.call_soon_threadsafe(messages.put_nowait, {"step": d["step"], "steps": d["steps"]})
            if stop.is_set():
                raise JobCancelled()

        def work() -> dict:
            try:
                req = to_request(self.pipe, params, Path(data_dir) if data_dir else None, images)
                plan = self.pipe.plan.name if self.pipe.plan else None
                with failure_context(size=(req.width, req.height), plan=plan):
                    gen = self.pipe.run(req, progress=on_step)
                return {"images": gen.images, "recipes": [r.to_json() for r in gen.recipes]}
            except Exception as e:
                return {"error": describe(e)[0]}

        def done(fut: concurrent.futures.Future) -> None:
            loop.call_soon_threadsafe(messages.put_nowait, fut.result())

        self.gpu.submit(work).add_done_callback(done)
        try:
            while True:
                msg = await messages.get()
                yield msg
                if "step" not in msg:
                    return
        finally:
            stop.set()  # the ingress cancelled the stream: the job stops at its next step


class RayRunner:
    """A worker's runner in the ingress: one generator deployment (one GPU)."""

    def __init__(self, handle, name: str):
        self.handle, self.name = handle, name

    def run(self, params: dict, on_step, images=None, data_dir=None) -> tuple[list, list]:
        from newbie.pipeline.recipe import Recipe
        from newbie.serve.worker import refuse_bad_output

        # the replicas share the ingress' data folder (one machine): adapters are read from its adapters/
        stream = self.handle.options(stream=True).generate.remote(params, images, str(data_dir or ""))
        try:
            for msg in stream:
                if "error" in msg:  # already one line from errors.describe(): passed on as it is
                    raise NewbieError(msg["error"])
                if "images" in msg:
                    recipes = [Recipe.from_json(r) for r in msg["recipes"]]
                    refuse_bad_output(recipes)
                    return msg["images"], recipes
                on_step(msg["step"], msg["steps"])
        except BaseException:
            stream.cancel()
            raise
        raise RuntimeError("the replica ended the stream without a result")


class RemoteValidator:
    """Pipeline.request on a generator replica (the ingress loads no weights). Called from API threads."""

    def __init__(self, handles):
        self.handles = itertools.cycle(handles)
        self.lock = threading.Lock()

    def resolve(self, settings) -> dict:
        with self.lock:
            handle = next(self.handles)
        out = handle.check.remote(settings).result(timeout_s=60)
        if "error" in out:
            from newbie.pipeline.request import SettingError

            raise SettingError(out["field"], out["error"]) if out.get("field") else NewbieError(out["error"])
        return out["params"]


@serve.deployment(num_replicas=1)
@serve.ingress()
class Ingress:
    def __init__(self, config: dict, *generators):
        from newbie.serve.service import JobService

        cfg = RayConfig.from_dict(config)
        runners = [RayRunner(h, f"replica{i}") for i, h in enumerate(generators)]
        self.service = JobService(
            Path(cfg.data_dir),
            RemoteValidator(generators),
            runners,
            ApiLimits(**cfg.limits),
            model_name=Path(cfg.model).name if cfg.model else "demo",
        )
        self.api_key = os.environ.get(cfg.api_key_env) or None
        self.sync_timeout = cfg.sync_timeout
        self.hosts = set(cfg.hosts) if cfg.hosts is not None else None

    def __serve_build_asgi_app__(self):
        from newbie.serve.app import create_app

        return create_app(self.service, self.api_key, self.sync_timeout, self.hosts)


def build_app(args: dict):
    """Ray Serve application builder (`import_path: newbie.serve.ray_app:build_app`)."""
    cfg = RayConfig.from_dict(dict(args))
    device = cfg.device or ("cuda" if cfg.gpus_per_replica > 0 else "cpu")
    generators = [
        Generator.options(
            name=f"NewbieGenerator{i}",
            num_replicas=1,
            ray_actor_options={"num_gpus": cfg.gpus_per_replica, "num_cpus": cfg.cpus_per_replica},
        ).bind(cfg.model, device, cfg.dtype)
        for i in range(cfg.replicas)
    ]
    # the head node keeps the queue and the images: a restarted ingress finds them again
    resources = {"node:__internal_head__": 0.001} if cfg.ingress_on_head else {}
    ingress = Ingress.options(ray_actor_options={"num_cpus": 0, "resources": resources})
    return ingress.bind(asdict(cfg), *generators)


def run_ray(args, limits: ApiLimits, api_key: str | None) -> int:
    """`newbie serve --ray`: start (or join) Ray, deploy, and serve until Ctrl-C."""
    import time

    import ray

    from newbie.serve.security import allowed_hosts

    hosts = allowed_hosts(args.host, getattr(args, "allowed_host", None))
    ray.init(
        address=args.ray_address,
        include_dashboard=False,
        runtime_env={"env_vars": {"NEWBIE_API_KEY": api_key}} if api_key else None,
    )  # reaches the ingress
    serve.start(http_options={"host": args.host, "port": args.port})
    gpus = 0.0 if (args.device or "").startswith("cpu") else 1.0
    app = build_app(
        {
            "model": args.model,
            "replicas": args.replicas,
            "gpus_per_replica": gpus,
            "device": args.device,
            "dtype": args.dtype,
            "data_dir": str(Path(args.data_dir).resolve()),
            "limits": asdict(limits),
            "sync_timeout": args.sync_timeout,
            "hosts": sorted(hosts) if hosts is not None else None,
        }
    )
    serve.run(app, name="newbie", route_prefix="/")
    print(f"newbie serve --ray: {args.replicas} replica(s), http://{args.host}:{args.port}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        serve.shutdown()
    return 0
