"""Jina check for a CUDA machine (not collected by pytest): our text tower against transformers'
JinaEmbeddingsV3Model at Jina CLIP v2's real widths (random weights), on the GPU.

1. bf16 and fp32, a padded batch (a 300-token prompt beside the 2-token empty negative) and an unpadded one:
   are the last hidden states of the valid tokens equal to the bit? (max abs error otherwise)
2. bf16: the time of one forward of each (CUDA events, after warm-up).
3. A fresh process: seconds to import what builds each model (ours: newbie.model.jina; theirs: transformers'
   JinaEmbeddingsV3Model) and to build it on meta.

    PYTHONPATH=src python3 tests/model/jina_device_check.py      # one JSON line per check
"""

import json
import subprocess
import sys

import torch

from newbie.model.jina import JinaConfig, JinaTextModel


def pair(dtype):
    from transformers import JinaEmbeddingsV3Config, JinaEmbeddingsV3Model

    torch.manual_seed(0)
    hf_cfg = JinaEmbeddingsV3Config()
    hf_cfg._attn_implementation = "sdpa"
    with torch.device("cuda"):
        theirs = JinaEmbeddingsV3Model(hf_cfg, add_pooling_layer=False).eval()
    with torch.device("meta"):
        ours = JinaTextModel(JinaConfig()).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True, assign=True)
    return theirs.to("cuda", dtype), ours.to("cuda", dtype)


def batch(padded: bool):
    g = torch.Generator(device="cuda").manual_seed(1)
    ids = torch.randint(3, 250000, (2, 300), device="cuda", generator=g)
    mask = torch.ones_like(ids)
    if padded:
        mask[1, 2:] = 0
        ids[1, 2:] = 1
    return ids, mask


def cuda_ms(fn, reps: int = 20) -> float:
    for _ in range(3):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    for _ in range(reps):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / reps


@torch.no_grad()
def parity_and_speed(dtype) -> None:
    theirs, ours = pair(dtype)
    for padded in (True, False):
        ids, mask = batch(padded)
        want = theirs(input_ids=ids, attention_mask=mask).last_hidden_state
        got = ours(ids, mask)
        valid = mask.bool()
        row = {
            "check": "parity",
            "dtype": str(dtype),
            "padded": padded,
            "equal": bool(torch.equal(got[valid], want[valid])),
            "max_abs_err": float((got[valid].float() - want[valid].float()).abs().max()),
        }
        if dtype == torch.bfloat16:
            row["ours_ms"] = cuda_ms(lambda: ours(ids, mask))  # noqa: B023
            row["theirs_ms"] = cuda_ms(lambda: theirs(input_ids=ids, attention_mask=mask))  # noqa: B023
        print(json.dumps(row), flush=True)


BUILD = {
    "ours": "from newbie.model.jina import JinaConfig as C, JinaTextModel as M\nmake = lambda: M(C())\n",
    "theirs": (
        "from newbie.quiet_imports import import_model_libraries\nimport_model_libraries()\n"
        "from transformers import JinaEmbeddingsV3Config as C, JinaEmbeddingsV3Model as M\n"
        "make = lambda: M(C(), add_pooling_layer=False)\n"
    ),
}


def fresh_process_build() -> None:
    for name, code in BUILD.items():
        script = (
            "import time\nt0 = time.perf_counter()\nimport torch\nt1 = time.perf_counter()\n"
            + code
            + "t2 = time.perf_counter()\nwith torch.device('meta'):\n    make()\nt3 = time.perf_counter()\n"
            "print(f'{t1 - t0} {t2 - t1} {t3 - t2}')\n"
        )
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
        torch_s, import_s, build_s = map(float, out.stdout.split())
        print(
            json.dumps(
                {"check": "fresh_process", "model": name, "torch_import_s": torch_s, "import_s": import_s}
                | {"meta_build_s": build_s}
            ),
            flush=True,
        )


if __name__ == "__main__":
    print(json.dumps({"device": torch.cuda.get_device_name(0), "torch": torch.__version__}), flush=True)
    for dtype in (torch.bfloat16, torch.float32):
        parity_and_speed(dtype)
        torch.cuda.empty_cache()
    fresh_process_build()
