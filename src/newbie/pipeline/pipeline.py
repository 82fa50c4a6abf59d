"""load() and generate(): the one code path behind the CLI, the Python API, the UI and the server."""

from __future__ import annotations

import dataclasses
import json
import math
import secrets
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from newbie import __version__
from newbie.adapters import recipe as adapter_recipe
from newbie.adapters.stack import AdapterStack
from newbie.config import SPECS, ModelSpec, SamplingDefaults
from newbie.errors import NewbieError
from newbie.loading.dit import load_dit
from newbie.loading.folder import ModelFolder, locate, require
from newbie.loading.hashing import files_sha256
from newbie.loading.text import load_gemma, load_jina, load_tokenizer
from newbie.loading.vae import load_vae
from newbie.model.text import TextEmbeds, TextEncoders
from newbie.model.vae import LatentCodec
from newbie.pipeline import img2img
from newbie.pipeline.images import to_pil
from newbie.model.step_cache import StepCache
from newbie.pipeline.recipe import Recipe
from newbie.model.embed_cache import EmbeddingCache
from newbie.precision.guard import NonFinite, all_finite, checked, safe_dtype, set_clamp
from newbie.sampling.guidance import guided, split_pair, velocity_fn
from newbie.sampling.samplers import SAMPLERS
from newbie.sampling.schedules import flow_sigmas

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
SPEC_FILE = "newbie_spec.json"  # optional, our own: sampling defaults of a model folder (the demo model has one)


def parse_dtype(name: str, device: torch.device) -> str:
    if name == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    if name not in DTYPES:
        raise NewbieError(f"unknown dtype '{name}' (choose from auto, {', '.join(DTYPES)})")
    return name


def model_spec(folder: ModelFolder, base: ModelSpec) -> ModelSpec:
    spec_path = folder.root / SPEC_FILE if folder.root else None
    if not spec_path or not spec_path.is_file():
        return base
    try:
        raw = json.loads(spec_path.read_text())
        sampling = dataclasses.replace(base.sampling, **raw.get("sampling", {}))
        top = {k: v for k, v in raw.items() if k in ("name", "trained_pixels", "max_aspect", "max_side")}
        return dataclasses.replace(base, sampling=sampling, **top)
    except (OSError, ValueError, TypeError) as e:
        raise NewbieError(f"{spec_path}: unreadable model spec ({e})") from None


@dataclass
class Request:
    prompts: list[str]
    negative: str
    seeds: list[int]
    steps: int
    cfg: float
    sampler: str
    shift: float
    width: int
    height: int
    cfg_trunc: float
    renorm_cfg: float
    warnings: list[str] = field(default_factory=list)
    loras: list = field(default_factory=list)  # newbie.adapters.ActiveLora
    fuse_loras: bool = False
    image: img2img.ImageInput | None = None  # img2img / inpainting input
    hires: img2img.HiresSpec | None = None


@dataclass
class Generation:
    images: list  # PIL images
    recipes: list[Recipe]
    latents: torch.Tensor
    timings: dict[str, float]
    guard_events: list[str] = field(default_factory=list)  # what the NaN guard / OOM step-down did


class Pipeline:
    def __init__(self, spec: ModelSpec, folder: ModelFolder, dit, text: TextEncoders, codec: LatentCodec,
                 device: torch.device, dtypes: dict[str, str], notice: str = ""):
        self.spec, self.folder = spec, folder
        self.dit, self.text, self.codec = dit, text, codec
        self.device, self.dtypes = device, dtypes
        self.notice = notice  # e.g. "this is the toy demo model"
        self._hash: str | None = None
        # "split": cond and uncond as two unmasked forwards when their captions differ in length;
        # "batched": one padded batch with a key mask (fewer, larger kernels; slower attention).
        self.cfg_batching = "split"
        self.step_cache = 0.0  # first-block-cache threshold; 0 = off (exact)
        self.last_caches: list = []
        self.compiled = False
        self.embed_cache: EmbeddingCache | None = EmbeddingCache(f"{id(text)}:{dtypes['text']}")
        self.plan = None  # a newbie.memory.planner.Plan once one is applied
        self.residency = None
        self.plan_notes: list[str] = []  # out-of-memory step-downs, reported in every later recipe
        self.adapters = AdapterStack()  # LoRA/LoKr: loaded files, and the set applied for the current request

    def compile(self, backend: str = "inductor", mode: str | None = None) -> float:
        """Regional torch.compile of the repeated block: one compiled graph reused by every layer.
        Returns the seconds spent compiling on a small warm-up image."""
        if self.compiled:
            return 0.0
        for block in self.dit.blocks():
            block.compile(backend=backend, mode=mode, dynamic=None, fullgraph=True)
        self.compiled = True
        t0 = time.perf_counter()
        d = self.spec.sampling
        self.generate("warm-up", seed=0, steps=1, width=d.width, height=d.height, sampler="euler")
        _sync(self.device)
        return time.perf_counter() - t0

    @property
    def model_hash(self) -> str:
        if self._hash is None:
            from newbie.loading.dit import dit_source

            self._hash = files_sha256(dit_source(self.folder.transformer)[0])
        return self._hash

    # -- requests --

    def request(self, prompt: str | list[str], negative: str | None = None, *, seed: int | None = None,
                steps: int | None = None, cfg: float | None = None, sampler: str | None = None,
                shift: float | None = None, width: int | None = None, height: int | None = None,
                batch: int = 1, cfg_trunc: float | None = None, renorm_cfg: float | None = None,
                loras=None, fuse_loras: bool = False, init_image=None, strength: float | None = None, mask=None,
                mask_feather: int | None = None, hires=None) -> Request:
        """Fill defaults from the model spec and validate; every problem is a one-line NewbieError.
        Adapters, img2img/inpainting and hires: see docs/workflows.md."""
        d: SamplingDefaults = self.spec.sampling
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if not prompts:
            raise NewbieError("no prompt given")
        if batch < 1:
            raise NewbieError(f"batch must be >= 1, got {batch}")
        prompts = [p for p in prompts for _ in range(batch)]
        image = img2img.image_input(init_image, mask, strength, mask_feather)  # None for text-to-image
        width, height = img2img.request_size(image, width, height, (d.width, d.height), self.spec.max_side)
        steps = d.steps if steps is None else steps
        sampler = sampler or d.sampler
        cfg = d.cfg if cfg is None else cfg
        for side, name in ((width, "width"), (height, "height")):
            if side % 16 or side < 16:
                raise NewbieError(f"{name} {side} is not a positive multiple of 16")
            if side > self.spec.max_side:
                raise NewbieError(f"{name} {side} is larger than {self.spec.max_side}")
        if steps < 1:
            raise NewbieError(f"steps must be >= 1, got {steps}")
        if sampler not in SAMPLERS:
            raise NewbieError(f"unknown sampler '{sampler}' (choose from {', '.join(SAMPLERS)})")
        if not math.isfinite(cfg) or cfg < 0:
            raise NewbieError(f"cfg must be a finite number >= 0, got {cfg}")
        warns = []
        if width * height > self.spec.trained_pixels or max(width, height) / min(width, height) > self.spec.max_aspect:
            warns.append(f"{width}x{height} is outside the trained area (W*H <= {self.spec.trained_pixels}, "
                         f"aspect <= {self.spec.max_aspect:g}); expect repeated or broken composition")
        base_seed = secrets.randbelow(2**32) if seed is None else int(seed)
        if not 0 <= base_seed < 2**63:
            raise NewbieError(f"seed must be between 0 and 2^63-1, got {seed}")
        req = Request(
            prompts=prompts, negative=d.negative if negative is None else negative,
            seeds=[base_seed + i for i in range(len(prompts))], steps=steps, cfg=float(cfg), sampler=sampler,
            shift=float(d.shift if shift is None else shift), width=width, height=height,
            cfg_trunc=float(d.cfg_trunc if cfg_trunc is None else cfg_trunc),
            renorm_cfg=float(d.renorm_cfg if renorm_cfg is None else renorm_cfg), warnings=warns,
        )
        req.loras, req.fuse_loras = self.adapters.resolve(self.dit, loras), bool(fuse_loras)
        req.warnings += [note for a in req.loras for note in a.adapter.notes]
        return img2img.attach(req, image, hires, self.spec.max_side)

    def noise(self, req: Request) -> torch.Tensor:
        """Per-image noise from a CPU generator seeded with the image's own seed: independent of batch size
        and device, so an image can be re-made alone."""
        f = self.codec.cfg.downscale
        shape = (1, self.codec.cfg.latent_channels, req.height // f, req.width // f)
        parts = [torch.randn(shape, generator=torch.Generator().manual_seed(s), dtype=torch.float32) for s in req.seeds]
        return torch.cat(parts).to(self.device)

    # -- the chain --

    def encode(self, req: Request, events: list[str] | None = None) -> tuple[TextEmbeds, TextEmbeds | None]:
        events = [] if events is None else events
        cond = self.embed(req.prompts, events)
        if req.cfg == 1.0:
            return cond, None
        return cond, self.embed([req.negative] * len(req.prompts), events)

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

    def denoise(self, req: Request, cond: TextEmbeds, uncond: TextEmbeds | None,
                progress: Callable[[dict], None] | None = None) -> torch.Tensor:
        x = self.noise(req)
        b = x.shape[0]
        p = self.dit.cfg.patch_size
        grid = (req.height // self.codec.cfg.downscale // p, req.width // self.codec.cfg.downscale // p)

        def with_rope(e: TextEmbeds) -> tuple[TextEmbeds, object]:
            e = e.trimmed().to(self.device, DTYPES[self.dtypes["dit"]])
            return e, self.dit.rope(e.cap_mask.sum(1), e.cap_feats.shape[1], *grid)

        new_cache = (lambda: StepCache(self.step_cache)) if self.step_cache else (lambda: None)
        cond_e, cond_rope = with_rope(cond)
        self.last_caches = [new_cache()]
        model_cond = velocity_fn(self.dit, cond_e, cond_rope, self.last_caches[0])
        model = model_cond
        if uncond is not None:
            pair_e, pair_rope = with_rope(TextEmbeds.cat([cond, uncond]))
            if self.cfg_batching == "split" and not bool(pair_e.cap_mask.all()):
                unc_e, unc_rope = with_rope(uncond)
                self.last_caches.append(new_cache())
                model_pair = split_pair(model_cond, velocity_fn(self.dit, unc_e, unc_rope, self.last_caches[1]))
            else:  # equal caption lengths: one batched forward with no mask
                self.last_caches.append(new_cache())
                model_pair = velocity_fn(self.dit, pair_e, pair_rope, self.last_caches[1])
            model = guided(model_pair, model_cond, req.cfg, req.cfg_trunc, req.renorm_cfg)
        if self.dtypes["dit"] == "fp16":  # the fp16 guard: stop at the first NaN/Inf, see run()
            model = checked(model, "DiT output")
        sigmas = flow_sigmas(req.steps, req.shift)
        x = img2img.sample(self, req, SAMPLERS[req.sampler], model, x, sigmas, progress)  # or img2img/inpainting
        assert x.shape[0] == b
        return x

    def generate(self, prompt: str | list[str], negative: str | None = None, *,
                 progress: Callable[[dict], None] | None = None, **kwargs) -> Generation:
        req = self.request(prompt, negative, **kwargs)
        return self.run(req, progress)

    def run(self, req: Request, progress: Callable[[dict], None] | None = None) -> Generation:
        while True:
            try:
                return self._run(req, progress)
            except torch.cuda.OutOfMemoryError:
                smaller = self._step_down(req)
                if smaller is None:
                    raise NewbieError(f"out of GPU memory at {req.width}x{req.height} even with the smallest plan "
                                      f"('{self.plan.name if self.plan else 'resident'}')") from None

    def _step_down(self, req: Request):
        from newbie.memory.planner import ComponentSizes, Plan, step_down

        if self.device.type != "cuda":
            return None
        current = self.plan or Plan("resident")
        smaller = step_down(current, req.width, req.height, ComponentSizes.of(self))
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
        if self.residency is None:
            yield
        else:
            with self.residency.stage(name):
                yield

    def _run(self, req: Request, progress) -> Generation:
        timings, events = {}, list(self.plan_notes)
        events += self.adapters.activate(self.dit, req.loras, req.fuse_loras)  # none: the base model, bit for bit
        t0 = time.perf_counter()
        with self.stage("text"):
            cond, uncond = self.encode(req, events)
        timings["encode_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        with self.stage("denoise"):
            latents = self._denoise_guarded(req, cond, uncond, progress, events)
            latents = img2img.hires_pass(self, req, latents, cond, uncond, progress)  # no-op without req.hires
        _sync(self.device)
        timings["denoise_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        with self.stage("decode"):
            images = self._decode_guarded(latents, events)
            images = img2img.composite(req, images)  # inpainting: kept pixels exactly
        timings["decode_s"] = time.perf_counter() - t0
        problems = _problems(latents, images)
        recipes = [self.recipe(req, i, req.warnings + events + problems[i]) for i in range(len(req.prompts))]
        return Generation(to_pil(images), recipes, latents.cpu(), timings, events)

    def _denoise_guarded(self, req, cond, uncond, progress, events: list[str]) -> torch.Tensor:
        while True:
            try:
                return self.denoise(req, cond, uncond, progress)
            except NonFinite as e:
                if not self.dit.layers[0].clamp_fp16:
                    set_clamp(self.dit, True)
                    events.append(f"fp16 overflow ({e.where}): re-ran with the DiT activations clamped to fp16 range")
                    continue
                safe = safe_dtype(self.device)
                if next(self.dit.parameters()).dtype == safe:
                    raise NewbieError(f"NaN/Inf in {e.where} even in {safe}") from None
                self.dit.to(safe)
                set_clamp(self.dit, False)
                self.dtypes["dit"] = {torch.bfloat16: "bf16", torch.float32: "fp32"}[safe]
                events.append(f"fp16 overflow persisted ({e.where}): re-ran the DiT in {self.dtypes['dit']}")

    def _decode_guarded(self, latents: torch.Tensor, events: list[str]) -> torch.Tensor:
        images = self.codec.decode(latents)
        if all_finite(images) or not all_finite(latents) or self.codec.dtype == torch.float32:
            return images
        self.codec.vae.to(torch.float32)
        self.dtypes["vae"] = "fp32"
        events.append("NaN/Inf in the VAE decode: re-decoded in fp32")
        return self.codec.decode(latents)

    def recipe(self, req: Request, i: int, warns: list[str]) -> Recipe:
        return Recipe(
            prompt=req.prompts[i], negative=req.negative, seed=req.seeds[i], steps=req.steps, cfg=req.cfg,
            sampler=req.sampler, shift=req.shift, width=req.width, height=req.height, cfg_trunc=req.cfg_trunc,
            renorm_cfg=req.renorm_cfg, text_dtype=self.dtypes["text"],
            dtype=self.dtypes["dit"] + (f"+{self.dtypes['quant']}" if self.dtypes.get("quant") else ""),
            vae_dtype=self.dtypes["vae"], device=self.device.type, model=self.folder.name,
            model_hash=self.model_hash, version=__version__, batch_size=len(req.prompts), batch_index=i,
            warnings=warns, **adapter_recipe.recipe_fields(req), **img2img.recipe_fields(req),
        )

    def remake(self, recipe: Recipe, progress=None, loras=None, init_image=None, mask=None) -> Generation:
        """Re-run a recipe: the same batch it was made in (so every kernel sees the same shapes), then pick it.
        loras/init_image/mask: the recipe's input files, where they moved (checked against the recorded hashes)."""
        base = recipe.seed - recipe.batch_index
        gen = self.generate(recipe.prompt, recipe.negative, seed=base, steps=recipe.steps, cfg=recipe.cfg,
                            sampler=recipe.sampler, shift=recipe.shift, width=recipe.width, height=recipe.height,
                            batch=recipe.batch_size, cfg_trunc=recipe.cfg_trunc, renorm_cfg=recipe.renorm_cfg,
                            progress=progress, **adapter_recipe.remake_kwargs(recipe, loras),
                            **img2img.remake_kwargs(recipe, init_image, mask))
        i = recipe.batch_index
        return Generation([gen.images[i]], [gen.recipes[i]], gen.latents[i : i + 1], gen.timings)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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


def load(path: str | Path | None = None, *, device: str | None = None, dtype: str = "auto",
         text_dtype: str | None = None, vae_dtype: str = "fp32", text_encoder=None, clip_model=None, vae=None,
         spec: str = "newbie-exp0.1", vram: str | float | None = None, plan_size: tuple[int, int] | None = None,
         quantize: str | None = None) -> Pipeline:
    """Load a NewBie model folder (or the embedded demo model when path is None).

    vram: a GPU memory budget ("8GB", 8, or "auto" for the free memory) -> the planner picks residency,
    streaming, quantization and tiling for `plan_size` (default: the model's default size).
    quantize: "int8" / "fp8" weight-only (DiT and Gemma blocks) or "fp8-dynamic" compute (DiT), via torchao.
    """
    notice = ""
    if path is None:
        from newbie.demo.model import default_model

        path, notice = default_model()
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise NewbieError("device 'cuda' was asked for but no CUDA GPU is available")
    dit_dtype = parse_dtype(dtype, dev)
    names = {"dit": dit_dtype, "text": parse_dtype(text_dtype or dit_dtype, dev), "vae": parse_dtype(vae_dtype, dev)}
    folder = locate(path, text_encoder, clip_model, vae)
    base = SPECS[spec]
    mspec = model_spec(folder, base)
    hint = "give --text-encoder/--clip-model/--vae or a full model folder"
    te = require(folder.text_encoder, "Gemma3 text encoder (text_encoder/)", hint)
    cm = require(folder.clip_model, "Jina CLIP model (clip_model/)", hint)
    va = require(folder.vae, "VAE (vae/)", hint)
    # with a budget, weights are read into CPU memory first and the plan decides what goes to the GPU
    load_dev = torch.device("cpu") if vram is not None and dev.type == "cuda" else dev
    dit = load_dit(folder.transformer, mspec.dit, DTYPES[names["dit"]], load_dev)
    gemma = load_gemma(te, DTYPES[names["text"]], load_dev)
    jina = load_jina(cm, DTYPES[names["text"]], load_dev)
    if gemma.config.hidden_size != dit.cfg.cap_feat_dim:
        raise NewbieError(f"text encoder width {gemma.config.hidden_size} != transformer cap_feat_dim {dit.cfg.cap_feat_dim}")
    if jina.config.hidden_size != dit.cfg.clip_text_dim:
        raise NewbieError(f"Jina width {jina.config.hidden_size} != transformer clip_text_dim {dit.cfg.clip_text_dim}")
    text = TextEncoders(gemma, load_tokenizer(folder.gemma_tokenizer_dirs, "Gemma"), jina,
                        load_tokenizer(folder.clip_tokenizer_dirs, "Jina"), mspec.text)
    vae_model, vae_cfg = load_vae(va, DTYPES[names["vae"]], load_dev)
    pipe = Pipeline(mspec, folder, dit, text, LatentCodec(vae_model, vae_cfg), dev, names, notice)
    if quantize:
        from newbie.memory.quant import quantize_dit, quantize_gemma

        quantize_dit(dit, quantize)
        if quantize != "fp8-dynamic":
            quantize_gemma(gemma, quantize)
        names["quant"] = quantize
    if vram is not None:
        from newbie.memory.planner import ComponentSizes, free_vram_gib, parse_vram, plan_for

        if vram == "auto":
            budget = free_vram_gib()
            if budget is None:
                raise NewbieError("--vram auto needs a CUDA GPU")
        else:
            budget = parse_vram(vram)
        w, h = plan_size or (mspec.sampling.width, mspec.sampling.height)
        plan = plan_for(budget, w, h, ComponentSizes.of(pipe))
        if quantize and plan.quantize:
            raise NewbieError("--quantize and a plan that quantizes cannot be combined; drop one")
        pipe.apply_plan(plan)
    return pipe
