"""Weight and activation quantizers of XTC (XTC-METHOD.md section 2).

Every function returns the *de-quantized* tensor (same shape and dtype as its input) and passes
gradients straight through to the input (straight-through estimator: d out / d in = identity).
The trick ``w + (q - w).detach()`` gives exactly that: the forward value is ``q``, the backward
is the identity.

Weight quantizers take ``groups``: the tensor is flattened and split into ``groups`` contiguous
chunks of equal size, each with its own scale. For a ``[out, in]`` linear weight, ``groups=1`` is
one scale per matrix (the paper's default) and ``groups=out`` is one scale per row. The word
embedding uses one group per row (per token).

New schemes plug in through :func:`register_weight_quantizer`; :func:`get_weight_quantizer` looks
them up by name so that configs, the CLI and the packed format refer to schemes by name only.
"""

from __future__ import annotations

from typing import Callable, Dict

import torch

WeightQuantizer = Callable[..., torch.Tensor]  # fn(w, bits=..., groups=...) -> de-quantized w

TERNARY_THRESHOLD = 0.7  # TWN: delta = 0.7 * mean|W| (Li & Liu, 2016)


def _straight_through(w: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Forward value ``q``, gradient identity to ``w``."""
    return w + (q - w).detach()


def _grouped(w: torch.Tensor, groups: int) -> torch.Tensor:
    """View ``w`` as ``[groups, -1]``; refuse a split that does not divide the tensor evenly."""
    if groups < 1 or w.numel() % groups != 0:
        raise ValueError(
            f"groups={groups} does not divide a weight of shape {tuple(w.shape)} ({w.numel()} values) "
            "into equal groups; pass a divisor of its first dimension (1 = one scale per matrix)"
        )
    return w.reshape(groups, -1)


def _sign(w: torch.Tensor) -> torch.Tensor:
    """sign with sign(0) = +1, so that one bit holds every value."""
    return torch.where(w >= 0, torch.ones_like(w), -torch.ones_like(w))


@torch.no_grad()
def binary_codes(w: torch.Tensor, groups: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Binary codes (+1/-1, as ``w``'s dtype, shape ``[groups, n]``) and scales ``alpha`` ``[groups]``."""
    g = _grouped(w.detach(), groups)
    return _sign(g), g.abs().mean(dim=1)


@torch.no_grad()
def ternary_codes(w: torch.Tensor, groups: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Ternary codes (-1/0/+1, shape ``[groups, n]``) and scales ``alpha`` ``[groups]`` (TWN).

    A group whose mask is empty (all zeros) gets alpha = 0, not NaN.
    """
    g = _grouped(w.detach(), groups)
    a = g.abs()
    delta = TERNARY_THRESHOLD * a.mean(dim=1, keepdim=True)
    mask = (a > delta).to(g.dtype)
    count = mask.sum(dim=1)
    alpha = (a * mask).sum(dim=1) / count.clamp(min=1)
    return torch.sign(g) * mask, alpha


@torch.no_grad()
def symmetric_codes(w: torch.Tensor, bits: int, groups: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer codes in ``[-(2^(k-1)-1), 2^(k-1)-1]`` and scales ``max|W| / (2^(k-1)-1)`` per group."""
    if bits < 2:
        raise ValueError(f"symmetric quantization needs bits >= 2, got {bits}; use binarize for 1 bit")
    g = _grouped(w.detach(), groups)
    qmax = 2 ** (bits - 1) - 1
    scale = g.abs().amax(dim=1) / qmax
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))  # an all-zero group stays zero
    codes = torch.round(g / safe[:, None]).clamp(-qmax, qmax)
    return codes, scale


def _dequantize(w: torch.Tensor, codes: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    return _straight_through(w, (codes * scales[:, None]).reshape(w.shape))


def binarize(w: torch.Tensor, groups: int = 1) -> torch.Tensor:
    """Binary weights: ``alpha * sign(W)`` with ``alpha = mean|W|`` per group."""
    return _dequantize(w, *binary_codes(w, groups))


def ternarize(w: torch.Tensor, groups: int = 1) -> torch.Tensor:
    """Ternary weights (TWN): ``alpha * sign(W) * (|W| > 0.7 mean|W|)``, alpha the mean over the mask."""
    return _dequantize(w, *ternary_codes(w, groups))


def quantize_symmetric(w: torch.Tensor, bits: int, groups: int = 1) -> torch.Tensor:
    """k-bit symmetric weights: round to nearest on the grid ``max|W| / (2^(k-1)-1)``."""
    return _dequantize(w, *symmetric_codes(w, bits, groups))


def activation_scale(x: torch.Tensor, bits: int = 8) -> torch.Tensor:
    """Per-token scale ``s = 2 max|x| / 2^bits`` over the last dimension (keepdim)."""
    return 2.0 * x.detach().abs().amax(dim=-1, keepdim=True) / (2**bits)


def quantize_activations(x: torch.Tensor, bits: int = 8) -> torch.Tensor:
    """Dynamic symmetric per-token activation quantization (one scale per row of the last dim).

    ``q = clamp(round(x / s), -2^(b-1), 2^(b-1) - 1)``, ``x_hat = q * s``; a zero row stays zero.
    """
    s = activation_scale(x, bits)
    safe = torch.where(s > 0, s, torch.ones_like(s))
    q = torch.clamp(torch.round(x.detach() / safe), -(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    return _straight_through(x, q * s)


# --------------------------------------------------------------------------------------------
# Registry: a weight quantizer is found by name. Signature: fn(w, bits, groups) -> de-quantized w.
# --------------------------------------------------------------------------------------------
_WEIGHT_QUANTIZERS: Dict[str, WeightQuantizer] = {}


def register_weight_quantizer(name: str) -> Callable[[WeightQuantizer], WeightQuantizer]:
    """Decorator: make ``fn(w, bits, groups)`` available as the weight quantizer ``name``."""

    def add(fn: WeightQuantizer) -> WeightQuantizer:
        if name in _WEIGHT_QUANTIZERS:
            raise ValueError(f"a weight quantizer named {name!r} is already registered")
        _WEIGHT_QUANTIZERS[name] = fn
        return fn

    return add


def get_weight_quantizer(name: str) -> WeightQuantizer:
    try:
        return _WEIGHT_QUANTIZERS[name]
    except KeyError:
        raise ValueError(
            f"unknown weight quantizer {name!r}; registered: {', '.join(sorted(_WEIGHT_QUANTIZERS))}"
        ) from None


def available_weight_quantizers() -> list[str]:
    return sorted(_WEIGHT_QUANTIZERS)


def default_scheme(bits: int) -> str:
    """XTC's scheme for a bit width: 1 -> binary, 2 -> ternary, >= 3 -> symmetric."""
    if bits == 1:
        return "binary"
    if bits == 2:
        return "ternary"
    if 3 <= bits <= 16:
        return "symmetric"
    raise ValueError(f"weight bits must be 1..16 (1 = binary, 2 = ternary), got {bits}")


register_weight_quantizer("binary")(lambda w, bits=1, groups=1: binarize(w, groups))
register_weight_quantizer("ternary")(lambda w, bits=2, groups=1: ternarize(w, groups))
register_weight_quantizer("symmetric")(lambda w, bits, groups=1: quantize_symmetric(w, bits, groups))
