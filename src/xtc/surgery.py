"""Model surgery: ``quantize_(model, config)`` and ``reduce_layers(model, keep)``.

The encoder's transformer blocks are found by structure (the ``nn.ModuleList`` of identical blocks
inside the base model), so every encoder family transformers builds the usual way works; what is
quantized inside a block is every ``nn.Linear`` (query/key/value, attention output, FFN up and
down). The word embedding is quantized per row. Everything else (position and token-type
embeddings, LayerNorm, biases, pooler, classifier) stays full precision (docs/method.md, "What is quantized").

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
from pathlib import Path
from typing import Optional, Sequence

from torch import nn

from .config import ROW_GROUPS, XTC_CONFIG_NAME, XTCConfig, module_path_matches  # noqa: F401  (XTCConfig: xtc.surgery.XTCConfig)
from .errors import ConfigError, ModelLoadError, UnsupportedModelError  # noqa: F401  (re-exported: raised here, defined there)
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


def block_linears(layers: nn.ModuleList, config: XTCConfig) -> list[tuple]:
    """``(parent, name, linear, block index, path inside the block)`` of every linear ``config`` quantizes."""
    plan = []
    for index, block in enumerate(layers):
        for path, parent in list(block.named_modules()):
            for name, child in list(parent.named_children()):
                if type(child) is nn.Linear and (not config.modules or name in config.modules):
                    plan.append((parent, name, child, index, f"{path}.{name}" if path else name))
    return plan


def check_module_bits(config: XTCConfig, plan: list[tuple]) -> None:
    """Refuse a ``module_bits`` name that matches none of the linears of ``plan`` (from :func:`block_linears`):
    a misspelt name would silently leave those linears at ``weight_bits``."""
    unmatched = sorted(p for p in config.module_bits
                       if not any(module_path_matches(p, index, path) for *_, index, path in plan))
    if unmatched:
        blocks = len({index for *_, index, _ in plan})
        names = [path for *_, index, path in plan if index == 0]
        raise ConfigError(f"module_bits names {unmatched}, which match no quantized linear of the model's {blocks} "
                          f"blocks; the linears of block 0 are {names} (a name is such a path, a prefix of one "
                          "ending at a dot, or either after a block index counted from 0, e.g. '0.attention')")


def quantize_(model: nn.Module, config: XTCConfig) -> nn.Module:
    """Replace, in place, the linears of every transformer block (and the word embedding) by
    quantization-aware modules that keep the latent weights. Returns ``model`` for chaining.

    A model quantized before is left as it is when ``config`` is the same, and refused otherwise:
    its linears are already quantization-aware, and applying a second config would leave them under
    the first while the model's config claimed the second."""
    if is_quantized(model):
        previous = getattr(getattr(model, "config", None), "xtc", None)
        if previous is not None and XTCConfig.from_dict(previous).canonical() == config.canonical():
            return model
        raise ConfigError(f"the model is already quantized ({previous or 'by xtc'}); quantize a fresh copy of the "
                          f"full-precision model with {config}")
    plan = block_linears(find_layers(model), config)
    check_module_bits(config, plan)
    for parent, name, child, index, path in plan:
        bits, scheme = config.bits_for(index, path)
        setattr(parent, name, QuantLinear(child, bits, scheme, config.groups_for(child), config.activation_bits))
    if config.quantize_embeddings:
        emb = model.get_input_embeddings()
        if type(emb) is nn.Embedding:
            model.set_input_embeddings(QuantEmbedding(emb, config.word_embedding_bits, config.embedding_scheme))
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


def saved_model_class(config):
    """The class a checkpoint was saved from: a sentence embedder (its config records a pooling), the
    transformers class its config names (``architectures``: a token classifier stays one), else a
    sequence classifier."""
    import transformers

    from .embedding import CONFIG_KEY, Pooling, SentenceEncoder

    stored = getattr(config, CONFIG_KEY, None)
    if stored:
        return SentenceEncoder(Pooling.from_dict(dict(stored)))
    names = getattr(config, "architectures", None) or []
    cls = getattr(transformers, names[0], None) if names and str(names[0]).isidentifier() else None
    if isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel):
        return cls
    return transformers.AutoModelForSequenceClassification


def load_quantized(path: str | Path, model_class=None, **kwargs) -> nn.Module:
    """Load a checkpoint written by xtc (latent weights + ``config.xtc``) and re-apply quantize_.

    A checkpoint without an ``xtc`` entry in its config loads as the plain full-precision model.
    ``kwargs`` go to the config (``num_labels``, ``id2label``, ...).
    """
    from transformers import AutoConfig

    from .quantizers import weight_quantizer_state_init

    config = AutoConfig.from_pretrained(path, **kwargs)
    if model_class is None:
        model_class = saved_model_class(config)
    stored = getattr(config, "xtc", None)
    quant = XTCConfig.from_dict(stored) if stored else None
    if quant is None or weight_quantizer_state_init(quant.scheme) is None:
        model = model_class.from_pretrained(path, config=config)
        return quantize_(model, quant) if quant is not None else model
    # A scheme with learned state (LSQ's step sizes): those parameters exist only once quantize_ has
    # run, so the model is built from its config, quantized, and then given the checkpoint's weights.
    # an auto class (or the embedder's loader) builds through from_config, a concrete class by itself
    model = model_class.from_config(config) if hasattr(model_class, "from_config") else model_class(config)
    quantize_(model, quant)
    state = _read_state_dict(path)
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        missing, unexpected = result.missing_keys[:3], result.unexpected_keys[:3]
        raise ModelLoadError(f"{path}: the checkpoint does not match its quantized model (missing {missing}, "
                             f"unexpected {unexpected}); it was not saved from a model quantized with this scheme")
    return model.eval()


def _read_state_dict(path: str | Path) -> dict:
    """Every tensor of a checkpoint (safetensors, sharded or not, or a .bin), local or on the hub."""
    import torch
    from transformers.utils import cached_file

    def resolve(filename):
        return cached_file(str(path), filename, _raise_exceptions_for_missing_entries=False)

    index, single = resolve("model.safetensors.index.json"), resolve("model.safetensors")
    if index or single:
        from safetensors.torch import load_file

        files = ([resolve(f) for f in sorted(set(json.loads(Path(index).read_text())["weight_map"].values()))]
                 if index else [single])
        state: dict = {}
        for file in files:
            state.update(load_file(file))
        return state
    if resolve("pytorch_model.bin"):
        return torch.load(resolve("pytorch_model.bin"), map_location="cpu", weights_only=True)
    raise ModelLoadError(f"{path}: no weights (model.safetensors or pytorch_model.bin)")
