"""Read the graph ComfyUI embeds in its PNGs and turn a NewBie workflow into `Settings`.

ComfyUI's SaveImage writes two text chunks: `prompt`, the API graph it executed ({id: {class_type, inputs}},
an input is a value or a link [source id, output slot]; subgraphs already flattened to ids like "41:3"), and
`workflow`, the editor's graph (nodes with positional `widgets_values`, a links table, subgraph definitions).
We read `prompt` when present (it is what ran) and fall back to `workflow`, converted to the same API form.

From the sampler node (KSampler, KSamplerAdvanced or SamplerCustom) we follow links to the positive and
negative CLIPTextEncode texts (through the string nodes the official template uses), the latent node's size
and batch, and ModelSamplingAuraFlow/SD3's shift. Everything is mapped to newbie's names with ComfyUI's
initial noise (noise="comfy") and, for the `simple` scheduler, its exact sigma grid (schedule="simple");
whatever has no equivalent becomes a note "could not map: ...". The official template:
Comfy-Org/workflow_templates, templates/image_newbieimage_exp0_1-t2i.json (KSampler res_multistep,
20 steps, cfg 5.5, simple, shift 6)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from newbie.errors import NewbieError
from newbie.model.text import PROMPT_START
from newbie.pipeline.comfy_bounds import Budget, text_bound
from newbie.pipeline.comfy_workflow import workflow_to_api
from newbie.pipeline.recipe import png_chunks
from newbie.pipeline.request import SettingError, Settings, check

# ComfyUI sampler name -> ours, and a note when ours is not the same update rule.
SAMPLER_MAP = {
    "res_multistep": ("res_multistep", None),
    "euler": ("euler", None),
    "dpmpp_2m": (
        "dpmpp_2m",
        "dpmpp_2m: newbie steps in the flow log-SNR, ComfyUI in -log(sigma) "
        "(same sampler family, not the same picture)",
    ),
}
# ComfyUI scheduler -> our schedule. Only `simple` is reproduced exactly.
SCHEDULER_MAP = {"simple": "simple"}
SAMPLER_NODES = ("KSampler", "KSamplerAdvanced", "SamplerCustom")
LATENT_NODES = ("EmptySD3LatentImage", "EmptyLatentImage")
SHIFT_NODES = {"ModelSamplingAuraFlow": 1.0, "ModelSamplingSD3": 1000.0}  # node -> ComfyUI's multiplier
# Nodes a MODEL link may pass through unchanged for our purposes (loaders end the walk).
MODEL_LOADERS = ("UNETLoader", "CheckpointLoaderSimple", "DiffusionModelLoader")


@dataclass
class ComfyImport:
    """What `newbie generate --from comfy.png` runs: the settings, and what could not be carried over."""

    settings: Settings
    notes: list[str] = field(default_factory=list)
    source: str = "prompt"  # the chunk read: "prompt" (API graph) or "workflow" (editor graph)


def is_comfy(info: dict) -> bool:
    return isinstance(info.get("prompt"), str) or isinstance(info.get("workflow"), str)


def read_comfy_png(path: Path, info: dict | None = None) -> ComfyImport:
    """A ComfyUI PNG -> ComfyImport; a one-line NewbieError when it carries no usable NewBie graph."""
    info = png_chunks(path) if info is None else info
    errors = []
    for key in ("prompt", "workflow"):
        text = info.get(key)
        if not isinstance(text, str):
            continue
        try:
            raw = json.loads(text)
            graph = raw if key == "prompt" else workflow_to_api(raw)
            settings, notes = settings_from_graph(graph)
            return ComfyImport(settings, notes, key)
        except NewbieError as e:
            errors.append(f"{key}: {e}")
        except (ValueError, TypeError, KeyError, AttributeError, IndexError) as e:
            errors.append(f"{key}: malformed graph ({type(e).__name__}: {e})")
    if not errors:
        raise NewbieError(f"{path}: no ComfyUI graph in this PNG (no 'prompt' or 'workflow' text chunk)")
    raise NewbieError(f"{path}: no usable NewBie graph ({'; '.join(errors)})")


# -- the API graph --


def _is_link(value) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], (str, int))
        and isinstance(value[1], int)
    )


class _Graph:
    def __init__(self, graph: dict):
        if not isinstance(graph, dict) or not graph:
            raise NewbieError("the graph is empty")
        self.budget = Budget()
        self.budget.visit(len(graph))
        self.nodes = {str(k): v for k, v in graph.items() if isinstance(v, dict) and "class_type" in v}
        # a node's computed value, once: a chain whose links all point at the node before is linear, not 2^n
        self.memo: dict[tuple[str, int], object] = {}

    def node(self, link) -> tuple[str, dict]:
        key = str(link[0])
        if key not in self.nodes:
            raise NewbieError(f"a link points at node {key}, which is not in the graph")
        return key, self.nodes[key]

    def value(self, node: dict, name: str, notes: list[str], depth: int = 0):
        """An input's value; a link is followed through primitive and string nodes."""
        v = node.get("inputs", {}).get(name)
        return self.resolve(v, notes, depth) if _is_link(v) else v

    def resolve(self, link, notes: list[str], depth: int = 0):
        if depth > 50:
            raise NewbieError("the graph has a link cycle or too long a chain of string nodes")
        key, src = self.node(link)
        memo = (key, link[1])
        if memo not in self.memo:
            self.budget.visit()
            value = self._compute(key, src, notes, depth)
            self.memo[memo] = text_bound(value) if isinstance(value, str) else value
        return self.memo[memo]

    def _compute(self, key: str, src: dict, notes: list[str], depth: int):
        kind = src["class_type"]
        if kind in (
            "PrimitiveStringMultiline",
            "PrimitiveString",
            "PrimitiveInt",
            "PrimitiveFloat",
            "PrimitiveBoolean",
        ):
            return self.value(src, "value", notes, depth + 1)
        if kind == "StringReplace":
            s, find, rep = (self.value(src, n, notes, depth + 1) for n in ("string", "find", "replace"))
            return str(s).replace(str(find), str(rep))
        if kind == "StringConcatenate":
            a, b, d = (self.value(src, n, notes, depth + 1) for n in ("string_a", "string_b", "delimiter"))
            return str(d or "").join((str(a), str(b)))
        if kind == "Reroute":
            return self.value(src, "input", notes, depth + 1)
        raise NewbieError(f"node {key} ({kind}) computes a value newbie cannot evaluate")

    def find(self, start, kinds: tuple[str, ...], through: str, depth: int = 0) -> tuple[str, dict] | None:
        """Walk input `through` upstream from a link to a node of `kinds` (None at a loader or dead end)."""
        while _is_link(start) and depth < 50:
            key, node = self.node(start)
            if node["class_type"] in kinds:
                return key, node
            start, depth = node.get("inputs", {}).get(through), depth + 1
        return None


def _sampler_node(g: _Graph, notes: list[str]) -> tuple[str, dict]:
    found = [(k, n) for k, n in g.nodes.items() if n["class_type"] in SAMPLER_NODES]
    if not found:
        kinds = sorted({n["class_type"] for n in g.nodes.values()})
        raise NewbieError(f"no KSampler/KSamplerAdvanced/SamplerCustom node (nodes: {', '.join(kinds[:12])})")
    # the first pass: the sampler whose latent does not come out of another sampler
    firsts = [
        (k, n)
        for k, n in found
        if g.find(n.get("inputs", {}).get("latent_image"), SAMPLER_NODES, "samples") is None
    ]
    key, node = (firsts or found)[0]
    if len(found) > 1:
        others = ", ".join(f"{k} ({n['class_type']})" for k, n in found if k != key)
        notes.append(f"could not map: further sampler nodes {others} (a second pass); used node {key}")
    return key, node


def _text(g: _Graph, sampler: dict, which: str, notes: list[str]) -> str:
    link = sampler.get("inputs", {}).get(which)
    if not _is_link(link):
        raise NewbieError(f"the sampler's {which} input is not connected")
    key, node = g.node(link)
    while node["class_type"] != "CLIPTextEncode":
        kind = node["class_type"]
        if kind == "ConditioningZeroOut":
            notes.append(
                f"could not map: {which} is ConditioningZeroOut (zeroed embeddings); used an empty "
                f"{which} prompt"
            )
            return ""
        inner = next(
            (
                v
                for n, v in node.get("inputs", {}).items()
                if _is_link(v) and n in ("conditioning", "conditioning_to", "conditioning_1")
            ),
            None,
        )
        if inner is None:
            raise NewbieError(
                f"the {which} conditioning comes from node {key} ({kind}), not a CLIPTextEncode"
            )
        notes.append(
            f"could not map: node {key} ({kind}) on the {which} conditioning; used the text it wraps"
        )
        key, node = g.node(inner)
    text = g.value(node, "text", notes)
    if not isinstance(text, str):
        raise NewbieError(f"the {which} text of node {key} is not a string")
    return text


def _number(value, name: str, kind=float):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise NewbieError(f"{name} is not a number ({value!r})")
    return kind(value)


def settings_from_graph(graph: dict) -> tuple[Settings, list[str]]:
    """An API graph -> (Settings, notes). Raises a one-line NewbieError when no NewBie text-to-image
    sampler can be found."""
    g, notes = _Graph(graph), []
    key, ks = _sampler_node(g, notes)
    inputs = ks.get("inputs", {})
    seed, sampler_name, scheduler, steps, denoise = _sampling(g, key, ks, notes)
    settings = {
        "seed": _number(seed, "seed", int),
        "steps": _number(steps, "steps", int),
        "cfg": _number(g.value(ks, "cfg", notes), "cfg"),
        "noise": "comfy",
    }
    _sampler_and_schedule(settings, sampler_name, scheduler, denoise, notes)
    _shift_and_size(g, inputs, settings, notes)
    prompt, negative = _texts(g, ks, notes)
    out = Settings(prompt=prompt, negative=negative, cfg_trunc=1.0, renorm_cfg=0.0, **settings)
    try:
        check(out)  # the request's own rules, before anything loads: a graph's value gets the same words
    except SettingError as e:
        raise SettingError(e.field, f"the ComfyUI graph's {e}") from None
    return out, notes


def _sampling(g: _Graph, key: str, ks: dict, notes: list[str]) -> tuple:
    """The sampler node's (seed, sampler name, scheduler, steps, denoise), through KSamplerSelect and
    BasicScheduler for SamplerCustom; what a text-to-image run cannot honour becomes a note."""
    kind, inputs = ks["class_type"], ks.get("inputs", {})
    val = lambda name: g.value(ks, name, notes)  # noqa: E731

    if kind == "SamplerCustom":
        seed = val("noise_seed")
        sel = g.find(inputs.get("sampler"), ("KSamplerSelect",), "sampler")
        sched = g.find(inputs.get("sigmas"), ("BasicScheduler",), "sigmas")
        if sel is None or sched is None:
            raise NewbieError(
                f"SamplerCustom node {key}: its sampler/sigmas do not come from KSamplerSelect/BasicScheduler"
            )
        sampler_name, scheduler = (
            g.value(sel[1], "sampler_name", notes),
            g.value(sched[1], "scheduler", notes),
        )
        steps, denoise = g.value(sched[1], "steps", notes), g.value(sched[1], "denoise", notes)
        add_noise = val("add_noise")
    else:
        seed = val("noise_seed" if kind == "KSamplerAdvanced" else "seed")
        sampler_name, scheduler, steps = val("sampler_name"), val("scheduler"), val("steps")
        denoise = val("denoise") if kind == "KSampler" else 1.0
        add_noise = val("add_noise") if kind == "KSamplerAdvanced" else True
        if kind == "KSamplerAdvanced":
            start, end = val("start_at_step"), val("end_at_step")
            if (start or 0) > 0 or (isinstance(end, (int, float)) and end < _number(steps, "steps", int)):
                notes.append(
                    f"could not map: KSamplerAdvanced steps {start}..{end} of {steps} (a partial pass); "
                    f"ran all {steps}"
                )
            if val("return_with_leftover_noise") == "enable":
                notes.append("could not map: return_with_leftover_noise (newbie always finishes at sigma 0)")
    if add_noise in (False, "disable"):
        notes.append("could not map: add_noise disabled (newbie always starts from noise)")
    return seed, sampler_name, scheduler, steps, denoise


def _sampler_and_schedule(settings: dict, sampler_name, scheduler, denoise, notes: list[str]) -> None:
    """ComfyUI's sampler and scheduler names -> ours (res_multistep / simple where there is none)."""
    if sampler_name in SAMPLER_MAP:
        settings["sampler"], note = SAMPLER_MAP[sampler_name]
        if note:
            notes.append(f"could not map exactly: {note}")
    else:
        settings["sampler"] = "res_multistep"
        notes.append(
            f"could not map: sampler '{sampler_name}' (newbie has {', '.join(SAMPLER_MAP)}); "
            f"used res_multistep"
        )
    if scheduler in SCHEDULER_MAP:
        settings["schedule"] = SCHEDULER_MAP[scheduler]
    else:
        settings["schedule"] = "simple"
        notes.append(
            f"could not map: scheduler '{scheduler}' (newbie has simple and its own uniform); used simple"
        )
    if denoise is not None and _number(denoise, "denoise") < 1.0:
        notes.append(
            f"could not map: denoise {denoise} without an input image; ran text-to-image (denoise 1)"
        )


def _shift_and_size(g: _Graph, inputs: dict, settings: dict, notes: list[str]) -> None:
    """The shift of the ModelSampling node on the model, the size and batch of the empty latent."""
    found = g.find(inputs.get("model"), tuple(SHIFT_NODES), "model")
    if found is None:
        notes.append("could not map: no ModelSamplingAuraFlow/SD3 node on the model; used the model's shift")
    else:
        settings["shift"] = _number(g.value(found[1], "shift", notes), "shift")
        if SHIFT_NODES[found[1]["class_type"]] != 1.0:
            notes.append(
                f"could not map exactly: {found[1]['class_type']} builds its sigma table with "
                f"multiplier 1000 (float rounding differs slightly from AuraFlow's)"
            )

    latent = g.find(inputs.get("latent_image"), LATENT_NODES, "samples")
    if latent is None:
        where = inputs.get("latent_image")
        src = g.node(where)[1]["class_type"] if _is_link(where) else "nothing"
        notes.append(
            f"could not map: the latent comes from {src}, not an empty latent; used the model's size"
        )
    else:
        lat = latent[1]
        settings["width"] = _number(g.value(lat, "width", notes), "width", int)
        settings["height"] = _number(g.value(lat, "height", notes), "height", int)
        settings["batch"] = _number(g.value(lat, "batch_size", notes) or 1, "batch_size", int)


def _texts(g: _Graph, ks: dict, notes: list[str]) -> tuple[str, str]:
    """The positive and negative texts; the node types that have no equivalent here become notes."""
    prompt = _text(g, ks, "positive", notes)
    negative = _text(g, ks, "negative", notes)
    if not prompt.strip():
        raise NewbieError("the positive prompt text is empty")
    for text in (prompt, negative):
        if PROMPT_START in text:
            notes.append(
                "note: the text carries its own system prompt (up to '<Prompt Start>'); newbie feeds it "
                "as written, as ComfyUI does"
            )
            break
    others = sorted(
        {n["class_type"] for n in g.nodes.values()}
        & {"LoraLoader", "LoraLoaderModelOnly", "RenormCFG", "CFGNorm", "ControlNetApply"}
    )
    for other in others:
        notes.append(f"could not map: node type {other}")
    return prompt, negative
