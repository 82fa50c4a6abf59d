"""A diffusers-style front end over our engine: `NewbiePipeline.from_pretrained(path)`, then
`pipe(prompt).images[0]`.

The argument names are those of diffusers' `NewbiePipeline` (huggingface/diffusers PR #12803, a
`Lumina2Pipeline` subclass), so code written for it runs here unchanged; diffusers itself is not needed and no
diffusers class is subclassed (a `DiffusionPipeline` would bring its own loader, scheduler and offload hooks,
which our engine already has). Every call becomes one `Settings` for `Pipeline.request` and one
`Pipeline.run`: its images are bit-identical to the equivalent `Pipeline.generate` call.

Defaults are ours (the official NewBie demo's, through the model folder's spec) where the PR's differ:

  argument            here (None = the model's default)            the PR
  num_inference_steps 18                                           30
  guidance_scale      5.0                                          4.0
  cfg_trunc_ratio     None: CFG while t < 0.25 (t: 0 noise, 1 data) 1.0 (CFG on every step)
  cfg_normalization   off                                          True
  system_prompt       NewBie's training prompts (XML / plain text) Lumina2's generic system prompt
  sampler / shift     midpoint, shift 6 (extra arguments)          Euler, resolution-dependent shift

Meanings, where they are not the obvious ones:
- cfg_trunc_ratio (a given value) has the PR's meaning: CFG on the steps i with (i + 1) / steps <= ratio.
  Our engine truncates by time (CFG while t < cfg_trunc); the ratio is turned into the exact time threshold
  1 - sigma_k, where k is the number of guided steps, so every sampler guides exactly those steps.
- cfg_normalization=True is our renorm_cfg=1.0, the official NewBie/Lumina code's CFG renorm: the guided
  velocity is scaled down, per image, to at most the conditional one's norm over C, H, W. The PR instead
  rescales it to exactly the conditional norm along the last axis; that op is not in our engine. A float is
  taken as renorm_cfg itself.
- guidance_scale <= 1 turns CFG off (the negative prompt is not encoded), as in diffusers.
- generator: a torch.Generator seeds exactly like `--seed`: its initial_seed() is the first image's seed and
  image i uses seed + i (each image's noise is drawn on the CPU from its own seed). Its current state is not
  used, so passing one generator twice makes the same image twice. A list gives one generator per image.
  Seeds of 2^63 and above are taken modulo 2^63, as they always were here (so those images stay the same).
- system_prompt: Gemma reads system_prompt + " <Prompt Start> " + prompt (the PR's format; with NewBie's
  own sentence this is exactly our default). As in our engine, an empty prompt stays empty, the negative
  prompt gets the same system prompt, and Jina reads the bare prompt.
- max_sequence_length: Gemma's truncation (512 by default, as trained; a multiple of 8, the caption padding);
  Jina keeps the official 2048.
- prompt_embeds: the PR's trio (prompt_embeds (B, L, 2560), prompt_attention_mask (B, L), pooled_prompt_embeds
  (B, 1024) from Jina) or one of our `TextEmbeds`; `encode_prompt` returns the trio for a prompt and its
  negative, made by our encoders. Embeddings from another implementation are not interchangeable.
- callback_on_step_end(pipe, i, t, {"latents": x}) runs after step i (t = the step's start sigma * 1000, the
  diffusers timestep); returning {"latents": new} replaces the sampler's state in place.
- output_type "np" / "pt": the 8-bit images as float32 in [0, 1] (the PIL images' pixels; diffusers' are not
  quantized). "latent": the final latents (B, 16, H/8, W/8), scaled as the DiT sees them.

- from_pretrained loads on the CPU unless device_map says otherwise (as diffusers does), so that an offload
  method never needs the whole model on the GPU; torch_dtype applies to the DiT and the text encoders, the
  VAE stays in fp32 (our default). Without a GPU, the offload methods run their plan where the pipeline is.

Images made from given latents or embeddings, a custom system prompt / max_sequence_length, or latents
changed by a callback carry a warning in their recipe: `--from` cannot re-make them.
"""

from __future__ import annotations

import dataclasses
import inspect
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from newbie.diffusers_args import (
    DIFFUSERS_NAMES,
    _device,
    _dtype_name,
    _reject,
    check_call,
    given_embeds,
    negative_of,
    output_of,
    prompts_of,
    settings_of,
    text_cfg_of,
    texts_of,
)
from newbie.errors import NewbieError


@dataclass
class NewbiePipelineOutput:
    """images: as output_type asks. generation: ours (recipes that re-make each image, latents, timings)."""

    images: object
    generation: object = None  # newbie.pipeline.pipeline.Generation

    @property
    def recipes(self) -> list:
        return self.generation.recipes

    def save(self, path) -> list:
        """Write the images as PNGs with their recipes (`newbie generate --from` re-makes them): `path` for
        one image, path-1.png, path-2.png, ... for several. Returns the paths."""
        return self.generation.save(path)


class NewbiePipeline:
    """The diffusers calling convention over a `newbie.pipeline.pipeline.Pipeline` (`.engine`)."""

    def __init__(self, engine):
        self.engine = engine
        self._vae_tiling = False

    # -- loading, placement, memory --

    @classmethod
    def from_pretrained(cls, path=None, torch_dtype=None, device_map=None, **kwargs) -> NewbiePipeline:
        """path: a model folder in any layout `newbie.load` reads (None: the embedded demo model).
        torch_dtype: the DiT's and text encoders' dtype (None: fp32 on the CPU, bf16 on a GPU); the VAE stays
        in fp32, our default. device_map: where to load (None: the CPU, as diffusers does, then `.to()` or an
        offload method; "auto"/"balanced": the GPU when there is one; one device only).
        Extra keywords: text_encoder, clip_model, vae: folders or files replacing the folder's own."""
        extras = ("text_encoder", "clip_model", "vae")
        _reject(
            {k: v for k, v in kwargs.items() if k not in extras},
            ("path", "torch_dtype", "device_map", *extras),
            "from_pretrained",
        )
        for name, value in kwargs.items():
            if value is not None and not isinstance(value, (str, Path)):
                raise NewbieError(
                    f"from_pretrained: {name} must be a folder or file path, got {type(value).__name__}"
                )
        if device_map in ("auto", "balanced"):
            device = None  # newbie.load's choice: the GPU when there is one
        else:
            device = str(_device("cpu" if device_map is None else device_map))
        from newbie.pipeline.load import load

        return cls(load(path, device=device, dtype=_dtype_name(torch_dtype), **kwargs))

    @property
    def device(self) -> torch.device:
        return self.engine.device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.engine.dit.parameters()).dtype

    @property
    def transformer(self):
        return self.engine.dit

    @property
    def vae(self):
        """Our AutoencoderKL (newbie.model.autoencoder): diffusers' config keys and tiling attributes, but
        decode(z) returns the image tensor and encode(x) the posterior mode (diffusers: `.sample`,
        `.latent_dist.mode()`)."""
        return self.engine.codec.vae

    @property
    def text_encoder(self):
        return self.engine.text.gemma

    @property
    def text_encoder_2(self):
        return self.engine.text.jina

    @property
    def tokenizer(self):
        return self.engine.text.gemma_tokenizer

    @property
    def tokenizer_2(self):
        return self.engine.text.jina_tokenizer

    def to(self, *args, device=None, dtype=None) -> NewbiePipeline:
        """Move (a device) and/or cast (a dtype: DiT and text encoders; the VAE keeps its own), in place."""
        for a in args:
            if isinstance(a, torch.dtype):
                dtype = a
            else:
                device = a
        e = self.engine
        if device is not None:
            dev = _device(device)
            if e.plan is not None and e.plan.residency != "resident":
                raise NewbieError(
                    f"the pipeline has the memory plan '{e.plan.name}' (an offload method): .to() cannot "
                    "move it; load it again to place it differently"
                )
            for module in (e.dit, e.text.gemma, e.text.jina, e.codec.vae):
                module.to(dev)
            e.device = dev
            if e.plan is not None:  # a resident plan (VAE tiling): its holders now point at the new device
                e.apply_plan(e.plan)
        if dtype is not None:
            from newbie.model.embed_cache import EmbeddingCache

            name = _dtype_name(dtype)
            if name == "auto":
                raise NewbieError("to(): give a torch dtype")
            if e.dtypes.get("quant"):
                raise NewbieError("to(): the weights are quantized; load the pipeline again in another dtype")
            e.dit.to(dtype), e.text.gemma.to(dtype), e.text.jina.to(dtype)
            e.dtypes["dit"] = e.dtypes["text"] = name
            e.embed_cache = EmbeddingCache(
                f"{id(e.text)}:{name}"
            )  # cached embeddings were made in the old dtype
        return self

    def _apply(self, plan, gpu_id, device) -> None:
        e = self.engine
        if device is None:  # diffusers' default is the GPU; without one the plan runs where the pipeline is
            device = f"cuda:{gpu_id or 0}" if torch.cuda.is_available() else e.device
        e.device = _device(device)
        e.apply_plan(dataclasses.replace(plan, vae_tiling=self._vae_tiling))

    def enable_model_cpu_offload(self, gpu_id: int | None = None, device=None) -> None:
        """Our 'staged' plan: each stage's weights (text encoders, DiT, VAE) on the GPU only during that
        stage.
        Bit-identical to a resident run."""
        from newbie.memory.planner import Plan

        self._apply(Plan("staged", residency="staged"), gpu_id, device)

    def enable_sequential_cpu_offload(self, gpu_id: int | None = None, device=None) -> None:
        """Our 'stream-all' plan without VAE tiling: every DiT and Gemma block streamed from pinned CPU memory
        during its forward, Gemma's embedding table looked up on the CPU. Bit-identical to a resident run."""
        from newbie.memory.planner import Plan

        e = self.engine
        self._apply(
            Plan(
                "stream-all",
                residency="staged",
                dit_streamed=len(e.dit.layers),
                gemma_streamed=len(e.text.gemma.layers),
                gemma_embed_on_cpu=True,
            ),
            gpu_id,
            device,
        )

    def enable_vae_tiling(self) -> None:
        """Decode in 512 px tiles (bounded memory; not bit-identical to a whole decode), with any plan."""
        self._set_tiling(True)

    def disable_vae_tiling(self) -> None:
        self._set_tiling(False)
        self.engine.codec.vae.disable_tiling()

    def _set_tiling(self, on: bool) -> None:
        from newbie.memory.planner import Plan

        e = self.engine
        self._vae_tiling = on
        e.apply_plan(dataclasses.replace(e.plan or Plan("resident"), vae_tiling=on))

    def set_progress_bar_config(self, **kwargs) -> None:
        """Accepted for diffusers code; this pipeline draws no progress bar (use callback_on_step_end)."""

    def save_pretrained(self, save_directory) -> None:
        """Write the official NewBie layout (transformer/, text_encoder/, clip_model/, vae/, model_index.json)
        in the weights' current dtypes, plus our newbie_spec.json when the model has one (its sampling
        defaults), so `from_pretrained(save_directory)` makes the same images."""
        from newbie.config import SPEC_FILE
        from newbie.loading.writer import save_model

        e = self.engine
        if e.dtypes.get("quant"):
            raise NewbieError("save_pretrained: the weights are quantized; save from an unquantized pipeline")
        if e.compiled:
            raise NewbieError(
                "save_pretrained: the pipeline is compiled (fused weights); save before compile()"
            )
        root = Path(save_directory)
        # offloaded and streamed weights sit in CPU memory between stages: state_dict reads them there
        save_model(
            root, e.dit, e.text.gemma, e.text.gemma_tokenizer, e.text.jina, e.text.jina_tokenizer, e.codec.vae
        )
        spec = e.folder.root / SPEC_FILE if e.folder.root else None
        if spec is not None and spec.is_file():
            shutil.copyfile(spec, root / SPEC_FILE)

    # -- text --

    def _embed(self, texts: list[str], text_cfg):
        """Each distinct text encoded alone (as the engine does): with text_cfg, or via the engine's cache."""
        from newbie.model.text import TextEmbeds

        e = self.engine
        with e.stage("text"):
            if text_cfg is None:
                return e.embed(texts, [])
            saved, e.text.cfg = e.text.cfg, text_cfg
            try:
                done = {t: e.text.encode([t]).to(e.device) for t in dict.fromkeys(texts)}
            finally:
                e.text.cfg = saved
        return TextEmbeds.cat([done[t] for t in texts])

    def encode_prompt(
        self,
        prompt,
        do_classifier_free_guidance: bool = True,
        negative_prompt=None,
        num_images_per_prompt: int = 1,
        device=None,
        system_prompt: str | None = None,
        max_sequence_length: int = 512,
        **kwargs,
    ):
        """-> (prompt_embeds, pooled_prompt_embeds, prompt_attention_mask, negative_prompt_embeds,
        negative_pooled_prompt_embeds, negative_prompt_attention_mask), one row per image, as the PR's
        encode_prompt returns them; the negatives are None without CFG. Passing them back to the call makes
        the same images as the prompts."""
        _reject(
            kwargs,
            [p for p in inspect.signature(self.encode_prompt).parameters if p != "kwargs"],
            "encode_prompt",
        )
        prompts = prompts_of(prompt, num_images_per_prompt)
        text_cfg = text_cfg_of(self.engine.spec.text, system_prompt, max_sequence_length)
        cond = self._embed(prompts, text_cfg)
        out = [cond.cap_feats, cond.pooled, cond.cap_mask]
        if do_classifier_free_guidance:
            uncond = self._embed(
                [negative_of(negative_prompt, self.engine.spec.sampling.negative)] * len(prompts), text_cfg
            )
            out += [uncond.cap_feats, uncond.pooled, uncond.cap_mask]
        else:
            out += [None, None, None]
        if device is not None:
            out = [None if t is None else t.to(_device(device)) for t in out]
        return tuple(out)

    # -- generation --

    def __call__(
        self,
        prompt=None,
        negative_prompt=None,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        cfg_trunc_ratio: float | None = None,
        cfg_normalization: bool | float | None = None,
        system_prompt: str | None = None,
        num_images_per_prompt: int = 1,
        generator=None,
        latents=None,
        prompt_embeds=None,
        negative_prompt_embeds=None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end=None,
        callback_on_step_end_tensor_inputs=("latents",),
        max_sequence_length: int = 512,
        pooled_prompt_embeds=None,
        prompt_attention_mask=None,
        negative_pooled_prompt_embeds=None,
        negative_prompt_attention_mask=None,
        sampler: str | None = None,
        shift: float | None = None,
        **kwargs,
    ):
        """Generate -> NewbiePipelineOutput (.images), or (images,) with return_dict=False. The module
        docstring gives each argument's meaning and default; sampler and shift, and any other request
        setting under its own name (noise, schedule, loras, init_image, strength, mask, hires, ...), are
        ours (Settings' fields, DIFFUSERS_NAMES)."""
        call = {
            k: v for k, v in locals().items() if k != "self"
        }  # the arguments by name, read by settings_of
        from newbie.pipeline.request import Settings

        own = [p for p in inspect.signature(self.__call__).parameters if p != "kwargs"]
        extra = [f for f in Settings.fields() if f not in DIFFUSERS_NAMES and f not in own]
        _reject({k: v for k, v in kwargs.items() if k not in extra}, own + extra, "pipe()")
        wanted = check_call(
            output_type,
            callback_on_step_end_tensor_inputs,
            prompt,
            prompt_embeds,
            negative_prompt,
            negative_prompt_embeds,
        )
        prompts, negative = texts_of(
            prompt,
            prompt_embeds,
            negative_prompt,
            negative_prompt_embeds,
            num_images_per_prompt,
            self.engine.spec.sampling.negative,
        )
        settings, seeds = settings_of(
            prompts,
            negative,
            generator,
            latents,
            self.engine.codec.cfg.downscale,
            call,
        )
        req = self._request(settings, seeds, cfg_trunc_ratio, latents, len(prompts))
        self._texts(
            req,
            prompts,
            negative,
            text_cfg_of(self.engine.spec.text, system_prompt, max_sequence_length),
            num_images_per_prompt,
            (prompt_embeds, pooled_prompt_embeds, prompt_attention_mask),
            (negative_prompt_embeds, negative_pooled_prompt_embeds, negative_prompt_attention_mask),
        )
        progress = None if callback_on_step_end is None else self._callback(req, callback_on_step_end, wanted)
        gen = self.engine.run(req, progress)
        images = output_of(gen, output_type)
        if not return_dict:
            return (images,)
        return NewbiePipelineOutput(images=images, generation=gen)

    def _request(self, settings, seeds, cfg_trunc_ratio, latents, n: int):
        """The engine's Request for the call's settings, with the per-image seeds, the PR's CFG truncation
        and the given latents."""
        from newbie.pipeline.request import SettingError

        e = self.engine
        try:
            req = e.request(settings)
        except SettingError as err:
            if DIFFUSERS_NAMES.get(err.field, err.field) == err.field:
                raise
            raise SettingError(err.field, f"{DIFFUSERS_NAMES[err.field]}: {err}") from None
        if seeds:
            req.seeds = seeds
        if cfg_trunc_ratio is not None:
            req.cfg_trunc = self._trunc_time(req, float(cfg_trunc_ratio))

        if latents is not None:
            f = e.codec.cfg.downscale
            shape = (n, e.codec.cfg.latent_channels, req.height // f, req.width // f)
            if tuple(latents.shape) != shape:
                raise NewbieError(
                    f"latents must have shape {shape} for {n} image(s) at {req.width}x{req.height}, "
                    f"got {tuple(latents.shape)}"
                )
            req.initial_latents = latents.detach()
            req.warnings.append("started from given latents: the seed does not re-make it")
        return req

    def _texts(self, req, prompts, negative: str, text_cfg, per_prompt: int, given, given_negative) -> None:
        """The call's own text embeddings onto the request: given ones (the PR's trio or a TextEmbeds), or
        the prompts encoded with a custom system prompt / sequence length; None leaves them to the engine."""
        n = len(prompts)
        dit_cfg = self.engine.dit.cfg
        cond = uncond = None
        if given[0] is not None:
            cond = given_embeds(*given, "prompt_embeds", n, per_prompt, dit_cfg)
            req.warnings.append("made from given prompt_embeds: the recipe cannot re-make it")
        elif text_cfg is not None:
            cond = self._embed(prompts, text_cfg)
        if req.uses_cfg:
            if given_negative[0] is not None:
                uncond = given_embeds(*given_negative, "negative_prompt_embeds", n, per_prompt, dit_cfg)
                req.warnings.append("made from given negative_prompt_embeds: the recipe cannot re-make it")
            elif text_cfg is not None:
                uncond = self._embed([negative] * n, text_cfg)
        if text_cfg is not None:
            req.warnings.append(
                "encoded with a custom system_prompt / max_sequence_length: the recipe re-makes it "
                "with the model's own"
            )
        if cond is not None or uncond is not None:
            req.given_embeds = (cond, uncond)

    def _trunc_time(self, req, ratio: float) -> float:
        """The PR's step-fraction truncation -> our time threshold: CFG on steps i with (i + 1) / N <= ratio,
        i.e. the first k steps: each model call of those steps has t = 1 - sigma < 1 - sigma_k, none after."""
        steps = req.steps
        k = sum(1 for i in range(steps) if (i + 1) / steps <= ratio)
        return 1.0 - float(self.engine.schedule(req)[k])

    def _callback(self, req, callback, wanted: list[str]):
        sigmas = self.engine.schedule(req).tolist()

        def progress(info: dict) -> None:
            i = info["step"] - 1
            x = info["x"]
            out = callback(self, i, torch.tensor(sigmas[i] * 1000.0), {k: x for k in wanted})
            new = out.get("latents") if isinstance(out, dict) else None
            if new is not None and new is not x:
                if tuple(new.shape) != tuple(x.shape):
                    raise NewbieError(
                        f"callback_on_step_end returned latents of shape {tuple(new.shape)}, "
                        f"expected {tuple(x.shape)}"
                    )
                x.copy_(new)  # the sampler's own state: its next step starts from the new latents
                note = "latents changed by callback_on_step_end: the recipe cannot re-make it"
                if note not in req.warnings:
                    req.warnings.append(note)

        return progress
