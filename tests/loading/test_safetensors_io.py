"""Damaged or hostile weight files are one-line CheckpointErrors (exit 2), never a crash (exit 1): a header
that is not an object or lacks data_offsets, a shard index naming a file outside the model folder, integer
tensors where the model has float weights (issue 27)."""

import json
import os
import struct

import pytest
import torch
from safetensors.torch import save_file

from newbie.errors import BAD_INPUT, CheckpointError, describe
from newbie.loading.safetensors_io import read_header, weight_files
from newbie.loading.strict import check_keys


def _raw(path, header) -> None:
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"\0" * 64)


@pytest.mark.parametrize(
    "header",
    [
        [1, 2],
        {"w": {"dtype": "F32", "shape": [4]}},
        {"w": {"dtype": "F32", "shape": [4], "data_offsets": "0-16"}},
        {"w": ["F32"]},
    ],
    ids=["list-header", "no-data-offsets", "string-offsets", "entry-not-object"],
)
def test_a_malformed_header_is_a_checkpoint_error(tmp_path, header):
    path = tmp_path / "bad.safetensors"
    _raw(path, header)
    with pytest.raises(CheckpointError, match="damaged safetensors") as e:
        read_header(path)
    assert describe(e.value)[1] == BAD_INPUT


def test_a_shard_index_cannot_reach_outside_the_model_folder(tmp_path):
    folder, outside = tmp_path / "model" / "transformer", tmp_path / "x.safetensors"
    folder.mkdir(parents=True)
    save_file({"w": torch.zeros(2)}, outside)
    index = folder / "diffusion_pytorch_model.safetensors.index.json"
    for name in ("../../x.safetensors", str(outside)):
        index.write_text(json.dumps({"weight_map": {"w": name}}))
        with pytest.raises(CheckpointError, match="outside the model folder"):
            weight_files(folder)
    os.symlink(outside, folder / "shard-1.safetensors")
    index.write_text(json.dumps({"weight_map": {"w": "shard-1.safetensors"}}))
    with pytest.raises(CheckpointError, match="outside the model folder"):
        weight_files(folder)
    save_file({"w": torch.zeros(2)}, folder / "shard-2.safetensors")
    index.write_text(json.dumps({"weight_map": {"w": "shard-2.safetensors"}}))
    assert weight_files(folder) == [folder / "shard-2.safetensors"]


def test_integer_weights_are_a_checkpoint_error():
    model = torch.nn.Linear(2, 2)
    with pytest.raises(CheckpointError, match="non-float weights: weight"):
        check_keys(model, {"weight": torch.zeros(2, 2, dtype=torch.int32), "bias": torch.zeros(2)}, "f", "x")
    check_keys(model, {"weight": torch.zeros(2, 2), "bias": torch.zeros(2)}, "f", "x")
