"""CFG-parallel on 2 CPU processes (gloo): both ranks end with the same latents, equal bit for bit to the
one-process reference that runs the two branches one after the other, and to the normal pipeline within
fp32 tolerance (atol 1e-5 on the latents, at most one 8-bit level on the image)."""

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import newbie
from newbie.parallel import cfg_parallel

PROMPT = "1girl, red_hair, smile"
SETTINGS = dict(seed=3, steps=4, cfg=4.0, cfg_trunc=0.6, width=64, height=48, sampler="euler")


def _rank(rank: int, model_dir: str, rendezvous: str, out: str) -> None:
    torch.set_num_threads(1)  # the same reduction order in every process (and no OpenMP pool after fork)
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=2)
    try:
        pipe = newbie.load(model_dir, device="cpu", dtype="fp32")
        # rank 1 asks for another seed: the request (seed included) must come from rank 0
        req = pipe.request(PROMPT, **{**SETTINGS, "seed": SETTINGS["seed"] + rank})
        steps = []
        branches = cfg_parallel.Branches(dist.get_rank())  # the default group of two
        shared, latents, _ = cfg_parallel.sample(
            pipe, req, branches, progress=lambda d: steps.append(d["step"])
        )
        result = {"latents": latents, "steps": steps, "seed": shared.seeds[0]}
        if rank == 0:
            local = cfg_parallel.generate(
                pipe, pipe.request(PROMPT, **SETTINGS)
            )  # both branches, one process
            normal = pipe.generate(PROMPT, **SETTINGS)
            result.update(
                local_latents=local.latents,
                local_image=torch.tensor(list(local.images[0].getdata())),
                normal_latents=normal.latents,
                normal_image=torch.tensor(list(normal.images[0].getdata())),
                local_seed=local.recipes[0].seed,
            )
        torch.save(result, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_ranks_make_the_single_process_image(tiny_model_dir, tmp_path):
    # fork: the children reuse this process's imports (a spawned child spends ~15 s importing transformers)
    mp.start_processes(
        _rank,
        args=(str(tiny_model_dir), str(tmp_path / "rdzv"), str(tmp_path)),
        nprocs=2,
        join=True,
        start_method="fork",
    )
    r0, r1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert r0["seed"] == r1["seed"] == r0["local_seed"] == SETTINGS["seed"]
    assert r0["steps"] == [1, 2, 3, 4] and r1["steps"] == []  # progress is reported once, by rank 0
    assert torch.equal(r0["latents"], r1["latents"])  # the two ranks never drift apart
    assert torch.equal(r0["latents"], r0["local_latents"])  # = one process running both branches
    # the normal pipeline (its own CFG batching): fp32 tolerance
    assert torch.allclose(r0["latents"], r0["normal_latents"], atol=1e-5, rtol=0)
    assert (r0["local_image"] - r0["normal_image"]).abs().max() <= 1
