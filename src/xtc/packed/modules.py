"""The modules of a packed model: linears, the fused feed-forward and the word embedding, each
computing straight from the packed codes (the C++ kernels of ``.kernels`` where they run, a torch
path otherwise)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import quantizers as Q
from . import bitpack, kernels


class PackedLinear(nn.Module):
    """``y = quant_a(x) @ (alpha * codes)^T + b`` computed from the packed weight.

    Holds the kernel's tile layout (1 bit/weight binary, 2 bits/weight ternary), per-output scales
    and the bias. With 8-bit activations and scales that are constant along rows (one per matrix or
    per row, the usual case) the C++ kernel runs; otherwise (other activation bits, groups smaller
    than a row, no compiler) a torch path computes the same thing from the decoded codes.
    """

    def __init__(self, codes: torch.Tensor, scales: torch.Tensor, bias: torch.Tensor | None, kind: str,
                 activation_bits: int | None):
        super().__init__()
        self.out_features, self.in_features = codes.shape
        self.kind, self.groups, self.activation_bits = kind, scales.numel(), activation_bits
        n, k = codes.shape
        group_size = n * k // self.groups
        # Scales constant along each row: expand them to one per output for the kernel's epilogue.
        rows_per_group = group_size // k if group_size % k == 0 else 0
        row_scales = scales.float().repeat_interleave(rows_per_group) if rows_per_group else torch.ones(n)
        prep = kernels.prepare_weights(codes, row_scales, bias, ternary=(kind == "ternary"))
        self.per_row = bool(rows_per_group)
        self.has_bias = bias is not None
        # Non-persistent: state_dict() stays free of layout details; save_packed reads them explicitly.
        for name, t in prep.items():
            self.register_buffer(name, t, persistent=False)
        self.register_buffer("scales", scales.float().clone(), persistent=False)
        self._codes_cache: torch.Tensor | None = None
        # Set by load_packed for siblings that share their input (query/key/value): (group id, members).
        self.share_group: int | None = None
        self.__dict__["_share_members"] = []  # plain list in __dict__: not registered as submodules

    @property
    def bias(self) -> torch.Tensor | None:
        return self._buffers["bias_p"][: self.out_features] if self.has_bias else None

    def codes(self) -> torch.Tensor:
        """The int8 code matrix ``[out, in]`` (decoded from the tile layout)."""
        return kernels.codes_from_tiles(self.wp, self.out_features, self.in_features)

    def uses_kernel(self) -> bool:
        return self.activation_bits == 8 and self.per_row and kernels.extension() is not None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out_shape = (*x.shape[:-1], self.out_features)
        if self.activation_bits == 8 and self.per_row:
            if self.share_group is not None:
                y = kernels.group_linear(x, self, self._share_members, self.share_group)
            else:
                y = kernels.packed_linear(x, self._buffers, self.out_features)
            if y is not None:
                return y.view(out_shape).to(x.dtype)
        return self._forward_torch(x)

    def _forward_torch(self, x: torch.Tensor) -> torch.Tensor:
        # Fallback: decoded int8 codes are cached (8 bits/weight) rather than decoded per call.
        if self._codes_cache is None:
            self._codes_cache = self.codes()
        codes, x2 = self._codes_cache, x.reshape(-1, self.in_features).float()
        if self.activation_bits == 8 and self.per_row:
            y = kernels.linear_reference(x2, codes, self._buffers["alpha"][: self.out_features], self.bias)
        else:
            if self.activation_bits is not None:
                x2 = Q.quantize_activations(x2, self.activation_bits)
            w = (codes.float().reshape(self.groups, -1) * self.scales[:, None]).reshape(codes.shape)
            y = F.linear(x2, w, self.bias)
        return y.view(*x.shape[:-1], self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        path = "kernel" if self.uses_kernel() else "torch"
        return (f"{self.in_features}, {self.out_features}, {self.kind}, groups={self.groups}, "
                f"A{self.activation_bits or 'fp'}, {path}")


class PackedFFN(nn.Module):
    """A transformer block's feed-forward ``down(gelu(up(x)))`` as one fused kernel call.

    Installed by ``load_packed`` in place of the block's intermediate module (BERT:
    ``layer.intermediate``), with the output linear (``layer.output.dense``) set to ``Identity``; the
    rest of the block (dropout, residual, LayerNorm) is transformers' own code. Per-token activation
    quantization lets the kernel run chunk by chunk of tokens, so the 4x-wide intermediate never
    exists as a whole tensor. ``source_names`` keeps the original weight names for ``save_packed``.
    """

    def __init__(self, up: PackedLinear, down: PackedLinear, source_names: tuple[str, str]):
        super().__init__()
        self.up, self.down, self.source_names = up, down, source_names

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out_shape = (*x.shape[:-1], self.down.out_features)
        y = kernels.packed_ffn(x, self.up._buffers, self.up.out_features, self.down._buffers,
                               self.down.out_features, "gelu")
        if y is None:
            return self.down(F.gelu(self.up(x)))
        return y.view(out_shape).to(x.dtype)


class PackedEmbedding(nn.Module):
    """Word embedding kept in its canonical packed form; looked-up rows are decoded on the fly."""

    def __init__(self, packed: torch.Tensor, scales: torch.Tensor, embedding_dim: int, packing: str,
                 kind: str, padding_idx: int | None = None):
        super().__init__()
        self.num_embeddings, self.embedding_dim = packed.shape[0], embedding_dim
        self.packing, self.kind, self.padding_idx = packing, kind, padding_idx
        self.register_buffer("packed", packed.contiguous(), persistent=False)
        self.register_buffer("scales", scales.float().contiguous(), persistent=False)

    def codes(self) -> torch.Tensor:
        return bitpack.unpack(self.packed, self.embedding_dim, self.packing)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        rows = bitpack.lookup_rows(self.packed, input_ids, self.embedding_dim, self.packing)
        return rows * F.embedding(input_ids, self.scales.unsqueeze(1))

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, {self.kind} ({self.packing}), per row"
