"""Loading a model's four components at once.

The DiT, Gemma, Jina and VAE weights are read in four threads straight onto the target device in their target
dtype (I/O and host-to-device copies, which release the GIL), while this thread loads the tokenizers; the
empty models (our own classes, built on the meta device: no transformers, diffusers or accelerate import) are
then assigned the tensors. The result is the same tensors as reading one component after the other
(tests/loading/test_components.py), with the same strict key checks and the same first error.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch

from newbie.config import DiTConfig
from newbie.errors import NewbieError
from newbie.loading.dit import load_dit
from newbie.loading.folder import ModelFolder
from newbie.loading.text import build_gemma, build_jina, load_tokenizer, read_gemma, read_jina
from newbie.loading.vae import build_vae, read_vae
from newbie.model.dit import NextDiT


@dataclass
class Components:
    dit: NextDiT
    gemma: torch.nn.Module
    gemma_tokenizer: object
    jina: torch.nn.Module
    jina_tokenizer: object
    vae: torch.nn.Module
    vae_cfg: object
    # seconds from the start of the load to the end of each part (newbie bench startup reports them)
    timings: dict[str, float] = field(default_factory=dict)


def _check_widths(gemma, jina, dit: NextDiT) -> None:
    if gemma.config.hidden_size != dit.cfg.cap_feat_dim:
        raise NewbieError(
            f"text encoder width {gemma.config.hidden_size} != transformer cap_feat_dim {dit.cfg.cap_feat_dim}"
        )
    if jina.config.hidden_size != dit.cfg.clip_text_dim:
        raise NewbieError(
            f"Jina width {jina.config.hidden_size} != transformer clip_text_dim {dit.cfg.clip_text_dim}"
        )


def _tokenizers(gemma_dirs: list[Path], clip_dirs: list[Path]) -> tuple:
    return load_tokenizer(gemma_dirs, "Gemma"), load_tokenizer(clip_dirs, "Jina")


def _attempt(fn):
    """Run fn now; the returned callable gives its result, or raises its error, when called."""
    try:
        value = fn()
    except Exception as e:
        error = e

        def fail():
            raise error

        return fail
    return lambda: value


def load_components(
    folder: ModelFolder,
    paths: tuple[Path, Path, Path],
    dit_cfg: DiTConfig,
    dtypes: dict[str, torch.dtype],
    device: torch.device,
) -> Components:
    """paths: the text encoder, CLIP model and VAE (checked present); dtypes: "dit", "text", "vae".
    Errors come in the order of a one-by-one load: DiT, Gemma, Jina, widths, tokenizers, VAE."""
    te, cm, va = paths
    t0 = time.perf_counter()
    marks: dict[str, float] = {}

    def timed(name, fn, *args):
        out = fn(*args)
        marks[name] = time.perf_counter() - t0
        return out

    pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="newbie-read")
    try:
        dit_f = pool.submit(timed, "dit_read", load_dit, folder.transformer, dit_cfg, dtypes["dit"], device)
        gemma_f = pool.submit(timed, "gemma_read", read_gemma, te, dtypes["text"], device)
        jina_f = pool.submit(timed, "jina_read", read_jina, cm, dtypes["text"], device)
        vae_f = pool.submit(timed, "vae_read", read_vae, va, dtypes["vae"], device)
        # the tokenizers while the weights are still coming (a cold disk); a failure waits for its turn
        tokenizers = _attempt(
            lambda: timed("tokenizers", _tokenizers, folder.gemma_tokenizer_dirs, folder.clip_tokenizer_dirs)
        )
        dit = dit_f.result()
        gemma = build_gemma(te, gemma_f.result(), device)
        jina = build_jina(cm, jina_f.result(), device)
        _check_widths(gemma, jina, dit)
        gemma_tok, jina_tok = tokenizers()
        vae, vae_cfg = timed("built", build_vae, va, vae_f.result(), device)
    finally:
        # on an error the reads still running finish (a read cannot be interrupted), the queued ones never start
        pool.shutdown(wait=True, cancel_futures=True)
    return Components(dit, gemma, gemma_tok, jina, jina_tok, vae, vae_cfg, dict(marks))
