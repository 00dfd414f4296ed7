"""Up-front checks of a run's inputs.

A bad input (a model folder that is not a transformers model, an architecture xtc cannot
compress, layers out of range, bad bits, a broken TSV) must fail at once with one line naming the
input and what would fix it, and *before* anything is written: ``pipeline.compress`` calls
:func:`check_compress_inputs` before it creates the run folder.
"""

from __future__ import annotations

from typing import Optional, Sequence

from .errors import ConfigError
from .models import SUPPORTED_MODEL_TYPES, check_model, check_tokenizer_fits, load_tokenizer  # noqa: F401


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


def check_quant_shapes(quant, config, num_blocks: Optional[int] = None) -> None:
    """An integer ``groups`` must divide every weight it will split, and every ``module_bits`` name must
    match a linear of the (first ``num_blocks``) blocks; found on a weightless copy of the architecture,
    so that a bad value fails now rather than after the teacher's fine-tuning."""
    splits = quant is not None and isinstance(quant.groups, int) and quant.groups != 1
    if quant is None or not (splits or quant.module_bits):
        return
    import torch
    from torch import nn
    from transformers import AutoModel

    from .surgery import block_linears, check_module_bits, find_layers

    with torch.device("meta"):
        model = AutoModel.from_config(config)
    layers = find_layers(model)
    check_module_bits(quant, block_linears(layers[:num_blocks] if num_blocks else layers, quant))
    if not splits:
        return
    shapes = {tuple(m.weight.shape) for m in layers.modules() if type(m) is nn.Linear}
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
    """Everything ``compress`` needs, checked before the run folder is touched (the configs of the
    recipe checked their own values when they were made)."""
    check_stage_inputs(recipe.teacher or recipe.model, "teacher" if recipe.teacher else "model", task,
                       recipe.glue_dir, recipe.train_file, data, layers=recipe.layers, quant=recipe.quant,
                       supported_only=bool(recipe.layers or recipe.quant), student=recipe.student)


def check_stage_inputs(model: str, what: str, task, glue_dir, train_file=None, data=None, layers=None,
                       quant=None, supported_only: bool = True, student: Optional[str] = None):
    """What a stage (finetune / distill, or all of compress) reads, checked before its folder is
    touched: the model, the student model if one is given, layers and groups against the model's
    shapes, each tokenizer against its model's vocabulary, and the data unless it was pre-loaded
    (your own files are read and checked by their loader). Returns the model's config."""
    config = check_model(model, what, supported_only=supported_only)
    check_layers(layers, int(getattr(config, "num_hidden_layers")))
    check_tokenizer_fits(load_tokenizer(model), config, f"{what} {model}")
    if student is not None:
        student_config = check_model(student, "student")
        check_tokenizer_fits(load_tokenizer(student), student_config, f"student {student}")
        check_quant_shapes(quant, student_config)  # the student is what gets quantized
    else:
        check_quant_shapes(quant, config, len(layers) if layers else None)
    if data is None:
        check_data(task, glue_dir, train_file)
    return config
