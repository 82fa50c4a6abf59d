"""transformers and diffusers import torchao whenever it is installed, and torchao's import prints
"Failed to load ..._C_mxfp8.so" lines (its CUDA-only kernels), two torch _pytree warnings and, through
diffusers, "Unable to import torchao Tensor objects". newbie imports torchao only to quantize
(newbie.memory.quant, directly), so the model libraries are first imported with torchao hidden from them."""

from __future__ import annotations

import sys


def import_model_libraries() -> None:
    """Import transformers' and diffusers' model bases without letting them import torchao. Cheap when done;
    a no-op when torchao is already imported (by the user, or to quantize): there is nothing left to hide."""
    if "torchao" in sys.modules or "transformers.modeling_utils" in sys.modules:
        return
    sys.modules["torchao"] = None  # `import torchao` raises ImportError, find_spec() answers None
    try:
        import diffusers.utils.import_utils as diffusers_imports

        diffusers_imports._torchao_available = False  # computed at its import, maybe before this call
        import diffusers.models.modeling_utils  # noqa: F401
        import transformers.modeling_utils  # noqa: F401
    except ImportError:
        pass  # a library asked torchao before we hid it: import it as usual (noisy, but working)
    finally:
        if sys.modules.get("torchao", 0) is None:
            del sys.modules["torchao"]
