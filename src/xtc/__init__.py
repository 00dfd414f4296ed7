"""xtc: extreme compression of pre-trained transformers (XTC, NeurIPS 2022) as usable software.

The public API, by what a user does:

    configs      XTCConfig, TrainConfig, DistillConfig, Recipe, load_recipe
    in Python    quantize_(model, config), reduce_layers(model, keep), Distiller, layer_map
    stages       finetune, distill, evaluate, compress           (read and write run folders)
    the file     export, save_packed, load_packed, size_report    (the packed 1-2 bit format)
    embeddings   encode(model, tokenizer, sentences)              (pooled as the compressed embedder records)
    errors       XTCError (every mistake a user can make; the message says what to fix)

Names are imported on first use, so ``import xtc`` (and ``xtc --help``) does not load torch.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "config": ("XTCConfig", "TrainConfig", "DistillConfig"),
    "recipe": ("Recipe", "load_recipe", "QuantConfig"),
    "errors": ("XTCError",),
    "surgery": ("quantize_", "reduce_layers", "find_layers", "layer_map", "load_quantized"),
    "distillation": ("Distiller", "distillation_loss"),
    "quantizers": ("binarize", "ternarize", "quantize_symmetric", "quantize_activations",
                   "register_weight_quantizer"),
    "pipeline": ("finetune", "distill", "evaluate", "compress"),
    "packed": ("export", "save_packed", "load_packed", "size_report"),
    "embedding": ("encode",),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


_SUBMODULES = ("augment", "checkpoints", "cli", "config", "data", "distillation", "embedding", "errors", "io",
               "modules",
               "packed", "pipeline", "quantizers", "recipe", "surgery", "train", "validate")


def __getattr__(name: str):
    if name in _WHERE:
        value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
        globals()[name] = value  # found once, then a plain attribute
        return value
    if name in _SUBMODULES:  # ``xtc.data.get_task`` after a plain ``import xtc``
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'xtc' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
