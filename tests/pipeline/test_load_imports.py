"""The load and generate path is ours end to end: no transformers, diffusers or accelerate import, and no
torch._dynamo (issue 23: their imports were the critical path of a fresh load; an nn.Embedding built on meta
imports torch._dynamo through normal_)."""

import subprocess
import sys

SCRIPT = """
import sys
import torch
import newbie
pipe = newbie.load("demo")
pipe.generate("<character_1> <n>$a$</n> <appearance>red_hair</appearance> </character_1>", seed=1, steps=2,
              negative="blurry", batch=2)
pipe.codec.encode(pipe.codec.decode(torch.zeros(1, 16, 4, 4)))
heavy = [m for m in ("transformers", "diffusers", "accelerate", "torchao", "sentencepiece", "torch._dynamo")
         if m in sys.modules]
print("HEAVY", heavy)
"""


def test_load_generate_encode_decode_import_no_model_library():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "HEAVY []" in out.stdout, out.stdout
