"""Weights that live in pinned CPU memory (one arena per holder: newbie.memory.arena) and visit the GPU only
while they are needed.

`Offloaded`: a whole module (a text encoder, the DiT, the VAE) swapped in before its stage and out after it.
`BlockStreamer`: the blocks of a ModuleList streamed one by one during forward, copies on a side CUDA stream
overlapped with the compute of the blocks before; blocks listed as resident stay on the GPU.
Values never change on the way, so offloaded and streamed runs are bit-identical to resident ones.
"""

from __future__ import annotations

import weakref

import torch
from torch import nn

from newbie.memory.arena import pack


class OffloadedUse(RuntimeError):
    """A module ran while its weights were offloaded, i.e. outside its stage. On a GPU torch reports this as a
    device mismatch deep inside a layer; on the CPU (where tests run and nothing moves) it would pass
    silently, so the holders below guard every device and name the stage instead."""


_guards: weakref.WeakKeyDictionary[nn.Module, object] = weakref.WeakKeyDictionary()  # module -> hook handle


def guard(holder, module: nn.Module, stage: str, exclude: tuple[nn.Module, ...] = ()) -> None:
    """Forward pre-hooks on `module` and its direct children (the entry points: forward, and e.g. the VAE's
    encoder/decoder behind vae.encode) that raise OffloadedUse unless `holder.loaded`. Blocks deeper down are
    not hooked, so regional torch.compile of the repeated blocks never sees these hooks."""
    skip = {id(e) for e in exclude}

    @torch.compiler.disable  # a compiled module (the VAE decoder) runs it eagerly instead of guarding on it
    def check(mod, args):
        if not holder.loaded:
            raise OffloadedUse(
                f"{type(mod).__name__} ran outside the '{stage}' stage while its weights are "
                f"offloaded to the CPU (a memory plan is active; use pipe.stage('{stage}'))"
            )

    for m in (module, *module.children()):
        if id(m) not in skip and not isinstance(m, (nn.ModuleList, nn.ModuleDict)):
            unguard(m, recurse=False)
            _guards[m] = m.register_forward_pre_hook(check)


def unguard(module: nn.Module, recurse: bool = True) -> None:
    """Remove the guards of an earlier plan (a new plan installs its own holders)."""
    for m in module.modules() if recurse else (module,):
        handle = _guards.pop(m, None)
        if handle is not None:
            handle.remove()


class Offloaded:
    def __init__(
        self, module: nn.Module, device: torch.device, exclude: tuple[nn.Module, ...] = (), stage: str = ""
    ):
        """`exclude`: submodules managed elsewhere (streamed blocks, a table kept on the CPU).
        `stage`: the residency stage that loads it; given, calls outside that stage raise OffloadedUse."""
        self.module, self.device = module, torch.device(device)
        skip = {id(m) for e in exclude for m in e.modules()}
        slots = [
            (m, name, t)
            for m in module.modules()
            if id(m) not in skip
            for name, t in list(m._parameters.items()) + list(m._buffers.items())
            if t is not None
        ]
        # one pinned arena per holder (newbie.memory.arena); its views keep it alive as long as the holder
        cpu = pack([t for _, _, t in slots], self.device)
        self.tensors = [(m, name, c) for (m, name, _), c in zip(slots, cpu)]
        self.unload()
        if stage:
            guard(self, module, stage, exclude)

    def load(self) -> None:
        for m, name, cpu in self.tensors:
            self._set(m, name, cpu.to(self.device, non_blocking=True))
        self.loaded = True

    def unload(self) -> None:
        for m, name, cpu in self.tensors:
            self._set(m, name, cpu)
        self.loaded = False

    @staticmethod
    def _set(m: nn.Module, name: str, value: torch.Tensor) -> None:
        if name in m._parameters:
            m._parameters[name].data = value
        else:
            m._buffers[name] = value


class BlockStreamer:
    """Stream the non-resident blocks of `blocks` through the GPU during each forward (resident blocks are
    placed by whoever owns the rest of the model)."""

    def __init__(self, blocks: nn.ModuleList, device: torch.device, resident: set[int], prefetch: int = 2):
        self.device = torch.device(device)
        self.streamed = [i for i in range(len(blocks)) if i not in resident]
        self.prefetch = prefetch
        params = {i: list(blocks[i].parameters()) for i in self.streamed}
        packed = iter(pack([p for i in self.streamed for p in params[i]], self.device))  # one arena for all
        self.cpu = {i: [(p, next(packed)) for p in params[i]] for i in self.streamed}
        for i in self.streamed:
            for p, cpu in self.cpu[i]:
                p.data = cpu
        self.cuda = self.device.type == "cuda"
        self.copy_stream = torch.cuda.Stream(self.device) if self.cuda else None
        self.inflight: dict[int, tuple[list[torch.Tensor], object]] = {}
        # the streamed blocks a forward actually entered, in order: a forward may stop early (the text encoder
        # runs only the layers before the hidden state it returns), and prefetching a block it never reaches
        # would keep that block on the GPU past the plan's allowance
        self.order: list[int] = []
        self.run: list[int] = []
        self.handles = []
        # Host-side work (copies, events, .data swaps) that torch.compile must not trace: a compiled block
        # runs its hooks too, and traced they recompile once per block index until the recompile limit fails
        # a fullgraph compile (issue 13). Eager, they stay outside the block's one graph.
        eager = torch.compiler.disable
        for i in self.streamed:
            self.handles.append(blocks[i].register_forward_pre_hook(eager(lambda m, a, i=i: self._enter(i))))
            self.handles.append(blocks[i].register_forward_hook(eager(lambda m, a, o, i=i: self._leave(i))))

    def _start(self, i: int) -> None:
        if i in self.inflight:
            return
        if self.cuda:
            with torch.cuda.stream(self.copy_stream):
                gpu = [cpu.to(self.device, non_blocking=True) for _, cpu in self.cpu[i]]
                event = torch.cuda.Event()
                event.record(self.copy_stream)
        else:
            gpu, event = [cpu.to(self.device) for _, cpu in self.cpu[i]], None
        self.inflight[i] = (gpu, event)

    def _enter(self, i: int) -> None:
        self._start(i)
        gpu, event = self.inflight.pop(i)
        if event is not None:
            torch.cuda.current_stream(self.device).wait_event(event)
        for (p, _), t in zip(self.cpu[i], gpu):
            if self.cuda:
                t.record_stream(
                    torch.cuda.current_stream(self.device)
                )  # memory stays valid until compute ends
            p.data = t
        if self.run and i <= self.run[-1]:  # a new forward
            self.order, self.run = self.run, []
        self.run.append(i)
        seq = self.order if i in self.order else self.streamed
        for stale in [j for j in self.inflight if j not in seq]:
            del self.inflight[stale]
        k = seq.index(i)
        for j in range(1, self.prefetch + 1):  # the next streamed blocks, wrapping into the next forward
            self._start(seq[(k + j) % len(seq)])

    def _leave(self, i: int) -> None:
        for p, cpu in self.cpu[i]:
            p.data = cpu

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.inflight.clear()


class Mover:
    """Whole-module moves with Module.to, for weights that are tensor subclasses (quantized) and cannot be
    swapped by pointer; slower than Offloaded (a device-to-host copy on every unload)."""

    def __init__(self, module: nn.Module, device: torch.device, stage: str = ""):
        self.module, self.device = module, torch.device(device)
        self.unload()
        if stage:
            guard(self, module, stage)

    def load(self) -> None:
        self.module.to(self.device)
        self.loaded = True

    def unload(self) -> None:
        self.module.to("cpu")
        self.loaded = False


class Resident:
    def __init__(self, module: nn.Module, device: torch.device):
        module.to(device)

    def load(self) -> None:
        pass

    def unload(self) -> None:
        pass
