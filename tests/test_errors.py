"""newbie.errors.describe: every failure of a generation becomes one line and an exit code."""

import pytest
import torch

from newbie.errors import NewbieError, debug_enabled, describe, failure_context


def _raised(fn):
    try:
        fn()
    except BaseException as e:  # noqa: BLE001 - the point is to catch anything
        return e
    raise AssertionError("nothing was raised")


def test_real_torch_mismatches_are_internal_errors():
    dtype = _raised(
        lambda: torch.nn.functional.linear(torch.zeros(2, 3), torch.zeros(4, 3, dtype=torch.bfloat16))
    )
    conv = _raised(
        lambda: torch.nn.functional.conv2d(torch.zeros(1, 3, 4, 4), torch.zeros(4, 3, 1, 1).double())
    )
    device = _raised(lambda: torch.zeros(2, device="meta") + torch.zeros(2))
    for e in (dtype, conv, device):
        message, code = describe(e)
        assert (
            code == 1 and message.startswith("internal device/dtype mismatch (") and "--debug" in message
        ), e


def test_out_of_memory_names_size_and_plan():
    def oom():
        with failure_context(size=(1024, 768), plan="stream"):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    message, code = describe(_raised(oom))
    assert code == 1 and message.startswith("out of GPU memory at 1024x768 with plan 'stream': try --vram ")
    assert describe(torch.cuda.OutOfMemoryError("x"))[0].startswith("out of GPU memory: try --vram")
    assert describe(MemoryError())[0].startswith("out of RAM: ")


def test_innermost_context_wins():
    def nested():
        with failure_context(size=(512, 512)):
            with failure_context(size=(256, 128), plan="offload"):
                raise torch.OutOfMemoryError("x")

    assert describe(_raised(nested))[0].startswith("out of GPU memory at 256x128 with plan 'offload'")


def test_bad_input_is_2_but_running_out_of_memory_is_1():
    assert describe(NewbieError("width 100 is not a positive multiple of 16")) == (
        "width 100 is not a positive multiple of 16",
        2,
    )

    def smallest_plan_failed():
        try:
            raise torch.OutOfMemoryError("x")
        except torch.OutOfMemoryError:
            raise NewbieError("out of GPU memory at 64x64 even with the smallest plan ('stream')") from None

    assert describe(_raised(smallest_plan_failed))[1] == 1


def test_anything_else_is_one_line_with_what_to_do():
    message, code = describe(ValueError("first line\n  second line"))
    assert code == 1 and "\n" not in message
    assert message.startswith("generation failed: ValueError: first line (run again with --debug")
    assert describe(KeyError())[0].startswith("generation failed: KeyError (run again")
    assert describe(KeyboardInterrupt()) == ("interrupted", 130)


@pytest.mark.parametrize("value, on", [("", False), ("0", False), ("1", True), ("yes", True)])
def test_debug_switch(monkeypatch, value, on):
    monkeypatch.setenv("NEWBIE_DEBUG", value)
    assert debug_enabled() is on and debug_enabled(True) is True
