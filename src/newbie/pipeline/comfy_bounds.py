"""Bounds on reading a ComfyUI graph from a file someone else made (pipeline/comfy_png.py): nested subgraphs
multiply (10 instances per level, 8 levels: 10^8 nodes) and a StringConcatenate chain doubles its text at each
link, so the walk counts the nodes it visits, caps every string and stops at a deadline, with one line
(NewbieError: exit 2) instead of running until the machine runs out of memory."""

from __future__ import annotations

import time

from newbie.errors import NewbieError

MAX_NODES = 20_000  # nodes visited (the official template has ~20; large real workflows a few hundred)
MAX_TEXT = 200_000  # characters of one computed string (a prompt the text encoder would cut long before)
MAX_SECONDS = 5.0


class Budget:
    def __init__(self):
        self.nodes, self.deadline = 0, time.monotonic() + MAX_SECONDS

    def visit(self, n: int = 1) -> None:
        self.nodes += n
        if self.nodes > MAX_NODES:
            raise NewbieError(
                f"the graph is too large (over {MAX_NODES} nodes once its subgraphs are expanded)"
            )
        if time.monotonic() > self.deadline:
            raise NewbieError(f"the graph takes over {MAX_SECONDS:g} s to read; it is not read further")


def text_bound(text: str) -> str:
    if len(text) > MAX_TEXT:
        raise NewbieError(f"a string in the graph grows past {MAX_TEXT} characters")
    return text
