"""xtc: extreme compression of pre-trained transformers (XTC, NeurIPS 2022) as usable software."""

__version__ = "0.1.0"

from .distill import DistillConfig, Distiller, distillation_loss  # noqa: E402
from .quantizers import (  # noqa: E402
    binarize,
    quantize_activations,
    quantize_symmetric,
    register_weight_quantizer,
    ternarize,
)
from .surgery import XTCConfig, find_layers, layer_map, load_quantized, quantize_, reduce_layers  # noqa: E402
from . import pipeline  # noqa: E402  (stages: pipeline.finetune / pipeline.distill / ...)
from .pipeline import compress, evaluate, finetune  # noqa: E402
from .recipe import QuantConfig, Recipe, load_recipe  # noqa: E402
from .train import TrainConfig  # noqa: E402


def __getattr__(name):
    # the packed format pulls in its C++ kernels lazily: import it only when asked for
    if name in ("save_packed", "load_packed", "size_report", "export"):
        from . import packed

        return getattr(packed, name)
    raise AttributeError(f"module 'xtc' has no attribute {name!r}")
