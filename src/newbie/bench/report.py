"""The precision study's files: report.md (the table), report.json (rows, per-image records, meta),
contact-sheet.png and, when matplotlib is installed, time-memory.png."""

from __future__ import annotations

import json
import math
from pathlib import Path

from newbie.bench.charts import have_matplotlib, time_memory_chart
from newbie.bench.contact_sheet import contact_sheet
from newbie.bench.study import REFERENCE, StudyResult

REPORT_MD, REPORT_JSON, SHEET_PNG, CHART_PNG = (
    "report.md",
    "report.json",
    "contact-sheet.png",
    "time-memory.png",
)


def json_safe(obj):
    """JSON has no inf/NaN: write them as null (the rows say `identical` where PSNR is infinite)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def _num(v, fmt: str) -> str:
    return "n/a" if v is None else format(v, fmt)


def _psnr(row: dict) -> str:
    if row["reference"]:
        return "reference"
    if row["identical"]:
        return "identical"
    return f"{row['psnr']:.2f} (worst {row['psnr_min']:.2f})"


def _guard(row: dict) -> str:
    if row["guard_intervened"] is None:
        return "n/a"
    return f"yes ({len(row['guard_events'])} kinds)" if row["guard_intervened"] else "no"


def table_lines(result: StudyResult) -> list[str]:
    """The Markdown table, then the dtypes that could not be measured and why."""
    lines = [
        "| dtype | compute DiT / text | peak GiB | s/step | s/image | PSNR dB vs fp32 | SSIM | max px err | "
        "NaN/Inf | black | fp16 guard |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result.rows:
        if not r["available"]:
            continue
        c = r["compute"]
        quant = f" + {c['quant']}" if c.get("quant") else ""  # quantized weights (DiT, Gemma)
        lines.append(
            f"| {r['dtype']} | {c['dit']} / {c['text']}{quant} | {_num(r['peak_gib'], '.3g')} "
            f"| {r['s_per_step']:.3f} | {r['s_per_image']:.2f} | {_psnr(r)} | {_num(r['ssim'], '.4f')} "
            f"| {_num(r['max_pixel_error'], '.0f')} | "
            f"{r['nan_count']} | {r['black_images']}/{r['images']} | {_guard(r)} |"
        )
    missing = [r for r in result.rows if not r["available"]]
    if missing:
        lines += ["", "Not measured:"] + [f"- {r['dtype']}: {r['reason']}" for r in missing]
    return lines


def markdown(result: StudyResult, chart_note: str) -> str:
    m = result.meta
    lines = [
        f"# Precision study: {m['model']} ({m['spec']}) on {m['device']}",
        "",
        f"{m['date']}, newbie {m['newbie']}, torch {m['torch']}. {m['width']}x{m['height']}, {m['steps']} "
        f"{m['sampler']} steps, CFG {m['cfg']}, {len(m['prompts'])} prompts x {len(m['seeds'])} seeds "
        f"({', '.join(map(str, m['seeds']))}). Text encoders: {m['text_dtype']}; VAE: {m['vae_dtype']}.",
        "",
    ]
    if m.get("note"):
        lines += [f"**{m['note']}**", ""]
    if m.get("study_wall_s") is not None:
        lines += [f"The study took {m['study_wall_s']:.0f} s ({m['study_cpu_s']:.0f} s of CPU time).", ""]
    if m.get("load_average_1min") is not None:
        lines += [
            f"The CPU's 1-minute load average was {m['load_average_1min']:.1f} when the study started "
            f"(other work on the machine slows every timing).",
            "",
        ]
    lines += table_lines(result)
    lines += [
        "",
        "How to read it:",
        f"- peak GiB: {m['memory_method']}.",
        f"- s/step: denoising time / steps; s/image: the whole generate call (text encoding, denoising, VAE "
        f"decode). Means over the images, after a {m['warmup_steps']}-step warm-up generation per dtype.",
        "- PSNR pools the squared error of all images against the fp32 image of the same prompt and seed "
        "(worst: the lowest single image). SSIM: mean over images and RGB channels "
        "(Gaussian 11x11, sigma 1.5). "
        "max px err: the largest difference of any pixel channel, 0..255.",
        "- NaN/Inf: non-finite values in the final latents; "
        "black: images whose brightest pixel is below 2/255; "
        "fp16 guard: whether the pipeline's fp16 guard had to intervene (n/a: this build has none).",
    ]
    for r in result.rows:
        extra = r.get("guard_events", []) + r.get("warnings", [])
        if r["available"] and extra:
            lines.append(f"- {r['dtype']} reported: {'; '.join(extra)}")
    lines += [
        "",
        f"![contact sheet]({SHEET_PNG})",
        "",
        "Contact sheet: one row per prompt and seed, one column per dtype, then |dtype - fp32| heat maps.",
        "",
    ]
    lines += [
        f"![time and memory]({CHART_PNG})" if not chart_note else f"Time/memory chart: {chart_note}",
        "",
    ]
    lines += ["Prompts:", ""] + [f"{i + 1}. `{p}`" for i, p in enumerate(m["prompts"])]
    return "\n".join(lines) + "\n"


def write_report(result: StudyResult, out_dir: Path, cell: int = 256) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    dtypes = [r["dtype"] for r in result.rows if r["available"]]
    written.append(
        contact_sheet(
            result.pictures,
            dtypes,
            len(result.meta["prompts"]),
            result.meta["seeds"],
            out_dir / SHEET_PNG,
            REFERENCE,
            cell,
        )
    )
    chart_note = ""
    if have_matplotlib():
        label = (
            "peak GiB (CUDA allocated)"
            if result.meta["device_type"] == "cuda"
            else "peak RSS growth GiB (CPU)"
        )
        written.append(time_memory_chart(result.rows, out_dir / CHART_PNG, label))
    else:
        chart_note = "skipped, matplotlib is not installed (pip install -r requirements-extras.txt)"
    (out_dir / REPORT_JSON).write_text(json.dumps(json_safe(result.as_json()), indent=1) + "\n")
    (out_dir / REPORT_MD).write_text(markdown(result, chart_note))
    return [out_dir / REPORT_MD, out_dir / REPORT_JSON] + written
