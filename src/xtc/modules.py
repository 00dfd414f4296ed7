"""Quantization-aware modules: a linear and an embedding that keep the latent FP32 weight.

Both subclass the torch module they replace and *reuse its parameters* (the very same
``nn.Parameter`` objects), so the state-dict keys do not change: a checkpoint of a quantized model
is an ordinary transformers checkpoint holding the latent weights, and the optimizer keeps
training those latent weights. Quantization happens on the fly in ``forward``.

The one addition: a scheme with learned state (LSQ) gives each module a ``step_size`` parameter,
a new state-dict key that :func:`xtc.load_quantized` restores after re-applying quantization.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .quantizers import get_weight_quantizer, quantize_activations, weight_quantizer_state_init


def _learned_state(module: nn.Module, weight: torch.Tensor, bits: int, scheme: str, groups: int) -> None:
    """Give ``module`` the ``step_size`` parameter (one value per group) of a scheme with learned state
    (LSQ); stateless schemes get ``step_size = None``, which adds nothing to the state dict."""
    init = weight_quantizer_state_init(scheme)
    step = None if init is None else nn.Parameter(init(weight.detach(), bits, groups))
    module.register_parameter("step_size", step)


def _state_kwargs(module: nn.Module, rows: torch.Tensor | None = None) -> dict:
    if module.step_size is None:
        return {}
    return {"state": module.step_size if rows is None else module.step_size[rows]}


class QuantLinear(nn.Linear):
    """``y = quant_a(x) @ quant_w(W)^T + b`` with the latent ``W`` and ``b`` kept in FP32."""

    def __init__(self, linear: nn.Linear, weight_bits: int, weight_scheme: str, groups: int,
                 activation_bits: int | None):
        nn.Module.__init__(self)  # no fresh parameters: the originals are adopted below
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight, self.bias = linear.weight, linear.bias
        self.weight_bits, self.weight_scheme = weight_bits, weight_scheme
        self.groups, self.activation_bits = groups, activation_bits
        self._quantize_weight = get_weight_quantizer(weight_scheme)
        _learned_state(self, self.weight, weight_bits, weight_scheme, groups)
        with torch.no_grad():
            self.quantized_weight()  # validate bits and groups now

    def quantized_weight(self) -> torch.Tensor:
        return self._quantize_weight(self.weight, bits=self.weight_bits, groups=self.groups,
                                     **_state_kwargs(self))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.activation_bits is not None:
            x = quantize_activations(x, self.activation_bits)
        return F.linear(x, self.quantized_weight(), self.bias)

    def extra_repr(self) -> str:
        return (f"{self.in_features}, {self.out_features}, W{self.weight_bits} ({self.weight_scheme}, "
                f"groups={self.groups}), A{self.activation_bits or 'fp'}")


class QuantEmbedding(nn.Embedding):
    """Word embedding quantized with one scale per row (per token).

    Per-row statistics only depend on the row itself, so quantizing the looked-up rows is exactly
    the same as quantizing the whole table and then looking up, at a fraction of the cost.
    """

    def __init__(self, embedding: nn.Embedding, weight_bits: int, weight_scheme: str):
        nn.Module.__init__(self)
        for name in ("num_embeddings", "embedding_dim", "padding_idx", "max_norm", "norm_type",
                     "scale_grad_by_freq", "sparse"):
            setattr(self, name, getattr(embedding, name))
        self.weight = embedding.weight
        self.weight_bits, self.weight_scheme = weight_bits, weight_scheme
        self._quantize_weight = get_weight_quantizer(weight_scheme)
        _learned_state(self, self.weight, weight_bits, weight_scheme, self.num_embeddings)
        with torch.no_grad():
            self._quantize_weight(self.weight[:1], bits=weight_bits, groups=1,
                                  **_state_kwargs(self, torch.zeros(1, dtype=torch.long)))  # validate bits

    def quantized_weight(self) -> torch.Tensor:
        """The whole table, quantized row by row (used by export, not by forward)."""
        return self._quantize_weight(self.weight, bits=self.weight_bits, groups=self.num_embeddings,
                                     **_state_kwargs(self))

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        rows = F.embedding(input_ids, self.weight, self.padding_idx, self.max_norm, self.norm_type,
                           self.scale_grad_by_freq, self.sparse)
        flat = rows.reshape(-1, self.embedding_dim)
        if flat.numel() == 0:
            return rows
        q = self._quantize_weight(flat, bits=self.weight_bits, groups=flat.shape[0],  # straight-through
                                  **_state_kwargs(self, input_ids.reshape(-1)))
        return q.reshape(rows.shape)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, W{self.weight_bits} ({self.weight_scheme}, per row)"
