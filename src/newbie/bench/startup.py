"""`newbie bench startup`: how long a user waits from the command to the model or the first PNG (issue 23).

Every figure comes from a fresh process (newbie.bench.startup_child or the `newbie` command itself), timed
from the outside, so that imports, CUDA start-up and compile caches count as a user pays them. This process
never touches the GPU. The result JSON (bench/results/startup-<device>-<date>.json, and $OUT when set) is
rewritten after every section, so a run cut short keeps what it measured; a section that cannot run on this
machine records why instead of a figure.

    newbie bench startup --model /tmp/newbie-full                    # on a GPU, the real shapes
    newbie bench startup --model DIR --device cpu --size 64 --steps 2  # the same sections at demo size
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import date
from pathlib import Path

from newbie.errors import NewbieError
from newbie.loading.prefetch import weight_paths
from newbie.pipeline.timings import parse_timings

# in the order they run: the headline figures first, in case the budget runs out
SECTIONS = ("read", "import", "load", "cli", "compile", "vram", "serve", "cold", "peers", "megacache")
PROMPT = "1girl, red hair, blue eyes, yellow shirt, green background, looking at viewer, upper body"


def add_parser(bench_sub) -> None:
    p = bench_sub.add_parser(
        "startup", help="time load, import, first image and server start (fresh processes)"
    )
    p.add_argument("--model", help="a model folder (default: the embedded demo model)")
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--size", type=int, help="image side (default: the model's)")
    p.add_argument("--steps", type=int, help="steps of the CLI images (default: the model's recipe)")
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma list of {', '.join(SECTIONS)}")
    p.add_argument("--timeout-s", type=float, default=300.0, help="limit for each fresh process")
    p.add_argument("--budget-s", type=float, default=1e9, help="start no section after this many seconds")
    p.add_argument("--out", default="bench/results")
    p.set_defaults(func=run)


class Run:
    """The measured figures and where they are written."""

    def __init__(self, args, model: Path, device: str, size: int):
        self.args, self.model, self.device, self.size = args, model, device, size
        self.work = Path(tempfile.mkdtemp(prefix="newbie-startup-"))
        self.res: dict = {"device": device, "date": date.today().isoformat(), "model": str(model)}
        self.path: Path | None = None

    def save(self) -> None:
        slug = re.sub(r"[^a-z0-9]+", "-", self.res["device"].lower().replace("nvidia", "")).strip("-")
        slug = next((m for m in re.findall(r"[a-z]\d{2,3}", slug)), slug)  # "h100", "h200", else all of it
        text = json.dumps(self.res, indent=1, default=str)
        for folder in filter(None, {self.args.out, os.environ.get("OUT")}):
            Path(folder).mkdir(parents=True, exist_ok=True)
            self.path = Path(folder) / f"startup-{slug}-{self.res['date']}.json"
            self.path.write_text(text + "\n")

    def child(self, argv: list[str], env: dict | None = None) -> tuple[dict | None, float, str]:
        """(the @@ line's JSON or None, wall seconds from spawn to exit, the output: stdout then stderr, or the
        tail of the failure)."""
        t0 = time.perf_counter()
        try:
            p = subprocess.run(
                [sys.executable, *argv],
                capture_output=True,
                text=True,
                timeout=self.args.timeout_s,
                env={**os.environ, **(env or {})},
            )
        except subprocess.TimeoutExpired:
            return None, time.perf_counter() - t0, f"timed out after {self.args.timeout_s:.0f} s"
        wall = time.perf_counter() - t0
        lines = [ln for ln in p.stdout.splitlines() if ln.startswith("@@")]
        if p.returncode != 0:
            return None, wall, (p.stderr or p.stdout).strip()[-400:] or f"exit status {p.returncode}"
        return (
            (json.loads(lines[-1][2:]) if lines else None),
            wall,
            p.stdout.strip() + "\n" + p.stderr.strip(),
        )

    def probe(self, what: str, **kwargs) -> dict:
        data, _, tail = self.child(["-m", "newbie.bench.startup_child", what, json.dumps(kwargs)])
        return data if data is not None else {"error": tail}


def weight_files(model: Path) -> list[Path]:
    return weight_paths(str(model))  # every .safetensors file below the folder, as the CLI prefetches them


def read_all(files: list[Path], block: int = 64 * 2**20) -> float:
    """Seconds to read every byte once through a reused buffer (the reference every load is held to)."""
    buf = bytearray(block)
    view = memoryview(buf)
    t0 = time.perf_counter()
    for f in files:
        with open(f, "rb", buffering=0) as fh:
            while fh.readinto(view):
                pass
    return time.perf_counter() - t0


def drop_caches() -> str | None:
    """None when the page cache was emptied, else why not."""
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return None
    except OSError as e:
        return f"cannot drop the page cache ({e.strerror or e}; needs root and a writable /proc/sys)"


def section_read(r: Run) -> None:
    files = weight_files(r.model)
    r.res["weights_gb"] = sum(f.stat().st_size for f in files) / 1e9
    read_all(files)  # into the page cache
    r.res["page_cache_read_s"] = min(read_all(files) for _ in range(2))


def section_import(r: Run) -> None:
    from newbie.bench.startup_child import IMPORT_PROBE

    argv = ["generate", PROMPT, "--model", str(r.model), "--device", r.device]
    data, _, tail = r.child(["-c", IMPORT_PROBE, *argv])
    if data is None:
        r.res["import_s"] = None
        r.res["import_error"] = tail
        return
    r.res["import_s"] = data["import_s"]
    r.res["import_torch_s"] = data["torch_s"]
    r.res["import_heavy_modules"] = data["heavy_modules"]


def section_load(r: Run) -> None:
    data = r.probe("load", model=str(r.model), device=r.device, size=r.size, prompt=PROMPT, second=True)
    r.res["load_detail"] = data
    r.res["load_s"] = data.get("load_s")
    r.res["first_encode_s"] = data.get("first_encode_s")
    r.res["first_step_s"] = data.get("first_step_s")
    r.res["later_step_s"] = data.get("later_step_s")
    if r.res.get("weights_gb") and data.get("load_s"):
        r.res["load_gb_per_s"] = r.res["weights_gb"] / data["load_s"]
    r.save()
    # the same after newbie.pipeline.load.warm_up (load(..., warm=True)): what a server's first request gets
    data = r.probe("load", model=str(r.model), device=r.device, size=r.size, prompt=PROMPT, warm=True)
    r.res["load_warmed_detail"] = data
    r.res["warm_s"] = data.get("warm_s")
    r.res["first_encode_warmed_s"] = data.get("first_encode_s")
    r.res["first_step_warmed_s"] = data.get("first_step_s")
    r.res["later_step_warmed_s"] = data.get("later_step_s")


def section_cold(r: Run) -> None:
    why = drop_caches()
    if why:
        r.res["cold_read_s"] = why
        return
    r.res["cold_read_s"] = read_all(weight_files(r.model))
    if drop_caches() is None:
        data = r.probe("load", model=str(r.model), device=r.device, size=r.size, prompt=PROMPT)
        r.res["cold_load_s"] = data.get("load_s", data)


def _generate(r: Run, key: str, *extra: str, env: dict | None = None) -> None:
    """One `newbie generate` from process start to PNG into res[key] (wall seconds, or why it failed), and the
    command's own account of where the time went (its timings line) into res[key without _s + "_phases"]."""
    out = r.work / "cli.png"
    argv = ["-m", "newbie", "generate", PROMPT, "--model", str(r.model), "--device", r.device, "--seed", "0"]
    argv += ["--size", f"{r.size}x{r.size}", "--out", str(out), *extra]
    if r.args.steps:
        argv += ["--steps", str(r.args.steps)]
    _, wall, tail = r.child(argv, env)
    ok = out.is_file() and "Traceback" not in tail
    if out.is_file():
        out.unlink()
    r.res[key] = wall if ok else f"failed: {tail[-300:]}"
    if ok:
        r.res[key.removesuffix("_s") + "_phases"] = parse_timings(tail)


def section_cli(r: Run) -> None:
    _generate(r, "cli_eager_s")
    r.save()
    # a model this machine has never hashed (a new download): the hash every PNG records is computed too
    _generate(r, "cli_eager_unhashed_model_s", env={"NEWBIE_CACHE": str(r.work / "fresh-cache")})


def _compiled_pair(r: Run, keys: tuple[str, str], env: dict) -> None:
    """`--compile` with an empty cache folder, then again with the folder the first run filled."""
    if not r.device.startswith("cuda"):
        r.res.update(dict.fromkeys(keys, "compile sections run on CUDA only"))
        return
    _generate(r, keys[0], "--compile", env=env)
    r.save()
    _generate(r, keys[1], "--compile", env=env)


def section_compile(r: Run) -> None:
    # inductor's own on-disk caches (FX graphs, autotuning, Triton kernels)
    env = {"TORCHINDUCTOR_CACHE_DIR": str(r.work / "inductor")}
    _compiled_pair(r, ("cli_compiled_cold_s", "cli_compiled_warm_s"), env)


def section_megacache(r: Run) -> None:
    # and torch's mega-cache on top (newbie.precision.compile_cache): saved by one run, loaded by the next
    env = {"TORCHINDUCTOR_CACHE_DIR": str(r.work / "inductor-mega"), "NEWBIE_COMPILE_MEGACACHE": "1"}
    _compiled_pair(r, ("cli_compiled_cold_megacache_s", "cli_compiled_warm_megacache_s"), env)


def section_vram(r: Run) -> None:
    if not r.device.startswith("cuda"):
        r.res["cli_vram8_s"] = "--vram plans need CUDA"
        return
    _generate(r, "cli_vram8_s", "--vram", "8GB")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def section_serve(r: Run) -> None:
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        r.res["serve_ready_s"] = f"newbie serve needs fastapi and uvicorn ({e})"
        return
    port = _free_port()
    argv = [sys.executable, "-m", "newbie", "serve", "--model", str(r.model), "--device", r.device]
    argv += ["--port", str(port), "--data-dir", str(r.work / "serve")]
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        while time.perf_counter() - t0 < r.args.timeout_s:
            if proc.poll() is not None:
                r.res["serve_ready_s"] = f"failed: {proc.stderr.read()[-300:]}"
                return
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as resp:
                    if resp.status == 200:
                        r.res["serve_ready_s"] = time.perf_counter() - t0
                        return
            except OSError:
                pass
            time.sleep(0.05)
        r.res["serve_ready_s"] = f"no healthy answer within {r.args.timeout_s:.0f} s"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stderr.close()


def section_peers(r: Run) -> None:
    peer_dir = r.work / "lumina2"
    wrote = r.probe("write_peer", model=str(r.model), peer_dir=str(peer_dir), device=r.device)
    if "write_s" not in wrote:
        r.res["peers"] = {"diffusers_lumina2_device_map": wrote.get("reason") or wrote}
        return
    gb = sum(f.stat().st_size for f in weight_files(peer_dir)) / 1e9
    read_all(weight_files(peer_dir))  # both loads from the page cache
    peers = {"transformer_gb": gb, "page_cache_read_s": read_all(weight_files(peer_dir))}
    peers["diffusers_lumina2_device_map"] = r.probe(
        "peer", path=str(peer_dir), device=r.device, which="diffusers"
    )
    # newbie's DiT loader in the same kind of fresh process, on the model's own transformer (same shapes, plus
    # NewBie's CLIP and time-text projections that Lumina2 lacks)
    peers["newbie_load_dit"] = r.probe("peer", path=str(r.model), device=r.device, which="newbie")
    peers["newbie_transformer_gb"] = (
        sum(f.stat().st_size for f in weight_files(r.model / "transformer")) / 1e9
    )
    r.res["peers"] = peers


RUNNERS = {
    "read": section_read,
    "import": section_import,
    "load": section_load,
    "cold": section_cold,
    "cli": section_cli,
    "compile": section_compile,
    "vram": section_vram,
    "serve": section_serve,
    "peers": section_peers,
    "megacache": section_megacache,
}


def run(args) -> int:
    import shutil

    import torch

    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        raise NewbieError(f"--sections: unknown {', '.join(unknown)} (choose from {', '.join(SECTIONS)})")
    from newbie.demo.model import resolve_model

    model = Path(resolve_model(args.model)[0]).expanduser()  # None or "demo": the embedded demo model
    if not model.is_dir():
        raise NewbieError(f"--model {model}: not a model folder")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise NewbieError("--device cuda was asked for but no CUDA GPU is available")
    if args.size is not None and (args.size < 16 or args.size % 16):
        raise NewbieError(f"--size must be a multiple of 16, got {args.size}")
    size = args.size or _default_size(model)
    r = Run(args, model, device, size)
    info = r.probe("device", device=device)  # named by a child: this process keeps off the GPU
    r.res.update(device=info.get("device", device), torch=info.get("torch"))
    try:
        start = time.perf_counter()
        for name in sections:
            t0 = time.perf_counter()
            if t0 - start > args.budget_s:
                r.res.setdefault("skipped", []).append(name)
                continue
            RUNNERS[name](r)
            r.res.setdefault("section_s", {})[name] = time.perf_counter() - t0
            r.save()
            print(f"startup: {name} done in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(r.work, ignore_errors=True)
    r.save()
    print(f"startup: wrote {r.path}", file=sys.stderr)
    return 0


def _default_size(model: Path) -> int:
    spec = model / "newbie_spec.json"
    if spec.is_file():
        try:
            return int(json.loads(spec.read_text()).get("sampling", {}).get("width", 1024))
        except (OSError, ValueError, AttributeError):
            pass
    return 1024
