"""Adapters in recipes: what was applied (file, hashes, strength, kind), and how `--from` applies it again."""

from __future__ import annotations

import hashlib
from pathlib import Path

from newbie.adapters.files import locate
from newbie.adapters.stack import parse_lora
from newbie.errors import NewbieError
from newbie.loading.hashing import file_sha256


def recipe_fields(req) -> dict:
    if not req.loras:
        return {}
    return {
        "loras": [
            {
                "path": str(a.adapter.path),
                "name": a.adapter.name,
                "sha256": a.adapter.sha256,
                "config_sha256": a.adapter.config_sha256,
                "strength": a.strength,
                "kind": a.adapter.kind,
            }
            for a in req.loras
        ],
        "fuse_loras": req.fuse_loras,  # fusing rounds differently in bf16, so it is part of the recipe
    }


def remake_kwargs(recipe, loras=None) -> dict:
    """generate() arguments for the recipe's adapters. `loras` (paths) replace recorded paths whose files
    moved: they are matched to the recipe by file hash, and the strengths always come from the recipe."""
    if not recipe.loras:
        return {}
    given: dict[str, str] = {}
    for item in loras or []:
        path = parse_lora(item)[0] if isinstance(item, (str, Path)) else item[0]
        given[file_sha256(locate(path)[0])] = str(path)
    unmatched = [p for sha, p in given.items() if sha not in {r["sha256"] for r in recipe.loras}]
    out = []
    for rec in recipe.loras:
        path = given.get(rec["sha256"], rec["path"])
        try:
            weights, config = locate(path)
        except NewbieError:
            if unmatched:
                raise NewbieError(
                    f"{unmatched[0]}: this adapter file differs from the recipe's "
                    f"'{rec.get('name', path)}' (sha256 {rec['sha256'][:12]})"
                ) from None
            raise NewbieError(
                f"the recipe's adapter '{rec.get('name', path)}' is not at {path}; give it with --lora PATH"
            ) from None
        sha = file_sha256(weights)
        if sha != rec["sha256"]:
            raise NewbieError(
                f"{weights}: this adapter file differs from the recipe's (sha256 {sha[:12]} != "
                f"{rec['sha256'][:12]}); give the original with --lora PATH"
            )
        config_sha = hashlib.sha256(config.read_bytes()).hexdigest() if config else ""
        if config_sha != rec.get("config_sha256", ""):
            raise NewbieError(f"{path}: its adapter_config.json differs from the recipe's (alpha may differ)")
        out.append((path, rec["strength"]))
    return {"loras": out, "fuse_loras": recipe.fuse_loras}
