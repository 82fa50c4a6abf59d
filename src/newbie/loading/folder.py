"""Finding the components of a model folder by name (never through model_index.json), or the single files of a
ComfyUI models/ folder, and checking them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from newbie.config import DiTConfig
from newbie.errors import CheckpointError, NewbieError
from newbie.loading.safetensors_io import read_headers, weight_files

DTYPE_NAMES = {
    "BF16": "bf16",
    "F16": "fp16",
    "F32": "fp32",
    "F64": "fp64",
    "F8_E4M3": "fp8_e4m3",
    "I8": "int8",
}


@dataclass
class ModelFolder:
    root: Path | None
    transformer: Path  # a folder with the weights, or one .safetensors file
    text_encoder: Path | None
    clip_model: Path | None
    vae: Path | None
    gemma_tokenizer_dirs: list[Path] = field(
        default_factory=list
    )  # a ComfyUI file here: its embedded tokenizer
    clip_tokenizer_dirs: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # which files a ComfyUI models/ folder gave

    @property
    def name(self) -> str:
        return (self.root or self.transformer).name


def _first_dir(root: Path, names: tuple[str, ...]) -> Path | None:
    for n in names:
        if (root / n).is_dir():
            return root / n
    return None


def _from_comfy_dir(comfy_dir, given: dict) -> tuple[dict, list[str]]:
    """The components not given explicitly, from a ComfyUI models/ folder; each one it lacks is an error."""
    from newbie.loading.comfy import COMFY_SEARCH, find_comfy_files

    found, notes = find_comfy_files(comfy_dir)
    taken = []
    for name, value in given.items():
        if value is not None:
            continue
        if found[name] is None:
            subdirs, patterns = COMFY_SEARCH[name]
            raise NewbieError(
                f"{comfy_dir}: no {name} file in {' or '.join(d + '/' for d in subdirs)} "
                f"(looked for {', '.join(patterns)}); give it explicitly"
            )
        given[name] = found[name]
        taken.append(notes[name])
    return given, taken


def locate(
    path: str | Path | None, text_encoder=None, clip_model=None, vae=None, comfy_dir=None
) -> ModelFolder:
    """path: a model folder, a transformer folder or file, or a ComfyUI models/ folder (as comfy_dir).
    comfy_dir: a ComfyUI models/ folder supplying every component not given explicitly."""
    from newbie.loading.comfy import check_role, is_comfy_dir

    notes: list[str] = []
    if path is not None and comfy_dir is None and is_comfy_dir(Path(path).expanduser()):
        path, comfy_dir = None, path
    if comfy_dir is not None:
        given = {"transformer": path, "text_encoder": text_encoder, "clip_model": clip_model, "vae": vae}
        given, notes = _from_comfy_dir(comfy_dir, given)
        path, text_encoder, clip_model, vae = (
            given[k] for k in ("transformer", "text_encoder", "clip_model", "vae")
        )
    if path is None:
        raise NewbieError("no model given (a model folder, a transformer file, or --comfy-dir)")
    path = Path(path).expanduser()
    if not path.exists():
        raise NewbieError(f"{path}: no such model folder or file")
    if path.is_file():
        if path.suffix != ".safetensors":
            raise NewbieError(f"{path}: a single-file model must be a .safetensors file")
        root, transformer = None, path
    else:
        root = path
        transformer = _first_dir(root, ("transformer",))
        if transformer is None:
            if list(root.glob("*.safetensors")) and not (root / "vae").is_dir():
                transformer, root = root, None  # a bare transformer folder
            else:
                raise NewbieError(f"{root}: no transformer/ folder (is this a NewBie model folder?)")
    te = Path(text_encoder) if text_encoder else (_first_dir(root, ("text_encoder",)) if root else None)
    cm = (
        Path(clip_model)
        if clip_model
        else (_first_dir(root, ("clip_model", "text_encoder_2")) if root else None)
    )
    va = Path(vae) if vae else (_first_dir(root, ("vae",)) if root else None)
    gemma_tok = [d for d in (te, root / "tokenizer" if root else None) if d]
    clip_tok = [d for d in (cm, root / "tokenizer_2" if root else None) if d]
    for flag, p in (("--text-encoder", te), ("--clip-model", cm), ("--vae", va)):
        if p is not None and not p.exists():
            raise NewbieError(f"{flag} {p}: no such file or folder")
    for component, p in (("transformer", transformer), ("text_encoder", te), ("clip_model", cm), ("vae", va)):
        if p is not None:
            check_role(p, component)
    return ModelFolder(root, transformer, te, cm, va, gemma_tok, clip_tok, notes)


@dataclass
class ComponentReport:
    name: str
    path: Path | None
    found: bool
    params: int = 0
    dtype: str = ""
    ok: bool = False
    problem: str = ""
    format: str = ""

    def line(self) -> str:
        if not self.found:
            return f"{self.name:<13} absent"
        status = "ok" if self.ok else f"DAMAGED: {self.problem}"
        return (
            f"{self.name:<13} found  {self.params / 1e6:10.2f}M params  {self.dtype:<6} keys {status}  "
            f"({self.path})  [{self.format}]"
        )


def _summary(headers: dict[str, dict]) -> tuple[int, str]:
    params = 0
    counts: dict[str, int] = {}
    for h in headers.values():
        n = 1
        for s in h["shape"]:
            n *= s
        params += n
        counts[h["dtype"]] = counts.get(h["dtype"], 0) + n
    main = max(counts, key=counts.get) if counts else ""
    return params, DTYPE_NAMES.get(main, main.lower())


def inspect_folder(folder: ModelFolder, dit_base: DiTConfig) -> list[ComponentReport]:
    """Check every present component's keys and shapes against its architecture, from headers alone."""
    from newbie.loading.comfy import describe
    from newbie.loading.dit import check_dit_keys, config_from_json, dit_source, infer_layer_counts
    from newbie.loading.text import check_gemma, check_jina
    from newbie.loading.vae import check_vae

    reports = []

    def run(name, path, fn):
        rep = ComponentReport(name, path, found=path is not None and path.exists())
        if rep.found:
            try:
                files = (
                    [path]
                    if path.is_file()
                    else (dit_source(path)[0] if name == "transformer" else weight_files(path))
                )
                headers = read_headers(files)
                rep.format = describe(path, headers)
                # the embedded tokenizer's bytes are not parameters
                rep.params, rep.dtype = _summary({k: h for k, h in headers.items() if k != "spiece_model"})
                fn(path, headers)
                rep.ok = True
            except NewbieError as e:
                rep.problem = str(e)
        reports.append(rep)

    def dit_check(path, headers):
        _, cfg_path = dit_source(path)
        cfg = config_from_json(cfg_path, dit_base) if cfg_path else infer_layer_counts(headers, dit_base)
        check_dit_keys(headers, cfg, str(path))

    run("transformer", folder.transformer, dit_check)
    run("text_encoder", folder.text_encoder, check_gemma)
    run("clip_model", folder.clip_model, check_jina)
    run("vae", folder.vae, check_vae)
    return reports


def require(component: Path | None, what: str, hint: str) -> Path:
    if component is None:
        raise CheckpointError(f"no {what} found ({hint})")
    return component
