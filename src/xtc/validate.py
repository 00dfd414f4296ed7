"""Up-front checks of a run's inputs.

A bad input (a model folder that is not a transformers model, an architecture xtc cannot
compress, layers out of range, bad bits, a broken TSV) must fail at once with one line naming the
input and what would fix it, and *before* anything is written: ``pipeline.compress`` calls
:func:`check_compress_inputs` before it creates the run folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from .errors import ConfigError

# Model types whose encoder xtc compresses end to end (quantization, layer reduction and the KD
# attention-score capture through transformers' attention interface), checked on tiny random
# configs. mpnet and deberta-v2 compute attention themselves; their scores are captured at the softmax
# (xtc.distill, tests/test_families.py). Other families either compute attention in other ways
# (longformer, ...), are not plain encoders (gpt2, t5, bart, llama, ...)
# or need inputs GLUE does not have.
SUPPORTED_MODEL_TYPES = ("bert", "roberta", "xlm-roberta", "camembert", "electra", "distilbert", "mpnet",
                         "deberta-v2", "ernie",
                         "data2vec-text", "roberta-prelayernorm")
_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
            "pytorch_model.bin.index.json")


def check_model(name_or_path: str, what: str = "model", supported_only: bool = True):
    """The config of a loadable (and with ``supported_only``, compressible) model; raises
    ModelLoadError / UnsupportedModelError."""
    from transformers import AutoConfig

    from .pipeline import ModelLoadError
    from .surgery import UnsupportedModelError

    name = str(name_or_path)
    path = Path(name).expanduser()
    fix = "pass a folder written by save_pretrained (config.json + weights, e.g. RUN/teacher/model) or a hub model name"
    if path.exists():
        if not path.is_dir():
            raise ModelLoadError(f"{what} {name} is a file, not a model folder; {fix}")
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{what} folder {name} is not a transformers model (no config.json); {fix}")
        if not any((path / w).is_file() for w in _WEIGHTS):
            raise ModelLoadError(f"{what} folder {name} has no weights (model.safetensors or pytorch_model.bin); {fix}")
    elif name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name:
        raise ModelLoadError(f"{what} folder {name} does not exist; {fix}")
    try:
        config = AutoConfig.from_pretrained(name)
    except (OSError, ValueError, KeyError, TypeError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0].rstrip(".")
        raise ModelLoadError(f"cannot load {what} {name!r}: {first}; {fix}") from None
    model_type = getattr(config, "model_type", None)
    if supported_only and model_type not in SUPPORTED_MODEL_TYPES:
        arch = ", ".join(getattr(config, "architectures", None) or []) or "no architecture named"
        raise UnsupportedModelError(
            f"{what} {name} is a {model_type!r} model ({arch}), which xtc cannot compress; "
            f"supported model types: {', '.join(SUPPORTED_MODEL_TYPES)}")
    return config


def check_tokenizer(name_or_path: str, what: str = "model") -> None:
    from .pipeline import _load_tokenizer

    _load_tokenizer(name_or_path)


def check_layers(layers: Optional[Sequence[int]], num_layers: int, what: str = "layers") -> None:
    """``layers`` (teacher layers the student copies, 0-based) must be distinct and in range."""
    if layers is None:
        return
    layers = list(layers)
    if not layers:
        raise ConfigError(f"{what} is empty: name at least one layer to keep, e.g. 1,3,5")
    bad = [i for i in layers if not (isinstance(i, int) and 0 <= i < num_layers)]
    if bad:
        raise ConfigError(f"{what} {','.join(map(str, layers))}: {bad} out of range; the model has "
                         f"{num_layers} layers, numbered 0..{num_layers - 1}")
    repeated = sorted({i for i in layers if layers.count(i) > 1})
    if repeated:
        raise ConfigError(f"{what} {','.join(map(str, layers))} repeats {repeated}; name each layer once")


def check_quant(quant) -> None:
    """A ``QuantConfig`` that the quantizers accept (bits, scheme, groups, activation bits)."""
    if quant is None:
        return
    from .surgery import XTCConfig

    try:
        XTCConfig(weight_bits=quant.weight_bits, activation_bits=quant.activation_bits, groups=quant.groups,
                  quantize_embeddings=quant.quantize_embeddings, weight_scheme=quant.weight_scheme)
    except (ValueError, KeyError) as e:
        msg = str(e).strip("'\"")
        raise ConfigError(f"quantization settings: {msg}") from None


def check_groups(quant, config) -> None:
    """An integer ``groups`` must divide every weight it will split; found on a weightless copy of the
    architecture, so that a bad value fails now rather than after the teacher's fine-tuning."""
    if quant is None or not isinstance(quant.groups, int) or quant.groups == 1:
        return
    import torch
    from torch import nn
    from transformers import AutoModel

    from .surgery import find_layers

    with torch.device("meta"):
        model = AutoModel.from_config(config)
    shapes = {tuple(m.weight.shape) for m in find_layers(model).modules() if type(m) is nn.Linear}
    bad = sorted(s for s in shapes if (s[0] * s[1]) % quant.groups)
    if bad:
        raise ConfigError(f"quantization settings: groups={quant.groups} does not divide the linear weights of shape "
                         f"{', '.join(map(str, bad))}; pass a divisor of their first dimension, 1 (one scale per "
                         f"matrix) or 'row' (one per output row)")


def check_data(task, glue_dir: Optional[str], train_file: Optional[str] = None, with_train: bool = True) -> None:
    """Read every split the run will read (DataError names the file and line of a problem)."""
    from .data import load_split, read_tsv

    if with_train:
        read_tsv(task, train_file) if train_file else load_split(task, "train", glue_dir)
    for split in task.dev_splits:
        load_split(task, split, glue_dir)


def check_compress_inputs(recipe, task, data=None) -> None:
    """Everything ``compress`` needs, checked before the run folder is touched."""
    check_quant(recipe.quant)
    source = recipe.teacher or recipe.model
    config = check_model(source, "teacher" if recipe.teacher else "model")
    check_layers(recipe.layers, int(getattr(config, "num_hidden_layers")))
    check_groups(recipe.quant, config)
    check_tokenizer(source)
    if data is None:  # pre-loaded data (your own files) was read and checked by its loader
        check_data(task, recipe.glue_dir, recipe.train_file)
