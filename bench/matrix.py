"""The workflow x memory-plan matrix (issue 13): every artist workflow under every VRAM budget, cell by cell.

Workflows: txt2img, batch 2, img2img, inpaint, hires (half size -> x2), LoRA unfused, LoRA fused, fp16 with an
injected overflow, compile; plus txt2img at 1536x1024. Plans: no budget (resident) and --vram 24/12/8/6/4 GB,
each resolved by the planner exactly as `newbie.load(vram=...)` resolves it for the cell's size.
A cell passes when it makes a finite, non-black image whose peak GPU memory is within the budget, or when it
refuses up front with one NewbieError line. Any other exception is a failure; its type, message and the
innermost frames are recorded. Sampling is cut to a few steps: the matrix proves seams, not quality.

GPU (full size, random weights at the real shapes written by bench/gpu_check.py's writer):
    python bench/matrix.py --out $OUT/matrix.json [--workdir /tmp/newbie-full] [--deadline 520]
CPU (the embedded demo model; each budget's full-size plan scaled to the demo's depth, so the staged and
streamed code paths run, no memory to measure):
    python bench/matrix.py --device cpu --demo --out /tmp/matrix-cpu.json
Markdown table of a result file (for docs/benchmarks.md):
    python bench/matrix.py --table bench/results/matrix-h200-<date>.json
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import sys
import time
import traceback
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "src"))

from newbie.bench.time_limit import time_limit  # noqa: E402 - after the path to the package

GIB = 2**30
LABELS: list[tuple[str, float | None]] = [
    ("resident", None),
    ("24GB", 24.0),
    ("12GB", 12.0),
    ("8GB", 8.0),
    ("6GB", 6.0),
    ("4GB", 4.0),
]
# most informative first inside a plan: the failures, then the adapters, then the plain ones;
# compile last, since the bench has to undo it before the next plan
WORKFLOWS = ["img2img", "hires", "inpaint", "lora_fused", "lora", "batch2", "txt2img", "wide", "compile"]
PLAN_ORDER = ["resident", "staged", "stream", "stream-all", "int8"]  # int8 last: quantizing cannot be undone
DEMO_PROMPT = "1girl, red_hair, left, white_background"


@dataclass
class Setup:
    device: str
    demo: bool
    size: tuple[int, int]  # the main size of every row
    wide: tuple[int, int]  # the one wider row
    steps: int = 2
    hires_steps: int = 1
    full_scale: int = 1  # demo: how many full-size pixels one demo pixel stands for (plan choice)
    workflows: list[str] = field(default_factory=lambda: list(WORKFLOWS) + ["fp16_overflow"])
    labels: list[tuple[str, float | None]] = field(default_factory=lambda: list(LABELS))
    deadline: float = 520.0  # seconds after start: no new cell starts later (a device call ends at 600 s)
    compile_limit: float = 0.0  # seconds a compile cell may take (0: no limit)
    prompt: str = DEMO_PROMPT
    inputs: dict = field(default_factory=dict)  # base image, mask, LoRA folder
    sizes: object = None  # ComponentSizes the plans are chosen with (full mode: the planner's defaults)

    @property
    def cuda(self) -> bool:
        return self.device == "cuda"


# -- inputs --


def write_inputs(
    folder: Path, size: tuple[int, int], shapes: dict[str, tuple[int, int]], n_layers: int
) -> dict:
    """An init image (a gradient with a disc), an inpainting mask (a centred rectangle) and a LoRA in
    NewbieLoraTrainer's format (a PEFT folder: adapter_model.safetensors + adapter_config.json, spec §6)."""
    from PIL import Image
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    rgb = np.stack([xx / w, yy / h, 0.5 + 0.5 * np.sin(xx / w * 6.28)], -1)
    disc = (xx - w * 0.6) ** 2 + (yy - h * 0.4) ** 2 < (min(w, h) * 0.2) ** 2
    rgb[disc] = (0.9, 0.2, 0.2)
    base = folder / "base.png"
    Image.fromarray((rgb * 255).astype(np.uint8)).save(base)
    mask = np.zeros((h, w), np.uint8)
    mask[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = 255
    mask_path = folder / "mask.png"
    Image.fromarray(mask).save(mask_path)

    lora = folder / "lora"
    lora.mkdir(exist_ok=True)
    g, rank, tensors = torch.Generator().manual_seed(0), 4, {}
    targets = [
        f"layers.{i}.{part}"
        for i in range(n_layers)
        for part in ("attention.qkv", "attention.out", "feed_forward.w2")
    ]
    for name in targets:
        out, inp = shapes[name]
        tensors[f"base_model.model.{name}.lora_A.weight"] = torch.randn(rank, inp, generator=g) / math.sqrt(
            inp
        )
        tensors[f"base_model.model.{name}.lora_B.weight"] = torch.randn(out, rank, generator=g) * 0.02
    save_file(tensors, str(lora / "adapter_model.safetensors"))
    (lora / "adapter_config.json").write_text(
        json.dumps(
            {
                "peft_type": "LORA",
                "r": rank,
                "lora_alpha": rank,
                "bias": "none",
                "target_modules": ["attention.qkv", "attention.out", "feed_forward.w2"],
            }
        )
    )
    return {"base": str(base), "mask": str(mask_path), "lora": str(lora)}


def inject_overflow(dit) -> None:
    """An FFN that overflows fp16 (65504) on any input, as in tests/precision: the fp16 guard must engage."""
    ff = dit.layers[0].feed_forward
    with torch.no_grad():  # in place, so offloaded / streamed copies carry it too
        ff.w1.weight.mul_(1e2)
        ff.w2.weight.mul_(1e4)


# -- plans --


def plan_for_cell(setup: Setup, budget: float | None, width: int, height: int, sizes):
    """The plan `newbie.load(vram=budget, plan_size=(width, height))` would apply. In demo mode: the plan a
    GPU user gets at the matching full size, with its streamed-layer counts scaled to the demo's depth (the
    planner's activation terms are calibrated at full size, so demo budgets cannot tell the plans apart)."""
    from newbie.memory.planner import ComponentSizes, Plan, plan_for

    if budget is None:
        return Plan("resident")
    if not setup.demo:
        return plan_for(budget, width, height, sizes)
    full, k = ComponentSizes(), setup.full_scale
    p = plan_for(budget, width * k, height * k, full)
    return replace(
        p,
        dit_streamed=math.ceil(p.dit_streamed * sizes.dit_layers / full.dit_layers),
        gemma_streamed=math.ceil(p.gemma_streamed * sizes.gemma_layer_count / full.gemma_layer_count),
    )


def plan_rank(name: str) -> int:
    if name.startswith("stream-") and name != "stream-all":
        return PLAN_ORDER.index("stream")
    return PLAN_ORDER.index(name) if name in PLAN_ORDER else len(PLAN_ORDER)


def cell_size(setup: Setup, workflow: str) -> tuple[int, int]:
    return setup.wide if workflow == "wide" else setup.size


def plan_size(setup: Setup, workflow: str) -> tuple[int, int]:
    """The size the user would plan for: hires plans at its first-pass size (`--size 512x512 --hires 2`)."""
    w, h = cell_size(setup, workflow)
    return (w // 2, h // 2) if workflow == "hires" else (w, h)


# -- one cell --


def generate_kwargs(setup: Setup, workflow: str) -> dict:
    w, h = cell_size(setup, workflow)
    kw = {"seed": 1, "steps": setup.steps, "sampler": "euler", "width": w, "height": h}
    i = setup.inputs
    if workflow == "batch2":
        kw["batch"] = 2
    elif workflow == "img2img":
        kw.update(init_image=i["base"], strength=0.5)
    elif workflow == "inpaint":
        kw.update(init_image=i["base"], mask=i["mask"])
    elif workflow == "hires":
        kw.update(width=w // 2, height=h // 2, hires={"scale": 2, "steps": setup.hires_steps})
    elif workflow in ("lora", "lora_fused"):
        kw.update(loras=[i["lora"]], fuse_loras=workflow == "lora_fused")
    return kw


def uncompile(pipe) -> None:
    """The bench's own undo of pipe.compile() (there is no public one), so the next plan's cells run the eager
    path again: reference block forwards, no CUDA graphs, no compiled VAE decoder, empty dynamo caches."""
    from newbie.model import fused

    for block in pipe.dit.blocks():  # reference attention, two FFN GEMMs, uncompiled forward
        block.attention.backend = "auto"
        block.feed_forward.unfuse()
        block._compiled_call_impl = None
        block.__dict__.pop("_compiled_stash", None)  # a block fused.honour_hooks had set aside
    fused.use_cuda_graphs(pipe.dit, False)
    pipe.codec.vae.decoder._compiled_call_impl = None
    pipe.compiled, pipe.graphs = False, None
    torch._dynamo.reset()
    gc.collect()  # the CUDA graphs' memory pool goes with its last reference
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def where(tb) -> list[str]:
    """The innermost frames of a traceback, newbie's own first: file:line function."""
    frames = traceback.extract_tb(tb)
    ours = [f for f in frames if "/newbie/" in f.filename.replace("\\", "/")]
    pick = (ours[-3:] if ours else []) + frames[-1:]
    names = [
        f"{os.path.relpath(f.filename) if 'newbie' in f.filename else f.filename}:{f.lineno} {f.name}"
        for f in pick
    ]
    return list(dict.fromkeys(names))


def run_cell(pipe, setup: Setup, workflow: str, plan) -> dict:
    """One generate (or compile + generate) under the applied plan; the budget check comes after."""
    from newbie.errors import NewbieError
    from newbie.precision.guard import set_clamp

    w, h = cell_size(setup, workflow)
    cell = {
        "workflow": "txt2img" if workflow == "wide" else workflow,
        "size": f"{w}x{h}",
        "plan_name": plan.name,
        "ok": False,
        "peak_gib": None,
        "seconds": None,
        "error": "",
        "outcome": "failed",
        "traceback": False,
    }
    if pipe.embed_cache is not None:  # every cell runs its text stage (the cache would skip the encoders)
        pipe.embed_cache.memory.clear()
    if workflow == "fp16_overflow":
        set_clamp(pipe.dit, False)  # each cell has to trip the guard itself
    if setup.cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    try:
        kw = generate_kwargs(setup, "txt2img" if workflow in ("compile", "fp16_overflow") else workflow)
        limit = setup.compile_limit if workflow == "compile" else 0
        with time_limit(limit, CellTimeout, f"the cell ran past its {limit:g} s limit"):
            if workflow == "compile":
                cell["compile_s"] = round(pipe.compile(backend="inductor" if setup.cuda else "eager"), 2)
            gen = pipe.generate(setup.prompt, **kw)
        if setup.cuda:
            torch.cuda.synchronize()
            cell["peak_gib"] = round(torch.cuda.max_memory_allocated() / GIB, 3)
        cell["seconds"] = round(time.perf_counter() - t0, 3)
        cell["events"] = gen.guard_events
        problems = check_images(gen, kw.get("batch", 1), workflow)
        if pipe.plan is not None and pipe.plan.name != plan.name:
            problems.append(f"the run stepped down from plan '{plan.name}' to '{pipe.plan.name}'")
        cell.update(ok=not problems, outcome="image" if not problems else "failed", error="; ".join(problems))
    except NewbieError as e:  # a refusal: fine when it is one line
        msg = str(e)
        cell.update(
            seconds=round(time.perf_counter() - t0, 3),
            outcome="refused",
            error=msg.splitlines()[0],
            ok="\n" not in msg.strip(),
        )
    except Exception as e:  # noqa: BLE001 - a traceback is a result: record what and where
        cell.update(
            seconds=round(time.perf_counter() - t0, 3),
            traceback=True,
            error=f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"[:300],
            where=where(e.__traceback__),
        )
    finally:
        if workflow == "compile" and pipe.compiled:
            uncompile(pipe)
    return cell


def per_label(cell: dict, labels: list[tuple[str, float | None]]) -> list[dict]:
    """One measured run, recorded under every budget whose plan it is, each checked against its own budget."""
    out = []
    for label, budget in labels:
        c = {"workflow": cell["workflow"], "plan": label, **cell, "budget_gib": budget}
        if len(labels) > 1:
            c["same_run_as"] = [other for other, _ in labels if other != label]
        if (
            budget is not None
            and c["peak_gib"] is not None
            and c["peak_gib"] > budget
            and c["outcome"] == "image"
        ):
            over = f"peak {c['peak_gib']:.2f} GiB is over the {budget:g} GiB budget"
            c.update(ok=False, outcome="failed", error="; ".join(x for x in (c["error"], over) if x))
        out.append(c)
    return out


class CellTimeout(Exception):
    pass


def check_images(gen, batch: int, workflow: str) -> list[str]:
    out = []
    if len(gen.images) != batch:
        out.append(f"{len(gen.images)} images for a batch of {batch}")
    if not bool(torch.isfinite(gen.latents).all()):
        out.append("latents have NaN/Inf")
    for i, im in enumerate(gen.images):
        arr = np.asarray(im)
        if not np.isfinite(arr).all():
            out.append(f"image {i} has NaN/Inf")
        elif arr.max() < 2:
            out.append(f"image {i} is black")
    for r in gen.recipes:
        out += [w for w in r.warnings if "NaN/Inf" in w and "re-" not in w]  # unrecovered only
    if workflow == "fp16_overflow" and not any("fp16" in e for e in gen.guard_events):
        out.append("the injected overflow did not trip the fp16 guard")
    return out


# -- the matrix --


def load(setup: Setup, root, dtype: str, budget: float | None, size: tuple[int, int]):
    import newbie

    text_dtype = (
        None if dtype != "fp16" else ("bf16" if setup.cuda else "fp32")
    )  # the DiT's guard, not Gemma's
    return newbie.load(
        root, device=setup.device, dtype=dtype, text_dtype=text_dtype, vram=budget, plan_size=size
    )


def cells_by_plan(setup: Setup, workflows: list[str], sizes) -> list[tuple[object, dict[str, list]]]:
    """[(plan, {workflow: [(label, budget), ...]}), ...] in PLAN_ORDER, workflows in WORKFLOWS order. Budgets
    that resolve to the same plan (no budget and 24GB: resident) share one run per workflow."""
    groups: dict[str, tuple[object, dict]] = {}
    for wf in workflows:
        for label, budget in setup.labels:
            plan = plan_for_cell(setup, budget, *plan_size(setup, wf), sizes)
            groups.setdefault(plan.name, (plan, {}))[1].setdefault(wf, []).append((label, budget))
    return [groups[k] for k in sorted(groups, key=plan_rank)]


class Matrix:
    def __init__(self, setup: Setup, out: Path, meta: dict):
        self.setup, self.out, self.t0 = setup, out, time.perf_counter()
        self.res = {**meta, "plans": [], "cells": []}

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def save(self) -> None:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.res, indent=1))
        tmp.replace(self.out)  # after every cell: a run cut short keeps what it did

    def add(self, cell: dict) -> None:
        self.res["cells"].append(cell)
        self.save()
        mark = "ok " if cell["ok"] else "FAIL"
        print(
            f"[{self.elapsed():6.1f}s] {mark} {cell['workflow']:<13} {cell['plan']:<8} {cell['size']:<9} "
            f"{cell['plan_name']:<10} peak={cell['peak_gib']} s={cell['seconds']} {cell['error']}",
            flush=True,
        )

    def skip(self, cells: dict[str, list], plan, why: str, **extra) -> None:
        for wf, label, budget in ((wf, label, b) for wf, labels in cells.items() for label, b in labels):
            w, h = cell_size(self.setup, wf)
            self.add(
                {
                    "workflow": "txt2img" if wf == "wide" else wf,
                    "plan": label,
                    "size": f"{w}x{h}",
                    "plan_name": plan.name,
                    "ok": extra.get("ok", False),
                    "peak_gib": None,
                    "budget_gib": budget,
                    "seconds": None,
                    "error": why,
                    "outcome": extra.get("outcome", "not run"),
                    "traceback": extra.get("traceback", False),
                }
            )

    def run_pipeline(self, root, dtype: str, workflows: list[str], prepare=None) -> None:
        """One pipeline, loaded with the first group's budget, then pipe.apply_plan for each later group."""
        from newbie.errors import NewbieError

        s = self.setup
        groups = cells_by_plan(s, workflows, s.sizes)
        if not groups:
            return
        first_plan, first_cells = groups[0]
        # loaded as a user would: `--vram` of the first group (none for the resident one: no plan at all)
        first_wf, first_labels = next(iter(first_cells.items()))
        first_budget = (
            None
            if first_plan.name == "resident"
            else next((b for _, b in first_labels if b is not None), None)
        )
        t0 = time.perf_counter()
        try:
            pipe = load(
                s,
                root if not s.demo else None,
                dtype,
                None if s.demo else first_budget,
                plan_size(s, first_wf),
            )
        except Exception as e:  # noqa: BLE001
            for plan, cells in groups:
                self.skip(
                    cells,
                    plan,
                    f"load failed: {type(e).__name__}: {e}"[:300],
                    traceback=True,
                    outcome="failed",
                )
            return
        load_s = time.perf_counter() - t0
        if prepare:
            prepare(pipe)
        for plan, cells in groups:
            if self.elapsed() > s.deadline - (5 if s.demo else 40):
                self.skip(cells, plan, "not run: time limit")
                continue
            t0 = time.perf_counter()
            try:
                if (
                    s.demo
                    or (pipe.plan is None and plan.name != "resident")
                    or (pipe.plan is not None and pipe.plan.name != plan.name)
                ):
                    pipe.apply_plan(plan)
                row = {
                    "dtype": dtype,
                    "plan": plan.name,
                    "describe": plan.describe(),
                    "predicted_peak_gib": None if s.demo else round(plan.predicted_peak_gib, 2),
                    "apply_s": round(time.perf_counter() - t0, 2),
                    "staged": bool(pipe.residency and pipe.residency.staged),
                    "streamers": len(pipe.residency.streamers) if pipe.residency else 0,
                }
                if load_s is not None:
                    row["load_s"], load_s = round(load_s, 2), None
                self.res["plans"].append(row)
            except NewbieError as e:
                self.skip(
                    cells, plan, str(e).splitlines()[0], outcome="refused", ok="\n" not in str(e).strip()
                )
                continue
            except Exception as e:  # noqa: BLE001
                self.skip(
                    cells,
                    plan,
                    f"apply_plan failed: {type(e).__name__}: {e}"[:300],
                    traceback=True,
                    outcome="failed",
                )
                continue
            for wf, labels in cells.items():
                if self.elapsed() > s.deadline:
                    self.skip({wf: labels}, plan, "not run: time limit")
                    continue
                for cell in per_label(run_cell(pipe, s, wf, plan), labels):
                    self.add(cell)
        del pipe
        gc.collect()
        if s.cuda:
            torch.cuda.empty_cache()

    def run(self, root) -> dict:
        s = self.setup
        bf16 = [w for w in s.workflows if w != "fp16_overflow"]
        self.run_pipeline(root, "bf16" if s.cuda else "fp32", bf16)
        if "fp16_overflow" in s.workflows:
            self.run_pipeline(root, "fp16", ["fp16_overflow"], prepare=lambda p: inject_overflow(p.dit))
        cells = self.res["cells"]
        self.res["summary"] = {
            "cells": len(cells),
            "ok": sum(c["ok"] is True for c in cells),
            "refused": sum(c["outcome"] == "refused" for c in cells),
            "tracebacks": sum(c["traceback"] for c in cells),
            "not_run": sum(c["outcome"] == "not run" for c in cells),
            "seconds": round(self.elapsed(), 1),
        }
        self.save()
        return self.res


def setup_for(args) -> Setup:
    if args.demo:
        n = args.demo_size
        return Setup(
            device=args.device,
            demo=True,
            size=(n, n),
            wide=(n * 3 // 2, n),
            steps=args.steps,
            hires_steps=1,
            full_scale=1024 // n,
            deadline=args.deadline,
        )
    w, h = (int(v) for v in args.size.lower().split("x"))
    return Setup(
        device=args.device,
        demo=False,
        size=(w, h),
        wide=(w * 3 // 2 // 16 * 16, h),
        steps=args.steps,
        hires_steps=1,
        deadline=args.deadline,
    )


def prepare_demo(setup: Setup, folder: Path) -> None:
    import newbie
    from newbie.adapters import linear_shapes
    from newbie.memory.planner import ComponentSizes

    pipe = newbie.load(None, device=setup.device, dtype="fp32")
    setup.inputs = write_inputs(folder, setup.size, linear_shapes(pipe.dit), len(pipe.dit.layers))
    setup.sizes = ComponentSizes.of(pipe)


def prepare_full(setup: Setup, root: Path, meta: dict) -> None:
    from newbie.adapters import linear_shapes
    from newbie.config import DiTConfig
    from newbie.memory.planner import ComponentSizes

    setup.sizes = ComponentSizes()  # the planner's full-size defaults (measured off the real layout)
    if not (root / "vae" / "config.json").exists():
        from gpu_check import write_full_size

        t0 = time.perf_counter()
        meta["checkpoint"] = write_full_size(root)
        meta["checkpoint"]["write_s"] = round(time.perf_counter() - t0, 1)
    from newbie.loading.dit import config_from_json
    from newbie.model.dit import NextDiT

    cfg_file = root / "transformer" / "config.json"
    cfg = config_from_json(cfg_file, DiTConfig()) if cfg_file.is_file() else DiTConfig()
    with torch.device("meta"):  # the LoRA's shapes, without building the 3.5B transformer's weights
        dit = NextDiT(cfg)
    setup.inputs = write_inputs(
        root.parent / (root.name + "-inputs"), setup.size, linear_shapes(dit), len(dit.layers)
    )
    from gpu_check import long_xml_prompt

    setup.prompt = long_xml_prompt(60)


def main(argv=None) -> dict | None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--demo", action="store_true", help="the embedded demo model with scaled plans")
    ap.add_argument("--demo-size", type=int, default=64, help="demo mode: the main size (a multiple of 32)")
    ap.add_argument(
        "--workdir",
        default="/tmp/newbie-full",
        help="full mode: the checkpoint folder (written there by gpu_check's writer when missing)",
    )
    ap.add_argument(
        "--size", default="1024x1024", help="full mode: the main size (the wide row is 1.5x wider)"
    )
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--workflows", default=",".join(WORKFLOWS + ["fp16_overflow"]))
    ap.add_argument("--plans", default=",".join(label for label, _ in LABELS))
    ap.add_argument("--deadline", type=float, default=520.0, help="seconds after start; no cell starts later")
    ap.add_argument(
        "--compile-limit",
        type=float,
        default=None,
        help="seconds one compile cell may take (default: 75 on a GPU, none on the CPU)",
    )
    ap.add_argument("--out", help="JSON file (default bench/results/matrix-<device>-<date>.json)")
    ap.add_argument("--table", metavar="JSON", help="print the markdown table of a result file and exit")
    args = ap.parse_args(argv)
    if args.table:
        print(table(json.loads(Path(args.table).read_text())))
        return None
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("no CUDA GPU here: use --device cpu --demo")
    if (
        not args.demo
        and not args.device == "cuda"
        and not (Path(args.workdir) / "vae" / "config.json").is_file()
    ):
        ap.error("writing the full-size checkpoint needs a GPU: use --demo, or --workdir with a model folder")
    setup = setup_for(args)
    setup.compile_limit = (
        args.compile_limit if args.compile_limit is not None else (75.0 if setup.cuda else 0.0)
    )
    if not setup.cuda:
        torch.set_num_threads(
            1
        )  # the demo's matmuls are tiny: a second thread only spins (10x slower when busy)
    unknown = set(args.workflows.split(",")) - set(WORKFLOWS + ["fp16_overflow"])
    if unknown:
        ap.error(f"unknown workflow(s): {', '.join(sorted(unknown))}")
    setup.workflows = args.workflows.split(",")
    wanted = args.plans.split(",")
    setup.labels = [(label, b) for label, b in LABELS if label in wanted]
    name = (
        torch.cuda.get_device_name(0).replace("NVIDIA ", "").replace(" ", "-").lower()
        if setup.cuda
        else "cpu-demo"
    )
    meta = {
        "device": torch.cuda.get_device_name(0) if setup.cuda else "cpu",
        "torch": torch.__version__,
        "date": date.today().isoformat(),
        "mode": "demo" if setup.demo else "full-size random weights",
        "size": "x".join(map(str, setup.size)),
        "wide": "x".join(map(str, setup.wide)),
        "steps": setup.steps,
        "hires": f"{setup.size[0] // 2}x{setup.size[1] // 2} x2, {setup.hires_steps} step",
        "sampler": "euler",
        "note": (
            "demo: each budget's full-size plan scaled to the demo model's depth; CPU, so no peak memory"
            if setup.demo
            else "random weights at the real shapes: seams, memory and numerics, not quality"
        ),
    }
    out = Path(args.out or HERE / "results" / f"matrix-{name}-{meta['date']}.json")
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        if setup.demo:
            prepare_demo(setup, Path(tmp))
            root = None
        else:
            root = Path(args.workdir)
            prepare_full(setup, root, meta)
        meta["inputs"] = {k: os.path.basename(v) for k, v in setup.inputs.items()}
        res = Matrix(setup, out, meta).run(root)
    print(json.dumps(res["summary"]))
    print(table(res))
    return res


def table(res: dict) -> str:
    """Rows: workflow (and size where it is not the main one); columns: the budgets. A cell: peak GiB and
    seconds, 'refused', or the failure."""
    labels = list(dict.fromkeys(c["plan"] for c in res["cells"]))
    rows: dict[tuple[str, str], dict[str, dict]] = {}
    for c in res["cells"]:
        rows.setdefault((c["workflow"], c["size"]), {})[c["plan"]] = c
    head = (
        "| workflow | "
        + " | ".join(
            f"{label} ({next(c['plan_name'] for c in res['cells'] if c['plan'] == label)})"
            for label in labels
        )
        + " |"
    )
    lines = [head, "|" + "---|" * (len(labels) + 1)]
    for (wf, size), by in rows.items():
        name = wf if size == res["size"] else f"{wf} {size}"
        lines.append(f"| {name} | " + " | ".join(_cell_text(by.get(label)) for label in labels) + " |")
    return "\n".join(lines)


def _cell_text(c: dict | None) -> str:
    if c is None:
        return ""
    if c["outcome"] == "not run":
        return "not run"
    if c["outcome"] == "refused":
        return f"refused{'' if c['ok'] else ' (not one line)'}: {c['error']}"
    if not c["ok"]:
        where = f" ({c['where'][0]})" if c.get("where") else ""
        return f"**FAIL** {c['error']}{where}".replace("|", "/")
    peak = f"{c['peak_gib']:.2f} GiB, " if c["peak_gib"] is not None else ""
    return f"ok {peak}{c['seconds']:.1f} s"


if __name__ == "__main__":
    main()
