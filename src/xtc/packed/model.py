"""Save and load a whole model in the packed format (the modules that compute from it: ``.modules``).

``save_packed`` takes a model quantized by xtc (the fake-quant training model of
``xtc.load_quantized``, or a model loaded by ``load_packed``) and writes its integer codes, obtained
with the *same* code functions the quantizers use in training, so the packed model computes what
the training model computed. ``load_packed`` rebuilds the transformers model with parameters on the
``meta`` device (nothing allocated), puts packed modules in place of the quantized ones and loads the
few full-precision tensors: the resident weights are the packed ones.
"""

from __future__ import annotations

import ctypes
import json
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .. import quantizers as Q
from ..config import PACKABLE_WEIGHT_BITS
from ..errors import ConfigError, InputError
from ..modules import QuantEmbedding, QuantLinear
from . import bitpack, kernels
from . import format as fmt
from .format import PackedFormatError
from .lean_blocks import use_lean_blocks
from .modules import PackedEmbedding, PackedFFN, PackedLinear

# Full-precision tensors that the int8_extras option stores as 8-bit (per-row symmetric): the two
# largest ones left (BERT-base: position embeddings 512 x 768, pooler 768 x 768).
INT8_EXTRAS = ("position_embeddings.weight", "pooler.dense.weight")
FP16_MAX = 65504.0


# ------------------------------------------------------------------------------------------------
# Codes of a quantization-aware module: the quantizers' own *_codes functions
# ------------------------------------------------------------------------------------------------
def _codes(module: nn.Module, groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(codes [groups, n], scales [groups]) exactly as the module's quantizer computes them, from the
    ``codes`` function its scheme registered (``register_weight_quantizer(..., codes=...)``)."""
    scheme, bits, w = module.weight_scheme, module.weight_bits, module.weight.detach().float()
    to_codes = Q.scheme_codes(scheme)
    if to_codes is None or bits not in PACKABLE_WEIGHT_BITS:
        raise ConfigError(f"the packed format holds 1-bit and 2-bit weights of the schemes that register their "
                          f"codes ({', '.join(Q.packable_schemes())}); this model uses {scheme!r} with {bits} bits")
    codes, scales = to_codes(w, bits, groups, getattr(module, "step_size", None))
    return codes, scales.float()


def _kind(codes: torch.Tensor, bits: int) -> str:
    """binary for 1-bit weights, ternary for 2-bit; :func:`bitpack.pack` checks the code values."""
    if bits in PACKABLE_WEIGHT_BITS:
        return "binary" if bits == 1 else "ternary"
    raise ConfigError(f"only 1-bit and 2-bit weights pack, got {bits} bits")


def _int8_rows(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-row int8: scale = max|row| / 127 (0 for an all-zero row)."""
    t = t.detach().float()
    scale = t.abs().amax(dim=1) / 127
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    return torch.round(t / safe[:, None]).clamp(-127, 127).to(torch.int8), scale


# ------------------------------------------------------------------------------------------------
# save_packed
# ------------------------------------------------------------------------------------------------
def save_packed(model: nn.Module, path: str | Path, fp_dtype: str = "fp16", int8_extras: bool = False,
                ternary_packing: str = "base3", tokenizer=None, teacher_num_layers: int | None = None) -> Path:
    """Write ``model`` (quantized by xtc) as one packed safetensors file.

    ``path``: a folder (gets ``model.xtc.safetensors``, plus the tokenizer when given) or a
    ``.safetensors`` file name. ``fp_dtype``: ``fp16`` (default) or ``fp32`` for the full-precision
    tensors. ``int8_extras``: position embeddings and pooler weight as per-row int8.
    ``ternary_packing``: ``base3`` (1.6 bits/weight, default) or ``2bit``. ``teacher_num_layers``:
    depth of the model this one was reduced from, recorded for size reports.
    Returns the file written.
    """
    if fp_dtype not in fmt.FLOAT_DTYPES:
        raise ConfigError(f"fp_dtype must be one of {', '.join(fmt.FLOAT_DTYPES)}, got {fp_dtype!r}")
    if ternary_packing not in ("base3", "2bit"):
        raise ConfigError(f"ternary_packing must be 'base3' or '2bit', got {ternary_packing!r}")
    xtc_cfg = getattr(getattr(model, "config", None), "xtc", None)
    if not xtc_cfg:
        raise InputError("the model is not quantized by xtc (its config has no 'xtc' entry): quantize it with "
                         "xtc.quantize_ or load a checkpoint with xtc.load_quantized")
    from ..surgery import XTCConfig

    xtc_cfg = XTCConfig.from_dict(dict(xtc_cfg)).to_dict()
    tensors: dict[str, torch.Tensor] = {}
    entries: dict[str, dict] = {}
    done: set[str] = set()  # state-dict names already written

    def put_quantized(name: str, codes: torch.Tensor, scales: torch.Tensor, kind: str, role: str):
        packing = "bits" if kind == "binary" else ternary_packing
        entries[name] = {"kind": kind, "shape": list(codes.shape), "groups": scales.numel(),
                         "packing": packing, "role": role}
        tensors[f"{name}.codes"] = bitpack.pack(codes, packing)
        tensors[f"{name}.scales"] = scales.float().contiguous()

    def put_float(name: str, t: torch.Tensor):
        t = t.detach()
        if int8_extras and t.dim() == 2 and name.endswith(INT8_EXTRAS):
            codes, scales = _int8_rows(t)
            entries[name] = {"kind": "int8", "shape": list(t.shape)}
            tensors[f"{name}.codes"], tensors[f"{name}.scales"] = codes, scales
            return
        dtype = fp_dtype
        if dtype == "fp16" and t.numel() and float(t.float().abs().max()) > FP16_MAX:
            warnings.warn(f"{name}: values beyond the float16 range, kept in float32", stacklevel=3)
            dtype = "fp32"
        entries[name] = {"kind": "float", "shape": list(t.shape), "dtype": dtype}
        tensors[name] = t.to(fmt.FLOAT_DTYPES[dtype]).contiguous()

    fused = {}  # id(PackedLinear inside a PackedFFN) -> its original name
    for mod in model.modules():
        if isinstance(mod, PackedFFN):
            fused[id(mod.up)], fused[id(mod.down)] = mod.source_names
    for mname, mod in model.named_modules():
        prefix = f"{mname}." if mname else ""
        if isinstance(mod, PackedLinear) and id(mod) in fused:
            prefix = f"{fused[id(mod)]}."
        if isinstance(mod, QuantLinear):
            codes, scales = _codes(mod, mod.groups)
            codes = codes.reshape(mod.out_features, mod.in_features)
            put_quantized(f"{prefix}weight", codes, scales, _kind(codes, mod.weight_bits), "linear")
            done.update({f"{prefix}weight", f"{prefix}step_size"})
        elif isinstance(mod, QuantEmbedding):
            codes, scales = _codes(mod, mod.num_embeddings)
            codes = codes.reshape(mod.num_embeddings, mod.embedding_dim)
            put_quantized(f"{prefix}weight", codes, scales, _kind(codes, mod.weight_bits), "embedding")
            done.update({f"{prefix}weight", f"{prefix}step_size"})
        elif isinstance(mod, PackedLinear):
            put_quantized(f"{prefix}weight", mod.codes(), mod.scales, mod.kind, "linear")
            if mod.has_bias:
                put_float(f"{prefix}bias", mod.bias)
        elif isinstance(mod, PackedEmbedding):
            put_quantized(f"{prefix}weight", mod.codes(), mod.scales, mod.kind, "embedding")
    quantized_ptrs = {p.data_ptr() for n, p in model.named_parameters() if n in done}
    for name, t in model.state_dict().items():
        if name in done:
            continue
        if not t.is_floating_point():
            continue  # integer buffers (position ids...) are rebuilt by the model's constructor
        if t.data_ptr() in quantized_ptrs:
            raise InputError(f"{name} shares its storage with a quantized weight (tied weights): not supported")
        put_float(name, t)

    config = json.loads(model.config.to_json_string(use_diff=False))
    meta = {
        "xtc_version": _version(),
        "xtc": xtc_cfg,
        "config": config,
        "model_class": type(model).__name__,
        "layer_map": _layer_map(model),
        "num_layers": _num_layers(model),
    }
    if teacher_num_layers:
        meta["teacher_num_layers"] = int(teacher_num_layers)
    if hasattr(model, "pooler") and model.pooler is None:  # a sentence embedder: built without its pooler
        meta["no_pooler"] = True
    file = fmt.write(path, tensors, entries, meta)
    if tokenizer is not None:
        tokenizer.save_pretrained(str(file.parent))
    return file


def _version() -> str:
    from .. import __version__

    return __version__


def _num_layers(model: nn.Module) -> int:
    """Transformer blocks of ``model``: found by structure in a training model; a packed model has no
    nn.Linear left in its blocks, so its config says."""
    from ..surgery import UnsupportedModelError, find_layers

    try:
        return len(find_layers(model))
    except UnsupportedModelError:
        cfg = model.config
        return int(getattr(cfg, "num_hidden_layers", None) or getattr(cfg, "n_layers", None) or cfg.num_layers)


def _layer_map(model: nn.Module) -> list[int]:
    stored = getattr(getattr(model, "config", None), "xtc_layer_map", None)
    return list(stored) if stored else list(range(_num_layers(model)))


# ------------------------------------------------------------------------------------------------
# load_packed
# ------------------------------------------------------------------------------------------------
def _build_config(info: dict):
    from transformers import CONFIG_MAPPING

    d = dict(info["config"])
    file = info["file"]
    model_type = d.get("model_type")
    if model_type not in CONFIG_MAPPING:
        raise PackedFormatError(f"{file}: unknown architecture {model_type!r} in the metadata")
    try:
        return CONFIG_MAPPING[model_type].from_dict(d)
    except Exception as e:  # noqa: BLE001
        raise PackedFormatError(f"{file}: corrupted architecture config ({e})") from None


def _model_class(info: dict):
    import transformers

    name = info.get("model_class") or "AutoModelForSequenceClassification"
    cls = getattr(transformers, name, None) if name.isidentifier() else None
    if cls is None or not (isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel)):
        raise PackedFormatError(f"{info['file']}: unknown model class {name!r} (not a transformers model)")
    return cls


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attr, module)


def _set_tensor(model: nn.Module, name: str, t: torch.Tensor, file: Path) -> None:
    """Put ``t`` in place of parameter/buffer ``name`` (a meta tensor of the same shape)."""
    parent, _, attr = name.rpartition(".")
    try:
        mod = model.get_submodule(parent) if parent else model
    except AttributeError:
        mod = None
    slot = None
    if mod is not None:
        slot = mod._parameters if attr in mod._parameters else mod._buffers if attr in mod._buffers else None
    if slot is None or slot[attr] is None:
        raise PackedFormatError(f"{file}: tensor {name} has no place in a {type(model).__name__}")
    if tuple(slot[attr].shape) != tuple(t.shape):
        raise PackedFormatError(f"{file}: tensor {name} has shape {list(t.shape)}, the architecture expects "
                                f"{list(slot[attr].shape)}")
    slot[attr] = nn.Parameter(t, requires_grad=False) if slot is mod._parameters else t


def _malloc_trim() -> None:
    """Hand freed heap memory back to the OS (glibc keeps large freed chunks otherwise), so that the
    resident size after loading reflects the model, not the decoding temporaries."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def load_packed(path: str | Path) -> nn.Module:
    """The transformers model of a packed file (or folder), in eval mode, ready for inference:
    quantized linears are :class:`PackedLinear`, the word embedding a :class:`PackedEmbedding`.
    Any file that cannot give the model it describes raises :class:`PackedFormatError`."""
    entries, tensors, info = fmt.read(path)
    try:
        return _build(entries, tensors, info)
    except PackedFormatError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, RuntimeError) as e:
        # The file passed its checks but does not make a model (crafted metadata): still one clear line.
        raise PackedFormatError(f"{info['file']}: does not describe a loadable model "
                                f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None


def _build(entries: dict, tensors: dict, info: dict) -> nn.Module:
    from accelerate import init_empty_weights

    file = info["file"]
    config = _build_config(info)
    cls = _model_class(info)
    # fused attention where the family has it (QK^T and attention.V are not quantized anyway); MPNet and
    # DeBERTa-v2 compute attention themselves and transformers refuses SDPA for them
    config._attn_implementation = "sdpa" if getattr(cls, "_supports_sdpa", False) else "eager"
    with init_empty_weights(include_buffers=False):  # parameters on meta: nothing allocated yet
        model = cls(config)
    if info.get("no_pooler") is True:
        model.pooler = None
    activation_bits = info["xtc"].get("activation_bits")
    consumed: set[str] = set()
    for name, entry in entries.items():
        if entry["kind"] not in ("binary", "ternary"):
            continue
        mname = name[: -len(".weight")] if name.endswith(".weight") else None
        try:
            old = model.get_submodule(mname) if mname else None
        except AttributeError:
            old = None
        if old is None:
            raise PackedFormatError(f"{file}: tensor {name} has no place in a {type(model).__name__}")
        rows, cols = entry["shape"]
        codes_packed, scales = tensors[f"{name}.codes"], tensors[f"{name}.scales"]
        if entry.get("role") == "embedding":
            if not isinstance(old, nn.Embedding) or (old.num_embeddings, old.embedding_dim) != (rows, cols):
                raise PackedFormatError(f"{file}: {name} ({rows} x {cols}) does not fit the architecture's embedding")
            if scales.numel() != rows:
                raise PackedFormatError(f"{file}: {name}.scales must hold one scale per row")
            new = PackedEmbedding(codes_packed, scales, cols, entry["packing"], entry["kind"], old.padding_idx)
        else:
            if not isinstance(old, nn.Linear) or (old.out_features, old.in_features) != (rows, cols):
                raise PackedFormatError(f"{file}: {name} ({rows} x {cols}) does not fit a linear of the architecture")
            bias_name = f"{mname}.bias"
            bias = None
            if old.bias is not None:
                if bias_name not in entries:
                    raise PackedFormatError(f"{file}: missing tensor {bias_name}")
                bias = _float_tensor(entries[bias_name], tensors, bias_name)
                if tuple(bias.shape) != (rows,):
                    raise PackedFormatError(f"{file}: tensor {bias_name} has shape {list(bias.shape)}, expected [{rows}]")
                consumed.add(bias_name)
            codes = bitpack.unpack(codes_packed, cols, entry["packing"])
            new = PackedLinear(codes, scales, bias, entry["kind"], activation_bits)
        _set_module(model, mname, new)
        consumed.add(name)
    for name, entry in entries.items():
        if name not in consumed:
            _set_tensor(model, name, _float_tensor(entry, tensors, name), file)
    _fuse_ffn(model)
    _share_inputs(model)
    use_lean_blocks(model)
    missing = [n for n, p in model.named_parameters() if p.is_meta] + [n for n, b in model.named_buffers() if b.is_meta]
    if missing:
        raise PackedFormatError(f"{file}: missing tensor {missing[0]}")
    del tensors
    model.eval()
    model.requires_grad_(False)
    if activation_bits == 8:
        kernels.extension()  # build or load the kernels now, not in the first forward
    _malloc_trim()
    return model


def _is_exact_gelu(act) -> bool:
    return act is F.gelu or isinstance(act, nn.GELU) and act.approximate == "none" or (
        type(act).__name__ == "GELUActivation" and getattr(act, "act", None) is F.gelu)


def _fuse_ffn(model: nn.Module) -> None:
    """Fuse each block's feed-forward (BERT layout: intermediate.dense + exact GELU, output.dense)
    into one :class:`PackedFFN` when both linears run on the kernel."""
    if kernels.extension() is None:
        return
    names = {id(m): n for n, m in model.named_modules()}
    for block in list(model.modules()):
        inter, out = getattr(block, "intermediate", None), getattr(block, "output", None)
        up, down = getattr(inter, "dense", None), getattr(out, "dense", None)
        if not (isinstance(up, PackedLinear) and isinstance(down, PackedLinear)):
            continue
        if not (up.uses_kernel() and down.uses_kernel() and _is_exact_gelu(getattr(inter, "intermediate_act_fn", None))
                and down.in_features == up.out_features):
            continue
        block.intermediate = PackedFFN(up, down, (names[id(up)], names[id(down)]))
        out.dense = nn.Identity()


# Linears that read the same input in one forward, by the names each family gives them. The output
# projection is excluded by name: in MPNet it sits beside q/k/v but reads the attention context.
SHARED_INPUT_NAMES = ({"query", "key", "value"}, {"q", "k", "v"}, {"q_lin", "k_lin", "v_lin"},
                      {"query_proj", "key_proj", "value_proj"})


def _share_inputs(model: nn.Module) -> None:
    """Packed linears that are siblings reading the same input (query, key, value of one attention
    block) share one activation quantization and one kernel call per forward."""
    for gid, parent in enumerate(model.modules()):
        kids = {n: m for n, m in parent.named_children() if isinstance(m, PackedLinear)}
        for names in SHARED_INPUT_NAMES:
            members = [kids[n] for n in sorted(names) if n in kids]
            if (len(members) == len(names) and len({m.in_features for m in members}) == 1
                    and all(m.uses_kernel() for m in members)):
                for m in members:
                    m.share_group = gid
                    m.__dict__["_share_members"] = members


def _float_tensor(entry: dict, tensors: dict, name: str) -> torch.Tensor:
    """A float or int8 entry as a float32 tensor (compute happens in float32 on CPU)."""
    if entry["kind"] == "int8":
        return tensors[f"{name}.codes"].float() * tensors[f"{name}.scales"][:, None]
    if entry["kind"] == "float":
        return tensors[name].float().clone()
    raise PackedFormatError(f"tensor {name} is {entry['kind']}, expected a full-precision tensor")


def packed_weight_bytes(model: nn.Module) -> int:
    """Bytes of every parameter and buffer of ``model`` (what its weights keep resident)."""
    seen, total = set(), 0
    for t in list(model.parameters()) + list(model.buffers()):
        if t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            total += t.numel() * t.element_size()
    return total


def is_packed(model: nn.Module) -> bool:
    return any(isinstance(m, (PackedLinear, PackedEmbedding)) for m in model.modules())


__all__ = [
    "INT8_EXTRAS",
    "PackedEmbedding",
    "PackedFFN",
    "PackedFormatError",
    "PackedLinear",
    "is_packed",
    "load_packed",
    "packed_weight_bytes",
    "save_packed",
]
