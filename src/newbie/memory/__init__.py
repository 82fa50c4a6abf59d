"""Fitting the pipeline into a VRAM budget: the planner, weight residency, offload/streaming, quantization."""
