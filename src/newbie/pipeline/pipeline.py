"""load() and the Pipeline: the one code path behind the CLI, the Python API, the UI and the server.

Read `Pipeline._run` top-down: encode (text, and the init image through the VAE) -> schedule -> sample
(newbie.sampling: the guided model and the sampler loop, pure functions over tensors) -> optional hires pass
-> decode -> composite. Memory plans only decide where weights live during each stage.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.nn import functional as F

from newbie.adapters import recipe as adapter_recipe
from newbie.adapters.stack import AdapterStack
from newbie.config import SPECS, ModelSpec
from newbie.device import DTYPES, parse_dtype, resolve_device
from newbie.errors import NewbieError
from newbie.loading.components import load_components
from newbie.loading.folder import ModelFolder, locate, require
from newbie.loading.hashing import BackgroundHashes
from newbie.model.embed_cache import EmbeddingCache
from newbie.model.step_cache import StepCache
from newbie.model.text import TextEmbeds, TextEncoders
from newbie.model.vae import LatentCodec
from newbie.pipeline import img2img
from newbie.pipeline.images import to_pil
from newbie.pipeline.model_spec import model_spec
from newbie.pipeline.recipe import Recipe
from newbie.pipeline.request import Request, Settings, carried_fields, resolve
from newbie.precision.guard import NonFinite, all_finite, checked, safe_dtype, set_clamp
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
        if backend == "inductor":
            fused.compile_cache(cache_dir)
        cuda = self.device.type == "cuda"
        resident = self.residency is None
        self.fast_paths = {}
        if fast:
            if attention is None:
                attention = fused.pick_backend(self.dit) if cuda else "auto"
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
        # Two requests with different caption lengths, so each block family also gets its length-generic graph
        # now instead of in the first user request (dynamo specializes a length of 1, the empty negative's,
        # so one request alone leaves the first real prompt a recompile, more than twice the image's time;
        # docs/benchmarks.md, "Figures behind the code")
        warm = dict(seed=0, steps=1, width=d.width, height=d.height, sampler="euler", cfg_trunc=1.0)
        opts = dict(backend=backend, mode=mode, dynamic=dynamic, vae=vae, **self.fast_paths)
        bundle = compile_cache.open_bundle(self.dit, self.device, opts) if backend == "inductor" else None
        self.generate("warm-up", **warm)
        self.generate("a longer warm-up prompt, " * 6, negative="low quality, blurry", **warm)
        compile_cache.close_bundle(bundle)  # torch's mega-cache, opt-in (newbie.precision.compile_cache)
        _sync(self.device)
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

    def run(self, req: Request, progress: Callable[[dict], None] | None = None, branches=LOCAL) -> Generation:
        """Execute a Request. On running out of GPU memory, retry with the next smaller memory plan.
        branches: where the CFG branches run (LocalBranches, or cfg_parallel's per-rank branches)."""
        self._fit_plan(req)
        while True:
            try:
                return self._run(req, progress, branches)
            except torch.cuda.OutOfMemoryError:
                smaller = self._step_down(req)
                if smaller is None:
                    raise NewbieError(
                        f"out of GPU memory at {req.width}x{req.height} even with the smallest plan "
                        f"('{self.plan.name if self.plan else 'resident'}')"
                    ) from None

    # -- the core path: encode -> schedule -> sample -> (hires) -> decode -> composite --

    def _run(self, req: Request, progress, branches) -> Generation:
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
        latents = self._denoise_guarded(req, cond, uncond, sigmas, start, progress, branches, events)
        if req.hires is not None:
            second = self.hires_request(req)
            sigmas = self.schedule(second, strength=req.hires.strength)
            start = Start(self.upscale(latents, req.hires))
            later = None if progress is None else _renumbered(progress, req.steps, req.total_steps)
            latents = self._denoise_guarded(second, cond, uncond, sigmas, start, later, branches, events)
        _sync(self.device)
        timings["denoise_s"] = time.perf_counter() - t0
        if branches.rank != 0:  # the parallel ranks other than 0 only sample
            return Generation([], [], latents.cpu(), timings, events)

        t0 = time.perf_counter()
        with self.stage("vae"):
            images = self._decode_guarded(latents, events)
        images = img2img.composite(req, images)  # inpainting: the kept pixels exactly
        timings["decode_s"] = time.perf_counter() - t0
        problems = _problems(latents, images)
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
                e = self.text.encode([p])
                if not (all_finite(e.cap_feats) and all_finite(e.pooled)):
                    safe = safe_dtype(self.device)
                    if self.text.gemma.dtype == safe and self.text.jina.dtype == safe:
                        raise NewbieError("the text encoders produced NaN/Inf even in a safe dtype")
                    self.text.gemma.to(safe), self.text.jina.to(safe)
                    self.dtypes["text"] = {torch.bfloat16: "bf16", torch.float32: "fp32"}[safe]
                    events.append(f"NaN/Inf in the text embeddings: re-encoded in {self.dtypes['text']}")
                    e = self.text.encode([p])
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

    def _denoise_guarded(
        self, req: Request, cond, uncond, sigmas, start, progress, branches, events: list[str]
    ) -> torch.Tensor:
        while True:
            try:
                return self.denoise(req, cond, uncond, sigmas, start, progress, branches)
            except NonFinite as e:
                self._fp16_fallback(e, events, req)

    def _fp16_fallback(self, e: NonFinite, events: list[str], req: Request) -> None:
        """First overflow: clamp the DiT activations to the fp16 range; second: run the DiT in a safe dtype."""
        if not self.dit.layers[0].clamp_fp16:
            set_clamp(self.dit, True)
            events.append(f"fp16 overflow ({e.where}): re-ran with the DiT activations clamped to fp16 range")
            return
        safe = safe_dtype(self.device)
        if next(self.dit.parameters()).dtype == safe:
            raise NewbieError(f"NaN/Inf in {e.where} even in {safe}") from None
        if self.plan is not None and self.plan.quantize:
            raise NewbieError(
                f"fp16 overflow ({e.where}) under the quantized plan '{self.plan.name}': "
                "load with --dtype bf16 instead"
            ) from None
        if self.plan is not None:  # the plan keeps its own CPU copies of the weights: convert, then re-plan
            self.adapters.clear()
        self.dit.to(safe)
        set_clamp(self.dit, False)
        self.dtypes["dit"] = {torch.bfloat16: "bf16", torch.float32: "fp32"}[safe]
        if self.plan is not None:
            self.apply_plan(self.plan)
            self.adapters.activate(self.dit, req.loras, req.fuse_loras)
        events.append(f"fp16 overflow persisted ({e.where}): re-ran the DiT in {self.dtypes['dit']}")

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

    def _decode_guarded(self, latents: torch.Tensor, events: list[str]) -> torch.Tensor:
        images = self.codec.decode(latents)
        if all_finite(images) or not all_finite(latents) or self.codec.dtype == torch.float32:
            return images
        self.codec.vae.to(torch.float32)
        self.dtypes["vae"] = "fp32"
        events.append("NaN/Inf in the VAE decode: re-decoded in fp32")
        return self.codec.decode(latents)

    # -- memory --

    def _fit_plan(self, req: Request) -> None:
        """A plan chosen from a budget at load time was sized for one image at the load size: a request that is
        larger (its size, its hires target, its batch) gets the plan the budget allows for it, up front,
        rather than an out-of-memory error. Plans only ever step down here."""
        from newbie.memory.planner import plan_for, rank

        if self.plan is None or self.plan.budget_gib is None or self.device.type != "cuda":
            return
        w, h = (req.hires.width, req.hires.height) if req.hires else (req.width, req.height)
        fitting = plan_for(self.plan.budget_gib, w, h, self.component_sizes, batch=len(req.prompts))
        if rank(fitting, self.component_sizes) > rank(self.plan, self.component_sizes):
            note = (
                f"plan '{self.plan.name}' does not fit {w}x{h} x{len(req.prompts)} in "
                f"{self.plan.budget_gib:g} GiB; using plan '{fitting.name}'"
            )
            print(f"warning: {note}", file=sys.stderr)
            self.apply_plan(fitting)
            self.plan_notes.append(note)

    def _step_down(self, req: Request):
        from newbie.memory.planner import Plan, step_down

        if self.device.type != "cuda":
            return None
        current = self.plan or Plan("resident")
        smaller = step_down(current, req.width, req.height, self.component_sizes)
        if smaller is None:
            return None
        torch.cuda.empty_cache()
        note = f"out of GPU memory with plan '{current.name}'; retrying with plan '{smaller.name}'"
        print(f"warning: {note}", file=sys.stderr)
        self.apply_plan(smaller)
        self.plan_notes.append(note)
        return smaller

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


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _renumbered(progress: Callable[[dict], None], offset: int, total: int) -> Callable[[dict], None]:
    return lambda info: progress({**info, "step": info["step"] + offset, "steps": total})


def _problems(latents: torch.Tensor, images: torch.Tensor) -> list[list[str]]:
    out = []
    for lat, img in zip(latents, images):
        p = []
        if not bool(torch.isfinite(lat).all()):
            p.append("latent has NaN/Inf values")
        if not bool(torch.isfinite(img).all()):
            p.append("image has NaN/Inf values")
        elif float(img.max()) < 2 / 255:
            p.append("image is all black")
        out.append(p)
    return out


def load(
    path: str | Path | None = None,
    *,
    device: str | None = None,
    dtype: str = "auto",
    text_dtype: str | None = None,
    vae_dtype: str = "fp32",
    text_encoder=None,
    clip_model=None,
    vae=None,
    spec: str = "newbie-exp0.1",
    vram: str | float | None = None,
    plan_size: tuple[int, int] | None = None,
    quantize: str | None = None,
    comfy_dir: str | Path | None = None,
    warm: bool = False,
) -> Pipeline:
    """Load a NewBie model folder (or the embedded demo model when path is None).

    path / text_encoder / clip_model / vae: folders or single files (ComfyUI's files included);
    comfy_dir: a ComfyUI models/ folder that supplies every component not given (docs/comfyui.md).

    vram: a GPU memory budget ("8GB", 8, or "auto" for the free memory) -> the planner picks residency,
    streaming, quantization and tiling for `plan_size` (default: the model's default size).
    quantize: "int8" / "fp8" weight-only (DiT and Gemma blocks, torchao) or "fp8-dynamic" compute (DiT,
    newbie.precision.fp8).
    device: "cpu", "cuda" or "cuda:N" (default: cuda when available). dtype: the DiT's, "auto" = bf16 on a GPU,
    fp32 on the CPU; text_dtype defaults to dtype; vae_dtype defaults to fp32. spec: the model family's
    defaults (newbie/config.py). Returns a Pipeline; a missing, damaged or mismatched file raises a one-line
    NewbieError (CheckpointError) naming it. warm: pay the first request's one-time costs now (warm_up).
    """
    from newbie.demo.model import resolve_model

    path, notice = resolve_model(path, comfy_dir)  # None or "demo": the embedded demo model
    dev = resolve_device(device)
    dit_dtype = parse_dtype(dtype, dev)
    names = {
        "dit": dit_dtype,
        "text": parse_dtype(text_dtype or dit_dtype, dev),
        "vae": parse_dtype(vae_dtype, dev),
    }
    folder = locate(path, text_encoder, clip_model, vae, comfy_dir=comfy_dir)
    notice = "; ".join(filter(None, [notice, *folder.notes]))  # which files a ComfyUI folder gave
    base = SPECS[spec]
    hint = "give --text-encoder/--clip-model/--vae or a full model folder"
    te = require(folder.text_encoder, "Gemma3 text encoder (text_encoder/)", hint)
    cm = require(folder.clip_model, "Jina CLIP model (clip_model/)", hint)
    va = require(folder.vae, "VAE (vae/)", hint)
    # with a budget, weights are read into CPU memory first and the plan decides what goes to the GPU
    load_dev = torch.device("cpu") if vram is not None and dev.type == "cuda" else dev
    # the four components are read in parallel threads straight onto load_dev (newbie.loading.components)
    dtypes = {k: DTYPES[v] for k, v in names.items()}
    c = load_components(folder, (te, cm, va), base.dit, dtypes, load_dev)
    dit, gemma, vae_model, vae_cfg = c.dit, c.gemma, c.vae, c.vae_cfg
    mspec, spec_note = model_spec(folder, base, dit.cfg)  # without a spec: defaults from the shapes
    notice = "; ".join(filter(None, [notice, spec_note]))
    text = TextEncoders(gemma, c.gemma_tokenizer, c.jina, c.jina_tokenizer, mspec.text)
    pipe = Pipeline(mspec, folder, dit, text, LatentCodec(vae_model, vae_cfg), dev, names, notice)
    pipe.load_timings = c.timings  # where a load's time went (newbie bench startup)
    pipe.hashes = BackgroundHashes(folder)  # while the first picture is made (it waits for them at the end)
    if quantize:
        from newbie.memory.quant import quantize_dit, quantize_gemma

        quantize_dit(dit, quantize)
        if quantize != "fp8-dynamic":
            quantize_gemma(gemma, quantize)
        names["quant"] = quantize
    if vram is not None:
        from newbie.memory.planner import free_vram_gib, parse_vram, plan_for

        if vram == "auto":
            budget = free_vram_gib()
            if budget is None:
                raise NewbieError("--vram auto needs a CUDA GPU")
        else:
            budget = parse_vram(vram)
        w, h = plan_size or (mspec.sampling.width, mspec.sampling.height)
        plan = plan_for(budget, w, h, pipe.component_sizes)
        if quantize and plan.quantize:
            raise NewbieError("--quantize and a plan that quantizes cannot be combined; drop one")
        pipe.apply_plan(plan)
    if warm:
        warm_up(pipe)
    return pipe


def warm_up(pipe: Pipeline) -> float:
    """The first text encode and the first DiT step of a process pay one-time costs (CUDA library handles,
    kernel selection, lazy allocations). A server pays them here instead of in its first request: the model's
    default negative prompt goes into the embedding cache (requests with CFG need it anyway) and one tiny
    image runs every stage once. Results of later requests are unchanged. Returns the seconds spent."""
    t0 = time.perf_counter()
    pipe.embed([pipe.spec.sampling.negative], [])
    side = 8 * pipe.codec.cfg.downscale  # a tiny image: 64 px with FLUX's VAE (an 8x8 latent)
    pipe.generate("warm-up", seed=0, steps=1, width=side, height=side, sampler="euler", cfg_trunc=1.0)
    _sync(pipe.device)
    return time.perf_counter() - t0
