"""newbie: an open inference engine for NewBie image Exp0.1."""

from newbie.version import __version__


def load(*args, **kwargs):
    """Load a model -> a Pipeline; `pipe.generate(prompt, seed=42, width=1024, height=1024)` makes images.

    newbie.load() loads the embedded demo model; newbie.load("/path/to/NewBie-image-Exp0.1") a model folder
    (or a transformer file with text_encoder=, clip_model=, vae=; or comfy_dir= for a ComfyUI models/ folder).
    Keywords: device ("cuda" when available, else "cpu"), dtype ("auto" = bf16 on a GPU and fp32 on a CPU,
    or "bf16", "fp16", "fp32"), vram (a GPU memory budget such as "8GB"), quantize ("int8", "fp8"), warm
    (True: the first request's one-time costs paid at load, for servers).
    A missing or damaged model raises NewbieError with a one-line reason. Every keyword is documented at
    newbie.pipeline.load.load, which this calls (imported on first use, so `import newbie` stays light).
    """
    from newbie.pipeline.load import load as _load

    return _load(*args, **kwargs)


def __getattr__(name: str):
    # the diffusers-style front end, imported on first use so that `import newbie` stays light
    if name in ("NewbiePipeline", "NewbiePipelineOutput"):
        from newbie import diffusers_api

        return getattr(diffusers_api, name)
    raise AttributeError(f"module 'newbie' has no attribute '{name}'")


__all__ = ["load", "NewbiePipeline", "NewbiePipelineOutput", "__version__"]
