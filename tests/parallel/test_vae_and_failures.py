"""The banded VAE decode equals the whole decode (2 and 3 ranks, uneven bands, a batch); a rank that is
killed, fails or refuses its input ends the whole group at once with one line."""

import os
import signal
import time

import pytest
import torch

from newbie.demo.model import PACKAGED
from newbie.errors import NewbieError
from newbie.loading.vae import load_vae
from newbie.model.vae import LatentCodec
from newbie.parallel.launch import GroupFailed, Placement, run_group
from newbie.parallel.sequence import SequenceGroup
from newbie.parallel.vae import BandCodec


@torch.no_grad()
def _decode(rank, world, device, shape):
    codec = LatentCodec(*load_vae(PACKAGED / "vae"))  # the demo model's VAE: trained weights, fp32
    z = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    band = BandCodec(codec, SequenceGroup(None, rank, world)).decode(z)
    return float((codec.decode(z) - band).abs().max()), tuple(band.shape)


@pytest.mark.parametrize("world, shape", [(2, (1, 16, 16, 16)), (3, (2, 16, 7, 5))])
def test_banded_decode_equals_the_whole_decode(world, shape):
    res = run_group(_decode, (shape,), Placement.for_world(world, "cpu"), timeout_s=120)
    for diff, out_shape in res.values():
        assert out_shape == (shape[0], 3, 8 * shape[2], 8 * shape[3])
        assert diff < 1e-4  # float rounding only; pixel levels are 1/255


def _killed_mid_run(rank, world, device):
    import torch.distributed as dist

    x = torch.ones(4)
    for step in range(1000):
        if rank == 1 and step == 3:
            os.kill(os.getpid(), signal.SIGKILL)
        dist.all_reduce(x)  # rank 0 waits here for a peer that is gone
        time.sleep(0.01)
    return "unreachable"


def _fails(rank, world, device):
    import torch.distributed as dist

    if rank == 1:
        raise ValueError("boom\nsecond line")
    dist.barrier()  # rank 0 would wait forever


def _refuses(rank, world, device):
    if rank == 0:
        raise NewbieError("bad prompt")
    time.sleep(600)


def test_a_killed_rank_ends_the_group_without_hanging():
    t0 = time.monotonic()
    with pytest.raises(GroupFailed, match="^rank 1 of 2 was killed by SIGKILL; all processes were stopped$"):
        run_group(_killed_mid_run, (), Placement.for_world(2, "cpu"), timeout_s=300)
    assert time.monotonic() - t0 < 60  # not the collective timeout


def test_a_failing_rank_is_one_line_and_stops_the_others():
    t0 = time.monotonic()
    with pytest.raises(
        GroupFailed, match="^rank 1 of 2 failed: ValueError: boom; all processes were stopped$"
    ):
        run_group(_fails, (), Placement.for_world(2, "cpu"), timeout_s=300)
    with pytest.raises(NewbieError, match="^bad prompt$"):
        run_group(_refuses, (), Placement.for_world(2, "cpu"), timeout_s=300)
    assert time.monotonic() - t0 < 60


def _killed_mid_image(rank, world, device, model_dir):
    import newbie
    from newbie.parallel.mesh import Layout, build_mesh
    from newbie.parallel.runner import configure, run

    mesh = build_mesh(Layout(sp=2))
    pipe = newbie.load(model_dir, device="cpu", dtype="fp32")
    configure(pipe, mesh)
    if rank == 1:  # dies inside its second DiT forward, while rank 0 waits in an all-to-all
        forward, calls = pipe.dit.forward, []

        def dying(*a, **k):
            calls.append(1)
            if len(calls) == 2:
                os.kill(os.getpid(), signal.SIGKILL)
            return forward(*a, **k)

        pipe.dit.forward = dying
    return run(pipe, pipe.request("1girl", seed=1, steps=4, width=64, height=48), mesh)


def test_a_rank_killed_mid_image_ends_the_group(tiny_model_dir):
    t0 = time.monotonic()
    with pytest.raises(GroupFailed, match="^rank 1 of 2 was killed by SIGKILL"):
        run_group(_killed_mid_image, (str(tiny_model_dir),), Placement.for_world(2, "cpu"), timeout_s=300)
    assert time.monotonic() - t0 < 60
