"""Several GPUs for one image: CFG-parallel (cfg_parallel.py). Replicas across GPUs are newbie.serve's job."""
