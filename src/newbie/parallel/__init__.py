"""Several GPUs for one image: CFG-parallel (cfg_parallel.py), Ulysses sequence parallelism of the DiT
(sequence.py) and the banded VAE decode (vae.py), composed on a cfg x sp mesh (mesh.py), started by
`newbie generate/serve --parallel` (preflight.py, launch.py, runner.py; the doors' glue is newbie.cli.parallel
and newbie.serve.parallel; docs/parallel.md). Replicas across GPUs are newbie.serve's job."""
