"""A real 1-2 bit model file, and CPU inference straight from it.

* :func:`save_packed` / :func:`export`: write a quantized model (or a run's quantized checkpoint)
  as one safetensors file, ``model.xtc.safetensors``: binary codes at 1 bit/weight, ternary at
  1.6 (base-3) or 2 bits/weight, per-group scales, the rest in FP16 (see :mod:`.format`).
* :func:`load_packed`: the transformers model back, its quantized linears computing straight
  from the packed bits with 8-bit per-token activations (C++ kernels, :mod:`.kernels`); BERT-layout
  blocks run a lean forward with the same arithmetic (:mod:`.lean_blocks`).
* :func:`size_report`: bytes per class of tensors and the compression ratios.
* :func:`sentence_transformer`: a packed sentence embedder as a sentence-transformers model.
"""

from .export import export, find_checkpoint
from .format import FILE_NAME, FORMAT_VERSION, PackedFormatError
from .kernels import kernel_info
from .lean_blocks import use_lean_blocks
from .model import (
    is_packed,
    load_packed,
    packed_weight_bytes,
    save_packed,
)
from .modules import PackedEmbedding, PackedFFN, PackedLinear
from .report import markdown_table, size_report
from .st_adapter import sentence_transformer

__all__ = [
    "FILE_NAME",
    "FORMAT_VERSION",
    "PackedEmbedding",
    "PackedFFN",
    "PackedFormatError",
    "PackedLinear",
    "export",
    "find_checkpoint",
    "is_packed",
    "kernel_info",
    "load_packed",
    "markdown_table",
    "packed_weight_bytes",
    "save_packed",
    "sentence_transformer",
    "size_report",
    "use_lean_blocks",
]
