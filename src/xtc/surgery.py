"""Model surgery: ``quantize_(model, config)`` and ``reduce_layers(model, keep)``.

The encoder's transformer blocks are found by structure (the ``nn.ModuleList`` of identical blocks
inside the base model), so every encoder family transformers builds the usual way works; what is
quantized inside a block is every ``nn.Linear`` (query/key/value, attention output, FFN up and
down). The word embedding is quantized per row. Everything else (position and token-type
embeddings, LayerNorm, biases, pooler, classifier) stays full precision (XTC-METHOD.md section 2).

Families checked with transformers 5.24 (tests/test_families.py), none by class name:
BERT, RoBERTa, XLM-RoBERTa (query/key/value, attention output dense, FFN dense x2); ELECTRA (the
same; its ``embeddings_project`` from embedding_size to hidden_size sits outside the blocks and
stays FP, like the other embedding-side parameters); DistilBERT (q_lin/k_lin/v_lin/out_lin,
ffn.lin1/lin2; its layer count is ``n_layers``, reached through ``num_hidden_layers``); MPNet
(q/k/v/o; the relative attention bias table lives in the encoder, shared by every layer, and stays
FP as position embeddings do); DeBERTa-v2/v3 (query_proj/key_proj/value_proj, output and FFN
dense). DeBERTa's relative-position embedding table is shared by all layers (in the encoder) and
stays FP; each layer projects it with its own position key/query projections. With
``share_att_key`` (DeBERTa-v3) those projections *are* query_proj/key_proj, so they are quantized;
without it they are the per-layer ``pos_key_proj``/``pos_query_proj`` linears, quantized too, so
that both variants quantize the same roles (every per-layer projection matrix) and only the shared
table stays FP. DeBERTa-v2-xlarge's optional ConvLayer sits outside the blocks and stays FP.
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Optional, Sequence

from torch import nn

from .errors import ConfigError, ModelLoadError, UnsupportedModelError  # noqa: F401  (re-exported: raised here, defined there)
from .config import ROW_GROUPS, XTC_CONFIG_NAME, XTCConfig  # noqa: F401  (XTCConfig: xtc.surgery.XTCConfig)
from .modules import QuantEmbedding, QuantLinear

# Families tested end to end; others with the same structure are accepted too.
TESTED_FAMILIES = ("bert", "roberta", "xlm-roberta", "electra", "distilbert", "mpnet", "deberta-v2")


def find_layers(model: nn.Module) -> nn.ModuleList:
    """The encoder's list of transformer blocks, found by structure.

    The longest ``nn.ModuleList`` whose entries are all of one class and each hold linears.
    """
    best = None
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) > 0:
            kinds = {type(m) for m in module}
            if len(kinds) == 1 and any(isinstance(x, nn.Linear) for x in module[0].modules()):
                if best is None or len(module) > len(best):
                    best = module
    if best is None:
        kind = getattr(getattr(model, "config", None), "model_type", type(model).__name__)
        raise UnsupportedModelError(
            f"cannot find the transformer layers of a {kind!r} model; supported families: "
            f"{', '.join(TESTED_FAMILIES)} (and encoders built the same way)"
        )
    return best


def _set_layers(model: nn.Module, new_layers: nn.ModuleList) -> None:
    old = find_layers(model)
    for parent in model.modules():
        for name, child in parent.named_children():
            if child is old:
                setattr(parent, name, new_layers)
                return


def quantize_(model: nn.Module, config: XTCConfig) -> nn.Module:
    """Replace, in place, the linears of every transformer block (and the word embedding) by
    quantization-aware modules that keep the latent weights. Returns ``model`` for chaining.

    A model quantized before is left as it is when ``config`` is the same, and refused otherwise:
    its linears are already quantization-aware, and applying a second config would leave them under
    the first while the model's config claimed the second."""
    previous = getattr(getattr(model, "config", None), "xtc", None) if is_quantized(model) else None
    if is_quantized(model):
        if previous is not None and XTCConfig.from_dict(previous).canonical() == config.canonical():
            return model
        raise ConfigError(f"the model is already quantized ({previous or 'by xtc'}); quantize a fresh copy of the "
                          f"full-precision model with {config}")
    layers = find_layers(model)
    for block in layers:
        for parent in list(block.modules()):
            for name, child in list(parent.named_children()):
                if type(child) is nn.Linear and (not config.modules or name in config.modules):
                    setattr(parent, name, QuantLinear(child, config.weight_bits, config.scheme,
                                                      config.groups_for(child), config.activation_bits))
    if config.quantize_embeddings:
        emb = model.get_input_embeddings()
        if type(emb) is nn.Embedding:
            model.set_input_embeddings(QuantEmbedding(emb, config.weight_bits, config.scheme))
    if getattr(model, "config", None) is not None:
        model.config.xtc = config.to_dict()  # travels with save_pretrained's config.json
    return model


def is_quantized(model: nn.Module) -> bool:
    return any(isinstance(m, (QuantLinear, QuantEmbedding)) for m in model.modules())


def quantized_modules(model: nn.Module) -> dict[str, nn.Module]:
    return {n: m for n, m in model.named_modules() if isinstance(m, (QuantLinear, QuantEmbedding))}


def reduce_layers(model: nn.Module, keep: Sequence[int]) -> nn.Module:
    """A new model whose transformer blocks are copies of ``model``'s blocks ``keep`` (0-based),
    with embeddings, pooler and head copied too. ``model`` is left untouched.

    The layer map is recorded in ``config.xtc_layer_map`` (student block i <- teacher block keep[i]),
    which distillation uses to pair student and teacher layers.
    """
    n = len(find_layers(model))
    keep = [int(i) for i in keep]
    if not keep:
        raise ConfigError("--layers is empty: name at least one layer to keep, e.g. 1,3,5")
    bad = [i for i in keep if not 0 <= i < n]
    if bad:
        raise ConfigError(f"layers {bad} out of range: the model has {n} layers, numbered 0..{n - 1}")
    if len(set(keep)) != len(keep):
        raise ConfigError(f"layers {keep} repeat an index; name each layer once")
    student = copy.deepcopy(model)
    layers = find_layers(student)
    _set_layers(student, nn.ModuleList([layers[i] for i in keep]))
    for new_index, block in enumerate(find_layers(student)):
        for m in block.modules():  # transformers' attention modules know their own index (caches)
            if hasattr(m, "layer_idx"):
                m.layer_idx = new_index
    cfg = student.config
    previous = getattr(cfg, "xtc_layer_map", None) or list(range(n))
    cfg.xtc_layer_map = [previous[i] for i in keep]
    for attr in ("num_hidden_layers", "n_layers", "num_layers"):
        if hasattr(cfg, attr):
            setattr(cfg, attr, len(keep))
            break
    if hasattr(cfg, "layer_types") and isinstance(cfg.layer_types, list):
        cfg.layer_types = [cfg.layer_types[i] for i in keep]
    return student


def layer_map(model: nn.Module, teacher: Optional[nn.Module] = None) -> list[int]:
    """Teacher layer index for each student layer.

    The map stored by ``reduce_layers`` if any; else, for a student of another depth than
    ``teacher`` (e.g. a smaller pre-distilled model), the uniform map t_i = (i + 1) * T / S - 1
    (TinyBERT's choice: student layer i learns from every (T/S)-th teacher layer); else identity.
    """
    stored = getattr(getattr(model, "config", None), "xtc_layer_map", None)
    if stored:
        return list(stored)
    n_student = len(find_layers(model))
    n_teacher = len(find_layers(teacher)) if teacher is not None else n_student
    return [(i + 1) * n_teacher // n_student - 1 for i in range(n_student)]


def load_quantized(path: str | Path, model_class=None, **kwargs) -> nn.Module:
    """Load a checkpoint written by xtc (latent weights + ``config.xtc``) and re-apply quantize_.

    A checkpoint without an ``xtc`` entry in its config loads as the plain full-precision model.
    """
    if model_class is None:
        from transformers import AutoModelForSequenceClassification as model_class
    report_logger = logging.getLogger("transformers.modeling_utils")
    report_logger.addFilter(_hide_step_size_report)
    try:
        model = model_class.from_pretrained(path, **kwargs)
    finally:
        report_logger.removeFilter(_hide_step_size_report)
    stored = getattr(model.config, "xtc", None)
    if stored:
        quantize_(model, XTCConfig.from_dict(stored))
        _load_learned_state(model, path)
    return model


def _hide_step_size_report(record: logging.LogRecord) -> bool:
    """Drop transformers' load report when its only entries are the learned step sizes (restored
    by :func:`_load_learned_state` right after), which it would list as UNEXPECTED."""
    message = record.getMessage()
    if "LOAD REPORT" not in message:
        return True
    rows = [line for line in message.splitlines() if "|" in line and not line.startswith(("Key", "-"))]
    return not rows or not all("step_size" in line and "UNEXPECTED" in line for line in rows)


def _load_learned_state(model: nn.Module, path: str | Path) -> None:
    """Restore the parameters quantize_ created (LSQ's ``step_size``) from the checkpoint's weights.

    ``from_pretrained`` runs before quantize_ re-creates them, so it skips them as unexpected keys;
    they are read here from the checkpoint files (safetensors, sharded or not, or a .bin).
    """
    names = [n for n, _ in model.named_parameters() if n.endswith(".step_size")]
    if not names:
        return
    import torch
    from transformers.utils import cached_file

    def resolve(filename):
        return cached_file(str(path), filename, _raise_exceptions_for_missing_entries=False)

    tensors: dict = {}
    index = resolve("model.safetensors.index.json")
    single = resolve("model.safetensors")
    if index or single:
        from safetensors import safe_open

        files = ([resolve(f) for f in sorted(set(json.loads(Path(index).read_text())["weight_map"].values()))]
                 if index else [single])
        for file in files:
            with safe_open(file, framework="pt") as f:
                tensors.update({k: f.get_tensor(k) for k in f.keys() if k.endswith(".step_size")})
    elif resolve("pytorch_model.bin"):
        state = torch.load(resolve("pytorch_model.bin"), map_location="cpu", weights_only=True)
        tensors = {k: v for k, v in state.items() if k.endswith(".step_size")}
    missing = [n for n in names if n not in tensors]
    if missing:
        raise ModelLoadError(f"{path}: the checkpoint has no learned step sizes for {len(missing)} quantized modules "
                         f"(e.g. {missing[0]}); it was not saved from a model quantized with this scheme")
    params = dict(model.named_parameters())
    with torch.no_grad():
        for n in names:
            params[n].copy_(tensors[n])
