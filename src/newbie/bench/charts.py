"""matplotlib charts: the precision study's time and memory bars, and the trace's per-layer absmax.

matplotlib is an optional dependency (requirements-extras.txt); `have_matplotlib()` lets callers skip a chart
and say so instead of failing a long run at the very end.
"""

from __future__ import annotations

import re
from pathlib import Path

FP16_MAX = 65504.0
BLOCK = re.compile(
    r"^((?:context_refiner|noise_refiner|layers)\.\d+)(?:\.(attention\.logits|attention|feed_forward))?$"
)
ROLES = {
    None: "block output",
    "attention": "attention output",
    "attention.logits": "attention logits (q.k/sqrt d)",
    "feed_forward": "FFN output",
}


def have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    return plt


def time_memory_chart(rows: list[dict], path: Path, memory_label: str) -> Path:
    """Two panels per dtype: seconds per image (encode / denoise / decode stacked) and peak memory."""
    plt = _pyplot()
    rows = [r for r in rows if r.get("available")]
    names = [r["dtype"] for r in rows]
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(10, 4))
    bottom = [0.0] * len(rows)
    for part, colour in (("encode_s", "#8da0cb"), ("denoise_s", "#fc8d62"), ("decode_s", "#66c2a5")):
        vals = [r["timings"].get(part, 0.0) for r in rows]
        ax_t.bar(names, vals, bottom=bottom, color=colour, label=part.removesuffix("_s"))
        bottom = [b + v for b, v in zip(bottom, vals)]
    for i, r in enumerate(rows):
        ax_t.text(i, bottom[i], f"{r['s_per_image']:.2f}s", ha="center", va="bottom", fontsize=8)
    ax_t.set_ylabel("seconds per image")
    ax_t.set_title("time (mean over images)")
    ax_t.legend(fontsize=8)
    peaks = [r["peak_gib"] if r["peak_gib"] is not None else 0.0 for r in rows]
    ax_m.bar(names, peaks, color="#a6d854")
    for i, r in enumerate(rows):
        label = f"{r['peak_gib']:.2f}" if r["peak_gib"] is not None else "n/a"
        ax_m.text(i, peaks[i], label, ha="center", va="bottom", fontsize=8)
    ax_m.set_ylabel("GiB")
    ax_m.set_title(memory_label, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _block_series(rows: list[dict]) -> tuple[list[str], dict[str, dict[str, dict]]]:
    """Blocks in execution order and, per role, {block: row}."""
    blocks: list[str] = []
    series: dict[str, dict[str, dict]] = {}
    for r in rows:
        m = BLOCK.match(r["module"])
        if not m:
            continue
        block, role = m.group(1), m.group(2)
        if block not in blocks:
            blocks.append(block)
        series.setdefault(ROLES[role], {})[block] = r
    return blocks, series


def absmax_chart(rows: list[dict], path: Path, title: str) -> Path:
    """One panel per traced step (and sampling pass): absmax per block (block output, attention output,
    attention logits, FFN output) on a log scale, the fp16 limit drawn; red crosses where values went beyond
    it. A step without DiT blocks (the text encoders, a narrow --match) is drawn per module, in execution
    order."""
    plt = _pyplot()
    keys = sorted({(r.get("pass", 1), r["step"]) for r in rows})
    fig, axes = plt.subplots(len(keys), 1, figsize=(12, 3.2 * len(keys)), squeeze=False)
    for ax, (run, step) in zip(axes[:, 0], keys):
        step_rows = [r for r in rows if (r.get("pass", 1), r["step"]) == (run, step)]
        blocks, series = _block_series(step_rows)
        if blocks:
            for label, by_block in series.items():
                xs = [i for i, b in enumerate(blocks) if b in by_block]
                ax.plot(xs, [by_block[blocks[i]]["absmax"] or 0.0 for i in xs], marker=".", label=label)
                _mark_overflow(ax, xs, [by_block[blocks[i]] for i in xs])
            ax.set_xticks(range(len(blocks)))
            ax.set_xticklabels(blocks, rotation=90, fontsize=6)
        else:
            outs = [r for r in step_rows if r["kind"] == "output"]
            xs = list(range(len(outs)))
            ax.plot(xs, [r["absmax"] or 0.0 for r in outs], marker=".", linewidth=0.8, label="module output")
            _mark_overflow(ax, xs, outs)
            ax.set_xlabel("module (execution order)")
        ax.axhline(FP16_MAX, color="red", linestyle="--", linewidth=1, label="fp16 max 65504")
        ax.set_yscale("log", nonpositive="mask")
        ax.set_ylabel("absmax")
        where = f"step {step}" + (f" (pass {run})" if run > 1 else "") if step else "text encoders"
        ax.set_title(f"{title} - {where}", fontsize=9)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))  # outside: never over the data
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _mark_overflow(ax, xs: list[int], rows: list[dict]) -> None:
    bad = [x for x, r in zip(xs, rows) if r["frac_over_fp16"] > 0 or r["nan_count"] > 0]
    if bad:
        ax.scatter(bad, [FP16_MAX] * len(bad), marker="x", color="red", zorder=5)
