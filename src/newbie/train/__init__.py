"""LoRA training on the inference engine's own model (`newbie train lora`, docs/training.md).

One file per idea: dataset.py (folder scan, captions, aspect buckets), cache.py (text and VAE encodings, computed
once), objective.py (flow matching, spec §4.1), lora.py (trainable low-rank layers), recompute.py (gradient
checkpointing), checkpoint.py (atomic resumable state), lorafile.py (the LoRA file and its metadata),
samples.py (sample images, loss curve), loop.py (the loop that ties them together).
"""
