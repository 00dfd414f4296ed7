"""Quantization-aware modules: a linear and an embedding that keep the latent FP32 weight.

Both subclass the torch module they replace and *reuse its parameters* (the very same
``nn.Parameter`` objects), so the state-dict keys do not change: a checkpoint of a quantized model
is an ordinary transformers checkpoint holding the latent weights, and the optimizer keeps
training those latent weights. Quantization happens on the fly in ``forward``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .quantizers import get_weight_quantizer, quantize_activations


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
        self._quantize_weight(self.weight.detach(), bits=weight_bits, groups=groups)  # validate groups now

    def quantized_weight(self) -> torch.Tensor:
        return self._quantize_weight(self.weight, bits=self.weight_bits, groups=self.groups)

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

    def quantized_weight(self) -> torch.Tensor:
        """The whole table, quantized row by row (used by export, not by forward)."""
        return self._quantize_weight(self.weight, bits=self.weight_bits, groups=self.num_embeddings)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        rows = F.embedding(input_ids, self.weight, self.padding_idx, self.max_norm, self.norm_type,
                           self.scale_grad_by_freq, self.sparse)
        flat = rows.reshape(-1, self.embedding_dim)
        if flat.numel() == 0:
            return rows
        q = self._quantize_weight(flat, bits=self.weight_bits, groups=flat.shape[0])  # straight-through
        return q.reshape(rows.shape)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, W{self.weight_bits} ({self.weight_scheme}, per row)"
