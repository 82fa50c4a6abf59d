"""The training folder: captions, kohya repeat folders, buckets, and one clear line for each kind of bad data
(exit 2, the file named, nothing written)."""

import pytest
import torch
from PIL import Image

from newbie.cli.main import main
from newbie.train.dataset import DataError, bucket_for, epoch_order, make_buckets, scan, tag_frequency, tags


def image(path, size=(64, 64), colour=(200, 40, 40)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


def test_scan_reads_captions_and_repeat_folders(tmp_path):
    image(tmp_path / "a.png")
    (tmp_path / "a.txt").write_text("1girl, red_hair\n")
    image(tmp_path / "3_style" / "b.jpg", (96, 64))
    (tmp_path / "3_style" / "b.xml").write_text("<general_tags> <count>1girl</count> </general_tags>")
    image(tmp_path / "0_skip" / "c.png")
    (tmp_path / "0_skip" / "c.txt").write_text("x")
    items = scan(tmp_path)
    assert [(it.image.name, it.repeats, it.folder) for it in items] == [
        ("b.jpg", 3, "3_style"),
        ("a.png", 1, "."),
    ]
    assert items[1].caption == "1girl, red_hair" and items[0].size == (96, 64)
    assert tags("<count>1girl, 2boys</count> <n>x</n>") == ["1girl", "2boys", "x"]
    assert tag_frequency(items) == {"3_style": {"1girl": 1}, ".": {"1girl": 1, "red_hair": 1}}


def test_buckets_keep_area_and_aspect():
    buckets = make_buckets(1024, 4.0, 64)
    assert (1024, 1024) in buckets and (2048, 512) in buckets and (512, 2048) in buckets
    assert all(w * h <= 1024 * 1024 and w % 64 == 0 and h % 64 == 0 for w, h in buckets)
    assert bucket_for((1536, 1024), buckets) in {(1216, 832), (1280, 768), (1152, 896)}
    assert make_buckets(128, 1.0, 16) == [(128, 128)]


def test_epoch_order_is_deterministic_and_single_bucket():
    sizes = [(64, 64), (64, 128), (64, 64), (64, 128), (64, 64)]
    a = epoch_order([1, 2, 1, 1, 1], sizes, 2, torch.Generator().manual_seed(3))
    b = epoch_order([1, 2, 1, 1, 1], sizes, 2, torch.Generator().manual_seed(3))
    assert a == b and sorted(i for batch in a for i in batch) == [0, 1, 1, 2, 3, 4]
    assert all(len({sizes[i] for i in batch}) == 1 for batch in a)


@pytest.mark.parametrize(
    "problem, expect",
    [
        ("unreadable", "bad.png: unreadable image"),
        ("empty", "bad.txt: empty caption"),
        ("missing", "nowhere: no such folder"),
        ("tiny", "bad.png: 8x8 cannot be trained on"),
        ("nocaption", "bad.png: no caption"),
    ],
)
def test_bad_data_is_one_line_naming_the_file(tmp_path, capsys, problem, expect):
    data = tmp_path / "data"
    image(data / "good.png")
    (data / "good.txt").write_text("1girl")
    if problem == "unreadable":
        (data / "bad.png").write_bytes(b"not a png")
        (data / "bad.txt").write_text("1girl")
    elif problem == "empty":
        image(data / "bad.png")
        (data / "bad.txt").write_text("  \n")
    elif problem == "tiny":
        image(data / "bad.png", (8, 8))
        (data / "bad.txt").write_text("1girl")
    elif problem == "nocaption":
        image(data / "bad.png")
    target = tmp_path / "nowhere" if problem == "missing" else data
    out = tmp_path / "out" / "x.safetensors"
    assert main(["train", "lora", str(target), "--out", str(out), "--device", "cpu", "--steps", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expect in err[0] and err[0].startswith("error: ")
    assert not out.parent.exists()
    with pytest.raises(DataError):
        scan(target)
