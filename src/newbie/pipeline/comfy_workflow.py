"""The editor graph ComfyUI embeds as the PNG's `workflow` chunk (nodes with positional `widgets_values`, a links
table, subgraph definitions) -> the API form of its `prompt` chunk ({id: {class_type, inputs}}), which
pipeline/comfy_png.py reads."""

from __future__ import annotations

from newbie.errors import NewbieError
from newbie.pipeline.comfy_bounds import Budget

# Editor widgets in `widgets_values` order (seeds are followed by the frontend's control_after_generate).
WIDGETS = {
    "KSampler": ("seed", None, "steps", "cfg", "sampler_name", "scheduler", "denoise"),
    "KSamplerAdvanced": (
        "add_noise",
        "noise_seed",
        None,
        "steps",
        "cfg",
        "sampler_name",
        "scheduler",
        "start_at_step",
        "end_at_step",
        "return_with_leftover_noise",
    ),
    "SamplerCustom": ("add_noise", "noise_seed", None, "cfg"),
    "KSamplerSelect": ("sampler_name",),
    "BasicScheduler": ("scheduler", "steps", "denoise"),
    "CLIPTextEncode": ("text",),
    "EmptySD3LatentImage": ("width", "height", "batch_size"),
    "EmptyLatentImage": ("width", "height", "batch_size"),
    "ModelSamplingAuraFlow": ("shift",),
    "ModelSamplingSD3": ("shift",),
    "PrimitiveStringMultiline": ("value",),
    "PrimitiveString": ("value",),
    "PrimitiveInt": ("value",),
    "PrimitiveFloat": ("value",),
    "StringReplace": ("string", "find", "replace"),
    "StringConcatenate": ("string_a", "string_b", "delimiter"),
    "UNETLoader": ("unet_name", "weight_dtype"),
}


class _Level:
    """A graph level's nodes and links, indexed once: the top level, or a subgraph definition shared by
    all its instances."""

    def __init__(self, nodes: list, links):
        self.nodes = {int(n["id"]): n for n in nodes}
        self.links = {}
        for link in links or []:
            if isinstance(link, dict):
                self.links[int(link["id"])] = (int(link["origin_id"]), int(link["origin_slot"]))
            else:
                self.links[int(link[0])] = (int(link[1]), int(link[2]))


class _Defs(dict):
    """Subgraph definitions by id, each indexed on first use, and the walk's budget."""

    def __init__(self, definitions: list):
        super().__init__((d["id"], d) for d in definitions)
        self.levels: dict = {}
        self.budget = Budget()

    def level(self, kind) -> _Level:
        if kind not in self.levels:
            d = self[kind]
            self.levels[kind] = _Level(d.get("nodes", []), d.get("links"))
        return self.levels[kind]


class _Scope:
    """One graph level of a workflow: the top level, or a subgraph instance (id prefix, outer node)."""

    def __init__(self, level: _Level, prefix: str, outer: tuple | None, defs: _Defs):
        self.nodes, self.links = level.nodes, level.links
        self.prefix, self.outer, self.defs = prefix, outer, defs
        defs.budget.visit(len(self.nodes))


def workflow_to_api(workflow: dict) -> dict:
    """The editor's workflow JSON -> an API graph (what the `prompt` chunk holds), for the node types in
    WIDGETS. Subgraphs are flattened with ComfyUI's "outer:inner" ids; Reroute nodes and the frontend's
    PrimitiveNode are looked through; muted (mode 2) and bypassed (mode 4) nodes are left out."""
    if not isinstance(workflow, dict) or not isinstance(workflow.get("nodes"), list):
        raise NewbieError("the workflow has no node list")
    defs = _Defs((workflow.get("definitions") or {}).get("subgraphs", []))
    out: dict = {}
    _emit(_Scope(_Level(workflow["nodes"], workflow.get("links")), "", None, defs), out, 0)
    return out


def _emit(scope: _Scope, out: dict, depth: int) -> None:
    if depth > 8:
        raise NewbieError("subgraphs nest too deeply")
    for nid, node in scope.nodes.items():
        kind = node.get("type")
        if node.get("mode") in (2, 4):
            continue
        if kind in scope.defs:
            _emit(
                _Scope(scope.defs.level(kind), f"{scope.prefix}{nid}:", (scope, node), scope.defs),
                out,
                depth + 1,
            )
            continue
        if kind in ("Reroute", "PrimitiveNode", "Note", "MarkdownNote"):
            continue
        out[f"{scope.prefix}{nid}"] = {"class_type": kind, "inputs": _inputs(scope, node)}


def _widget_values(scope: _Scope, node: dict) -> dict:
    names, values = WIDGETS.get(node.get("type"), ()), node.get("widgets_values")
    if isinstance(values, dict):  # some nodes save their widgets by name
        return dict(values)
    got = {n: v for n, v in zip(names, values or []) if n is not None}
    if scope.outer is not None:  # the instance's promoted widgets override the inner node's own
        outer_scope, inst = scope.outer
        proxies = (inst.get("properties") or {}).get("proxyWidgets") or []
        for (inner_id, name), v in zip(proxies, inst.get("widgets_values") or []):
            if str(inner_id) == str(node["id"]) and v is not None and name in got:
                got[name] = v
    return got


def _inputs(scope: _Scope, node: dict) -> dict:
    inputs = _widget_values(scope, node)
    for slot in node.get("inputs") or []:
        if slot.get("link") is None:
            continue
        value = _source(scope, slot["link"], 0)
        if value is not None:
            inputs[slot["name"]] = value
    return inputs


def _source(scope: _Scope, link_id: int, depth: int):
    """A link's source as an API input: [node key, slot], or a plain value (a widget on a subgraph
    instance or a frontend PrimitiveNode). None when it cannot be traced."""
    if depth > 50 or link_id not in scope.links:
        return None
    origin, slot = scope.links[link_id]
    if origin == -10:  # a subgraph input: what feeds the instance's input `slot` outside
        if scope.outer is None:
            return None
        outer_scope, inst = scope.outer
        names = [i.get("name") for i in scope.defs[inst["type"]].get("inputs", [])]
        name = names[slot] if slot < len(names) else None
        for i in inst.get("inputs") or []:
            if i.get("name") == name and i.get("link") is not None:
                return _source(outer_scope, i["link"], depth + 1)
        proxies = (inst.get("properties") or {}).get("proxyWidgets") or []
        for (inner_id, pname), v in zip(proxies, inst.get("widgets_values") or []):
            if str(inner_id) == "-1" and pname == name:
                return v
        return None
    node = scope.nodes.get(origin)
    if node is None:
        return None
    kind = node.get("type")
    if kind == "Reroute":
        link = next((i.get("link") for i in node.get("inputs") or [] if i.get("link") is not None), None)
        return None if link is None else _source(scope, link, depth + 1)
    if kind == "PrimitiveNode":
        values = node.get("widgets_values") or [None]
        return values[0]
    if (
        kind in scope.defs
    ):  # the output of a subgraph instance: what feeds the subgraph's output `slot` inside
        inner = _Scope(scope.defs.level(kind), f"{scope.prefix}{origin}:", (scope, node), scope.defs)
        for link in scope.defs[kind].get("links") or []:
            if isinstance(link, dict) and int(link["target_id"]) == -20 and int(link["target_slot"]) == slot:
                return _source(inner, int(link["id"]), depth + 1)
        return None
    return [f"{scope.prefix}{origin}", slot]
