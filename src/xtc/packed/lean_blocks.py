"""A lean forward for transformer blocks whose linears all run on the packed kernels.

Once the linears are packed, a block's own arithmetic at batch 1 is small, and transformers' generic
block code becomes a visible share of it: argument-deprecation wrappers that inspect signatures on
every call, the attention-interface dispatch, the feed-forward chunking helper, a dozen module calls
per block (the ``packed_w1a8_hf_blocks`` variant of ``benchmarks/bench_inference.py`` measures the
difference). The lean forward does the same arithmetic in
the same order (query/key/value in one kernel call, SDPA, attention output + residual + LayerNorm,
fused FFN + residual + LayerNorm). On hosts with AVX-512 attention and residual + LayerNorm run in xtc's
own kernels (``float_kernels``): the same formulas, another order of float operations, and the whole
block is then one call into C++ (``kernels.encoder_block``: no return to Python between its ops, and
the LayerNorm before the FFN quantizes its rows for it in the same pass). With
``float_kernels=False`` the outputs equal transformers' to the last bit; tests compare the two.

Installed by ``load_packed`` on blocks of the BERT layout (BERT, RoBERTa, XLM-R, ELECTRA, CamemBERT:
the same block code in transformers) and of MPNet's (its own eager attention with the relative-position
bias that the encoder computes once and hands to every block; the lean path repeats that arithmetic
op for op, and the encoder keeps that bias per sequence length at inference) by giving each block a
subclass of its own class whose
``forward`` takes the lean path, so module names, state dict, ``isinstance`` and transformers'
hidden-state capture (a hook on the block itself) stay as they were. Anything the lean path does not
cover goes to transformers' forward: training mode, cross-attention or a cache, an attention
implementation other than SDPA, or a hook on any module inside the block (a user's hook, or
transformers' own attention capture once ``output_attentions`` was asked for).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from . import kernels
from .modules import PackedFFN, PackedLinear

# Self-attention classes whose forward is exactly: q/k/v linears, heads split, attention interface
# with ``scaling``, heads merged (transformers' BERT code, copied unchanged into these families).
BERT_STYLE_ATTENTION = ("BertSelfAttention", "RobertaSelfAttention", "XLMRobertaSelfAttention",
                        "ElectraSelfAttention", "CamembertSelfAttention")

_lean_classes: dict[tuple[type, str], type] = {}


def _is_lean_capable(block: nn.Module) -> bool:
    """A BERT-layout block whose six linears run on the kernels (q/k/v sharing one call, FFN fused)."""
    attention = getattr(block, "attention", None)
    attn_self, attn_out = getattr(attention, "self", None), getattr(attention, "output", None)
    output = getattr(block, "output", None)
    if type(attn_self).__name__ not in BERT_STYLE_ATTENTION or attn_out is None or output is None:
        return False
    qkv = [getattr(attn_self, n, None) for n in ("query", "key", "value")]
    linears = qkv + [getattr(attn_out, "dense", None)]
    return (all(isinstance(m, PackedLinear) and m.uses_kernel() for m in linears)
            and isinstance(getattr(block, "intermediate", None), PackedFFN)
            and isinstance(getattr(output, "dense", None), nn.Identity)
            and isinstance(getattr(attn_out, "LayerNorm", None), nn.LayerNorm)
            and isinstance(getattr(output, "LayerNorm", None), nn.LayerNorm)
            and not getattr(attn_self, "is_causal", False)
            and not getattr(block, "add_cross_attention", False)
            and not getattr(block, "chunk_size_feed_forward", 0))


def _is_lean_capable_mpnet(block: nn.Module) -> bool:
    """An MPNet block (attention.attn with q/k/v/o, attention.LayerNorm) whose linears run on the kernels."""
    attention = getattr(block, "attention", None)
    attn = getattr(attention, "attn", None)
    output = getattr(block, "output", None)
    if type(attn).__name__ != "MPNetSelfAttention" or output is None:
        return False
    linears = [getattr(attn, n, None) for n in ("q", "k", "v", "o")]
    return (all(isinstance(m, PackedLinear) and m.uses_kernel() for m in linears)
            and isinstance(getattr(block, "intermediate", None), PackedFFN)
            and isinstance(getattr(output, "dense", None), nn.Identity)
            and isinstance(getattr(attention, "LayerNorm", None), nn.LayerNorm)
            and isinstance(getattr(output, "LayerNorm", None), nn.LayerNorm))


def _has_hooks(module: nn.Module) -> bool:
    return bool(module._forward_hooks or module._forward_pre_hooks)


def _lean_forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None,
                  encoder_hidden_states: torch.Tensor | None = None, *args, **kwargs):
    attn_self = self.attention.self
    if (self.training or encoder_hidden_states is not None or args
            or kwargs.get("cache") is not None or kwargs.get("past_key_values") is not None
            or attn_self.config._attn_implementation != "sdpa"
            or any(_has_hooks(m) for m in self._xtc_inner_modules)
            or nn.modules.module._global_forward_hooks or nn.modules.module._global_forward_pre_hooks):
        return super(type(self), self).forward(hidden_states, attention_mask, encoder_hidden_states,
                                               *args, **kwargs)
    b, t, h = hidden_states.shape
    heads, head_size = attn_self.num_attention_heads, attn_self.attention_head_size
    attn_out = self.attention.output
    if self._xtc_float_kernels and kernels.float_ops(head_size, attention_mask):  # xtc's AVX-512 kernels
        return kernels.encoder_block(hidden_states, b, heads, attn_self.scaling, attention_mask, None,
                                     [attn_self.query, attn_self.key, attn_self.value], attn_out.dense,
                                     attn_out.LayerNorm, self.intermediate, self.output.LayerNorm).view(b, t, h)
    qkv = kernels.packed_linears(hidden_states, [attn_self.query, attn_self.key, attn_self.value])
    q, k, v = (y.view(b, t, heads, head_size).transpose(1, 2) for y in qkv)
    context = F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask, scale=attn_self.scaling)
    context = context.transpose(1, 2).reshape(b, t, h)
    attended = attn_out.LayerNorm(attn_out.dense(context) + hidden_states)
    return self.output.LayerNorm(self.intermediate(attended) + attended)


def _lean_mpnet_forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None,
                        position_bias: torch.Tensor | None = None, output_attentions: bool = False, *args, **kwargs):
    # transformers' MPNetLayer -> MPNetAttention -> MPNetSelfAttention, in the same order of operations
    # (so the outputs are equal to the last bit), with q/k/v in one kernel call and the FFN fused
    if (self.training or output_attentions or args or any(_has_hooks(m) for m in self._xtc_inner_modules)
            or nn.modules.module._global_forward_hooks or nn.modules.module._global_forward_pre_hooks):
        return super(type(self), self).forward(hidden_states, attention_mask, position_bias,
                                               output_attentions, *args, **kwargs)
    attn = self.attention.attn
    b, t, _ = hidden_states.shape
    head_size = attn.attention_head_size
    if self._xtc_float_kernels and kernels.float_ops(head_size, attention_mask, position_bias):
        return (kernels.encoder_block(hidden_states, b, attn.num_attention_heads, 1 / math.sqrt(head_size),
                                      attention_mask, position_bias, [attn.q, attn.k, attn.v], attn.o,
                                      self.attention.LayerNorm, self.intermediate, self.output.LayerNorm).view(b, t, -1),)
    qkv = kernels.packed_linears(hidden_states, [attn.q, attn.k, attn.v])
    q, k, v = (y.view(b, t, -1, head_size).transpose(1, 2) for y in qkv)
    scores = torch.matmul(q, k.transpose(-1, -2))
    scores = scores / math.sqrt(head_size)
    if position_bias is not None:
        scores += position_bias
    if attention_mask is not None:
        scores = scores + attention_mask
    context = torch.matmul(F.softmax(scores, dim=-1), v)
    context = context.permute(0, 2, 1, 3).contiguous().view(b, t, attn.all_head_size)
    attended = self.attention.LayerNorm(attn.o(context) + hidden_states)
    return (self.output.LayerNorm(self.intermediate(attended) + attended),)


_LAYOUTS = ((_is_lean_capable, _lean_forward), (_is_lean_capable_mpnet, _lean_mpnet_forward))


def _cached_position_bias(self, x: torch.Tensor, position_ids: torch.Tensor | None = None, num_buckets: int = 32):
    # MPNet's relative-position bias depends only on the sequence length and the bias table: at batch 1
    # its ~15 small tensor ops, gather and [1, H, T, T] copy took ~5 % of a packed 5-layer forward.
    # Cached per length (and per version of the table, so that an edited table is seen), returned as
    # transformers returns it, [B, H, T, T], but as a stride-0 view over the batch (read-only everywhere).
    if self.training or position_ids is not None or torch.is_grad_enabled():
        return super(type(self), self).compute_position_bias(x, position_ids, num_buckets)
    table = self.relative_attention_bias.weight
    key = (x.size(1), num_buckets, x.device, table.dtype, id(table), table._version)
    cached = self.__dict__.get("_xtc_position_bias")
    if cached is None or cached[0] != key:
        with torch.inference_mode(False), torch.no_grad():  # a normal tensor, usable outside inference mode
            bias = super(type(self), self).compute_position_bias(x[:1], None, num_buckets)
        self.__dict__["_xtc_position_bias"] = cached = (key, bias)
    return cached[1].expand(x.size(0), -1, -1, -1)


def _is_mpnet_encoder(module: nn.Module) -> bool:
    return type(module).__name__ == "MPNetEncoder" and hasattr(module, "compute_position_bias")


def _lean_class(cls: type, forward, method: str = "forward") -> type:
    if (cls, method) not in _lean_classes:
        _lean_classes[cls, method] = type(cls.__name__, (cls,), {
            method: forward, "__module__": __name__, "_xtc_base_class": cls,
            "__doc__": f"{cls.__name__} with xtc's lean packed {method} (transformers' otherwise)."})
    return _lean_classes[cls, method]


def use_lean_blocks(model: nn.Module, enabled: bool = True, float_kernels: bool = True) -> int:
    """Switch the lean block forward on (or back off) for every capable block of ``model``.
    ``float_kernels``: attention and residual + LayerNorm in xtc's AVX-512 kernels where the host has
    them (faster; equal to transformers' arithmetic to float rounding, which the 8-bit re-quantization
    of the next linear can turn into one code step here and there); False: torch's own operators, so
    that the outputs equal transformers' to the bit. Switching on blocks that are on already only sets
    ``float_kernels``. An MPNet encoder is switched with its blocks (its position bias cached per length
    at inference). Returns the number of blocks switched on or off."""
    switched = 0
    for block in model.modules():
        base = getattr(type(block), "_xtc_base_class", None)
        if _is_mpnet_encoder(block):  # (the switched class keeps the name)
            if enabled and base is None:
                block.__class__ = _lean_class(type(block), _cached_position_bias, "compute_position_bias")
            elif not enabled and base is not None:
                block.__class__ = base
                block.__dict__.pop("_xtc_position_bias", None)
            continue
        forward = next((fw for capable, fw in _LAYOUTS if capable(block)), None) if base is None else None
        if enabled and forward is not None:
            block.__dict__["_xtc_inner_modules"] = [m for m in block.modules() if m is not block]
            block.__class__ = _lean_class(type(block), forward)
            switched += 1
        elif not enabled and base is not None:
            block.__class__ = base
            switched += 1
        if enabled and (base is not None or forward is not None):  # on now: newly or already
            block.__dict__["_xtc_float_kernels"] = float_kernels
    return switched
