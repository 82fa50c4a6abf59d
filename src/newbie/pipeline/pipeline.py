"""The Pipeline: the one code path behind the CLI, the Python API, the UI and the server. load() builds one
(newbie.pipeline.load); newbie.pipeline.guards holds what happens when numbers go bad or memory runs out.

Read `Pipeline._run` top-down: encode (text, and the init image through the VAE) -> schedule -> sample
(newbie.sampling: the guided model and the sampler loop, pure functions over tensors) -> optional hires pass
-> decode -> composite. Memory plans only decide where weights live during each stage.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.nn import functional as F

from newbie.adapters import recipe as adapter_recipe
from newbie.adapters.stack import AdapterStack
from newbie.config import ModelSpec
from newbie.device import DTYPES, synchronize
from newbie.errors import NewbieError
from newbie.loading.folder import ModelFolder
from newbie.loading.hashing import BackgroundHashes
from newbie.model.embed_cache import EmbeddingCache
from newbie.model.step_cache import StepCache
from newbie.model.text import TextEmbeds, TextEncoders
from newbie.model.vae import LatentCodec
from newbie.pipeline import guards, img2img
from newbie.pipeline.images import to_pil
from newbie.pipeline.recipe import Recipe
from newbie.pipeline.request import Request, Settings, carried_fields, resolve
from newbie.precision.guard import checked
from newbie.sampling.guidance import cfg_model
from newbie.sampling.loop import Start, sample
from newbie.sampling.samplers import SAMPLERS
from newbie.sampling.schedules import schedule_sigmas
from newbie.version import __version__


@dataclass
class Generation:
    """The result of one request: PIL images, one Recipe each (what re-makes it: `newbie generate --from`),
    the final latents (B, 16, H/8, W/8) on the CPU, timings in seconds (encode_s, denoise_s, decode_s) and
    what the guards did (NaN/overflow re-runs, out-of-memory step-downs)."""

    images: list  # PIL images
    recipes: list[Recipe]
    latents: torch.Tensor
    timings: dict[str, float]
    guard_events: list[str] = field(default_factory=list)

    def save(self, path: str | Path) -> list[Path]:
        """Write the PNGs, each with its recipe (so `newbie generate --from` re-makes it): `path` for one
        image, path-1.png, path-2.png, ... for a batch. Returns the paths written."""
        from newbie.pipeline.images import batch_paths, save_png

        path = Path(path)
        if path.suffix.lower() != ".png":
            raise NewbieError(f"images are saved as PNG: give a .png path, got '{path}'")
        paths = batch_paths(path, len(self.images))
        return [save_png(im, rec, p) for im, rec, p in zip(self.images, self.recipes, paths)]


class LocalBranches:
    """Both CFG branches on this process. parallel/cfg_parallel.py supplies the two-process variant; both
    hand `Pipeline._run` a guided model built from the same pieces (newbie.sampling.guidance)."""

    rank = 0

    def wanted(self, req: Request) -> tuple[bool, bool]:
        """Which embeddings (cond, uncond) this process needs."""
        return True, req.uses_cfg

    def model(self, pipe: Pipeline, req: Request, cond: TextEmbeds, uncond: TextEmbeds | None, grid):
        new_cache = (lambda: StepCache.of(pipe.step_cache)) if pipe.step_cache else (lambda: None)
        model, _ = cfg_model(
            pipe.dit,
            cond,
            uncond,
            grid,
            pipe.device,
            DTYPES[pipe.dtypes["dit"]],
            req.cfg,
            req.cfg_trunc,
            req.renorm_cfg,
            pipe.cfg_batching,
            new_cache,
        )
        return model


LOCAL = LocalBranches()


class Pipeline:
    """A loaded model: `generate()` / `run()` turn prompts into images. Build one with `newbie.load()`."""

    def __init__(
        self,
        spec: ModelSpec,
        folder: ModelFolder,
        dit,
        text: TextEncoders,
        codec: LatentCodec,
        device: torch.device,
        dtypes: dict[str, str],
        notice: str = "",
    ):
        self.spec, self.folder = spec, folder
        self.dit, self.text, self.codec = dit, text, codec
        self.device, self.dtypes = device, dtypes
        self.notice = notice  # e.g. "this is the toy demo model"
        # the components' sha256, hashed in background threads from the end of load() on (loading.hashing)
        self.hashes: BackgroundHashes | None = None
        # "split": cond and uncond as two unmasked forwards when their captions differ in length;
        # "batched": one padded batch with a key mask (fewer, larger kernels; slower attention).
        self.cfg_batching = "split"
        self.step_cache = 0.0  # first-block-cache threshold or a StepPolicy; 0 = off (exact)
        self.compiled = False
        self.embed_cache: EmbeddingCache | None = EmbeddingCache(f"{id(text)}:{dtypes['text']}")
        self.plan = None  # a newbie.memory.planner.Plan once one is applied
        self.residency = None
        self.plan_notes: list[str] = []  # out-of-memory step-downs, reported in every later recipe
        self.adapters = AdapterStack()  # LoRA/LoKr: loaded files, and the set applied for the current request
        self._sizes = None

    def compile(
        self,
        backend: str = "inductor",
        mode: str | None = None,
        *,
        fast: bool = True,
        attention: str | None = None,
        cuda_graphs: bool = False,
        vae: bool = False,
        dynamic: bool | None = None,
        cache_dir: str | None = None,
    ) -> float:
        """Regional torch.compile of the repeated block: one compiled graph reused by every layer.

        fast: the fast paths (model/fused.py: one GEMM for w1|w3, the attention backend `attention`, or on
        CUDA the fastest one measured here on this model's attention shape). cuda_graphs: each DiT
        forward replays a captured CUDA graph (off by default: no clear gain measured at full size, where the
        step is GPU-bound; docs/benchmarks.md). vae: channels-last + compiled VAE decoder on CUDA (off by
        default: its compile time is not measured yet). Compiled kernels go to an on-disk cache (cache_dir, $TORCHINDUCTOR_CACHE_DIR or
        ~/.cache/newbie/inductor), so a second process on this machine (a restarted `newbie serve` or `ui`)
        reuses them. Returns the seconds spent compiling on a small warm-up image."""
        from newbie.model import fused
        from newbie.precision import compile_cache

        if self.compiled:
            return 0.0
        folder = fused.compile_cache(cache_dir) if backend == "inductor" else None
        cuda = self.device.type == "cuda"
        resident = self.residency is None
        self.fast_paths = {}
        if fast:
            if attention is None:
                attention = fused.pick_backend(self.dit, cache_dir=folder) if cuda else "auto"
            self.fast_paths = fused.enable(self.dit, attention, w13=resident)
        fused.compile_blocks(self.dit, backend=backend, mode=mode, dynamic=dynamic)
        if vae and cuda and backend == "inductor":
            self.codec.vae.to(memory_format=torch.channels_last)
            self.codec.vae.decoder.compile()
        self.graphs = fused.use_cuda_graphs(self.dit, bool(cuda_graphs and cuda and resident))
        self.fast_paths["cuda_graphs"] = self.graphs is not None
        self.compiled = True
        t0 = time.perf_counter()
        d = self.spec.sampling
        # Every graph a request needs is built here, not in the first user request (a recompile there cost more
        # than twice the image's time; docs/benchmarks.md, "Figures behind the code"). The caption-carrying
        # blocks are marked length-generic before their first call (dit.length_generic), so one request with
        # CFG builds them all: the image-only refiner's, the length-generic ones, and the length-1 graph of an
        # empty negative (dynamo specializes sizes 0 and 1). With `dynamic` forced either way, a second request
        # of another length covers what marking would have.
        warm = dict(seed=0, steps=1, width=d.width, height=d.height, sampler="euler", cfg_trunc=1.0)
        opts = dict(backend=backend, mode=mode, dynamic=dynamic, vae=vae, **self.fast_paths)
        bundle = compile_cache.open_bundle(self.dit, self.device, opts) if backend == "inductor" else None
        # latents only: the eager VAE has nothing to compile (a compiled one, vae=True, is warmed by decoding)
        self.run(self.request("warm-up", negative="", **warm), decode=vae)
        if not self.dit.length_generic:
            self.run(
                self.request("a longer warm-up prompt, " * 6, negative="low quality, blurry", **warm),
                decode=vae,
            )
        compile_cache.close_bundle(bundle)  # torch's mega-cache, opt-in (newbie.precision.compile_cache)
        synchronize(self.device)
        return time.perf_counter() - t0

    @property
    def component_sizes(self):
        """Weight sizes for the memory planner, measured once before any plan quantizes or moves them."""
        if self._sizes is None:
            from newbie.memory.planner import ComponentSizes

            self._sizes = ComponentSizes.of(self)
        return self._sizes

    @property
    def model_hash(self) -> str:
        """sha256 of the transformer's weights (waits for that hash only)."""
        return self._hashing().get(("transformer",))["transformer"]

    @property
    def component_hashes(self) -> dict[str, str]:
        """sha256 of each component's weights (transformer, text_encoder, clip_model, vae), what every recipe
        records: waited for when a recipe is written, so reading ~16 GB never runs before a picture."""
        return self._hashing().get()

    def _hashing(self) -> BackgroundHashes:
        if self.hashes is None:  # a Pipeline built without load()
            self.hashes = BackgroundHashes(self.folder)
        return self.hashes

    # -- requests --

    def request(self, settings: Settings | str | list[str], negative: str | None = None, **kwargs) -> Request:
        """Settings (or a prompt and Settings' fields as keywords) -> a validated Request with the model's
        defaults filled in (pipeline.request.resolve); every problem is a one-line NewbieError."""
        return resolve(
            Settings.build(settings, negative, **kwargs),
            self.spec,
            adapters=lambda loras: self.adapters.resolve(self.dit, loras),
        )

    def generate(
        self,
        prompt: Settings | str | list[str],
        negative: str | None = None,
        *,
        progress: Callable[[dict], None] | None = None,
        **kwargs,
    ) -> Generation:
        """Prompt (text or XML) -> Generation. Keywords are `Settings` fields (pipeline/request.py, each with
        its rule); None/absent = the model's defaults; a bad value is a one-line NewbieError before anything
        runs. progress(info) is called after every sampler step with {step, steps, x, sigma, denoised}."""
        return self.run(self.request(prompt, negative, **kwargs), progress)

    def remake(self, recipe: Recipe, progress=None, loras=None, init_image=None, mask=None) -> Generation:
        """Re-run a recipe bit for bit: the same batch it was made in, then pick its image.
        loras/init_image/mask: the recipe's input files, where they moved (checked against the recorded hashes)."""
        settings = Settings.from_recipe(recipe, loras=loras, init_image=init_image, mask=mask)
        gen = self.run(self.request(settings), progress)
        i = recipe.batch_index
        return Generation(
            [gen.images[i]], [gen.recipes[i]], gen.latents[i : i + 1], gen.timings, gen.guard_events
        )

    def run(
        self,
        req: Request,
        progress: Callable[[dict], None] | None = None,
        branches=LOCAL,
        decode: bool = True,
    ) -> Generation:
        """Execute a Request. On running out of GPU memory, retry with the next smaller memory plan.
        branches: where the CFG branches run (LocalBranches, or cfg_parallel's per-rank branches).
        decode=False: the final latents only, no images (compile's warm-up)."""
        return guards.run_stepping_down(self, req, lambda: self._run(req, progress, branches, decode))

    # -- the core path: encode -> schedule -> sample -> (hires) -> decode -> composite --

    def _run(self, req: Request, progress, branches, decode: bool = True) -> Generation:
        timings, events = {}, list(self.plan_notes)
        # the request's adapters, or none: the base model, bit for bit
        events += self.adapters.activate(self.dit, req.loras, req.fuse_loras)
        if self.compiled:
            from newbie.model import fused

            if fused.honour_hooks(self.dit):  # a trace's hooks: those blocks run eager
                events.append("blocks holding hooks (a trace) ran uncompiled")
        if req.hires is not None and progress is not None:
            progress = _renumbered(progress, 0, req.total_steps)
        t0 = time.perf_counter()
        with self.stage("text"):
            cond, uncond = self.encode(req, branches.wanted(req), events)
        start = self.encode_image(req)  # img2img / inpainting: the input's latent; None for text-to-image
        timings["encode_s"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        sigmas = self.schedule(req)
        latents = guards.denoise_guarded(self, req, cond, uncond, sigmas, start, progress, branches, events)
        if req.hires is not None:
            second = self.hires_request(req)
            sigmas = self.schedule(second, strength=req.hires.strength)
            start = Start(self.upscale(latents, req.hires))
            later = None if progress is None else _renumbered(progress, req.steps, req.total_steps)
            latents = guards.denoise_guarded(
                self, second, cond, uncond, sigmas, start, later, branches, events
            )
        synchronize(self.device)
        timings["denoise_s"] = time.perf_counter() - t0
        if (
            branches.rank != 0 or not decode
        ):  # parallel ranks other than 0, and compile's warm-up, only sample
            return Generation([], [], latents.cpu(), timings, events)

        t0 = time.perf_counter()
        with self.stage("vae"):
            images = guards.decode_guarded(self, latents, events)
        images = img2img.composite(req, images)  # inpainting: the kept pixels exactly
        timings["decode_s"] = time.perf_counter() - t0
        problems = guards.problems(latents, images)
        recipes = [self.recipe(req, i, req.warnings + events + problems[i]) for i in range(len(req.prompts))]
        return Generation(to_pil(images), recipes, latents.cpu(), timings, events)

    def encode(
        self, req: Request, wanted: tuple[bool, bool] = (True, True), events: list[str] | None = None
    ) -> tuple[TextEmbeds | None, TextEmbeds | None]:
        """(cond, uncond) text embeddings of a request; uncond is None without CFG."""
        events = [] if events is None else events
        want_cond, want_uncond = wanted
        given_cond, given_uncond = req.given_embeds or (None, None)  # the Python API's own embeddings
        cond = uncond = None
        if want_cond:
            cond = given_cond.to(self.device) if given_cond is not None else self.embed(req.prompts, events)
        if want_uncond and req.uses_cfg:
            uncond = (
                given_uncond.to(self.device)
                if given_uncond is not None
                else self.embed([req.negative] * len(req.prompts), events)
            )
        return cond, uncond

    def embed(self, prompts: list[str], events: list[str]) -> TextEmbeds:
        """Each distinct prompt encoded alone (so results never depend on the batch), through the cache."""
        done: dict[str, TextEmbeds] = {}
        for p in dict.fromkeys(prompts):
            e = self.embed_cache.get(p) if self.embed_cache else None
            if e is None:
                e = guards.encode_text_guarded(self, p, events)
                if self.embed_cache:
                    self.embed_cache.put(p, e)
            done[p] = e.to(self.device)
        return TextEmbeds.cat([done[p] for p in prompts])

    def encode_image(self, req: Request) -> Start | None:
        """The img2img/inpainting start: the input image VAE-encoded (in the "vae" stage), the mask at latent
        resolution. None for text-to-image, which brings no VAE onto the device."""
        image = req.image
        if image is None:
            return None
        with self.stage("vae"):
            latent = self.codec.encode(image.pixels.to(self.device))
        mask = None if image.mask is None else F.avg_pool2d(image.mask, self.codec.cfg.downscale)
        return Start(latent, mask)

    def noise(self, req: Request) -> torch.Tensor:
        """Per-image noise from a CPU generator seeded with the image's own seed: independent of batch size
        and device, so an image can be re-made alone. noise="comfy": ComfyUI's draw (below)."""
        f = self.codec.cfg.downscale
        shape = (1, self.codec.cfg.latent_channels, req.height // f, req.width // f)
        if req.initial_latents is not None:  # given by the caller (diffusers-style `latents=`)
            return req.initial_latents.to(self.device, torch.float32)
        if req.noise == "comfy":
            # ComfyUI (comfy/sample.py prepare_noise): torch.manual_seed(seed), then one randn of the whole
            # (batch, C, H/8, W/8) latent in float32 on the CPU. A private generator seeded the same way gives
            # the same numbers without touching the global RNG.
            gen = torch.Generator().manual_seed(req.seeds[0])
            return torch.randn((len(req.seeds), *shape[1:]), generator=gen, dtype=torch.float32).to(
                self.device
            )
        parts = [
            torch.randn(shape, generator=torch.Generator().manual_seed(s), dtype=torch.float32)
            for s in req.seeds
        ]
        return torch.cat(parts).to(self.device)

    def schedule(self, req: Request, strength: float | None = None) -> torch.Tensor:
        """The sigma grid: text-to-image from 1 to 0, img2img (or a hires pass) from the strength down."""
        if strength is None:
            strength = req.image.strength if req.image is not None else 1.0
        return schedule_sigmas(req.schedule, req.steps, req.shift, strength)

    def denoise(
        self,
        req: Request,
        cond,
        uncond,
        sigmas: torch.Tensor,
        start: Start | None,
        progress,
        branches,
    ) -> torch.Tensor:
        """One sampling pass: noise -> guided model -> sampler, in the denoise stage. The fp16 guard stops
        at the first NaN/Inf and the pass is run again (clamped, then in a safe dtype)."""
        noise = self.noise(req)
        p = self.dit.cfg.patch_size * self.codec.cfg.downscale
        grid = (req.height // p, req.width // p)
        with self.stage("denoise"):
            model = branches.model(self, req, cond, uncond, grid)
            if self.dtypes["dit"] == "fp16":
                model = checked(model, "DiT output")
            return sample(SAMPLERS[req.sampler], model, noise, sigmas, start, progress)

    def hires_request(self, req: Request) -> Request:
        """The second pass of a hires request: the target size, its own steps and noise."""
        h = req.hires
        return dataclasses.replace(
            req,
            width=h.width,
            height=h.height,
            steps=h.steps,
            hires=None,
            image=None,
            seeds=[(s + img2img.HIRES_SEED_OFFSET) % 2**63 for s in req.seeds],
            initial_latents=None,
        )

    def upscale(self, latents: torch.Tensor, h: img2img.HiresSpec) -> torch.Tensor:
        """Finished latents -> the hires pass's starting latents: bicubic in latent space, or Lanczos on the
        decoded pixels and a VAE encode (only then in the "vae" stage)."""
        f = self.codec.cfg.downscale
        if h.upscaler == "latent":
            return img2img.upscale_latents(latents, h.height // f, h.width // f)
        with self.stage("vae"):
            pixels = img2img.upscale_pixels(to_pil(self.codec.decode(latents)), h.width, h.height)
            return self.codec.encode(pixels.to(self.device))

    # -- memory --

    def apply_plan(self, plan) -> None:
        from newbie.memory.residency import Residency

        self.adapters.clear()  # a new plan copies/quantizes the weights it finds: they must be the base ones
        if self.residency is not None:
            for streamer in self.residency.streamers:
                streamer.remove()
        self.residency = Residency(self, plan)
        self.plan = plan
        if plan.quantize:
            self.dtypes["quant"] = plan.quantize

    @contextmanager
    def stage(self, name: str):
        """Bring the weights of stage "text", "denoise" or "vae" onto the device (a no-op without a plan)."""
        if self.residency is None:
            yield
        else:
            with self.residency.stage(name):
                yield

    # -- provenance --

    def recipe(self, req: Request, i: int, warns: list[str]) -> Recipe:
        return Recipe(
            prompt=req.prompts[i],
            seed=req.seeds[i],
            **{name: getattr(req, name) for name in carried_fields()},
            text_dtype=self.dtypes["text"],
            dtype=self.dtypes["dit"] + (f"+{self.dtypes['quant']}" if self.dtypes.get("quant") else ""),
            vae_dtype=self.dtypes["vae"],
            device=self.device.type,
            model=self.folder.name,
            model_hash=self.model_hash,
            components=self.component_hashes,
            version=__version__,
            batch_size=len(req.prompts),
            batch_index=i,
            warnings=warns,
            **adapter_recipe.recipe_fields(req),
            **img2img.recipe_fields(req),
        )


def _renumbered(progress: Callable[[dict], None], offset: int, total: int) -> Callable[[dict], None]:
    return lambda info: progress({**info, "step": info["step"] + offset, "steps": total})
