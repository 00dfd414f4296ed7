"""Weight and activation quantizers of XTC (docs/method.md, "What is quantized").

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

import math
from typing import Callable, Dict, Optional

import torch

from .errors import ConfigError

WeightQuantizer = Callable[..., torch.Tensor]  # fn(w, bits=..., groups=...) -> de-quantized w

TERNARY_THRESHOLD = 0.7  # TWN: delta = 0.7 * mean|W| (Li & Liu, 2016)


def _straight_through(w: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Forward value ``q``, gradient identity to ``w``."""
    return w + (q - w).detach()


def _grouped(w: torch.Tensor, groups: int) -> torch.Tensor:
    """View ``w`` as ``[groups, -1]``; refuse a split that does not divide the tensor evenly."""
    if groups < 1 or w.numel() % groups != 0:
        raise ConfigError(
            f"groups={groups} does not divide a weight of shape {tuple(w.shape)} ({w.numel()} values) "
            "into equal groups; pass a divisor of its first dimension (1 = one scale per matrix)"
        )
    return w.reshape(groups, -1)


def _exact_mean(a: torch.Tensor) -> torch.Tensor:
    """Row means of ``a`` ``[groups, n]`` summed in float64, returned in ``a``'s dtype.

    A float32 sum over a whole matrix depends on how it is split across threads; the last bit of the
    scale then differs between a run on 1 and on 2 threads, and the 8-bit activation rounding downstream
    turns that into different dev predictions. Summed in float64, the rounded result is the same on
    any thread count, in training, evaluation and export alike. (Apple's MPS has no float64: there
    the sum stays in float32.)"""
    return a.mean(dim=1, dtype=_wide(a)).to(a.dtype)


def _wide(a: torch.Tensor) -> torch.dtype:
    return torch.float32 if a.device.type == "mps" else torch.float64


def _sign(w: torch.Tensor) -> torch.Tensor:
    """sign with sign(0) = +1, so that one bit holds every value."""
    return torch.where(w >= 0, torch.ones_like(w), -torch.ones_like(w))


@torch.no_grad()
def binary_codes(w: torch.Tensor, groups: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Binary codes (+1/-1, as ``w``'s dtype, shape ``[groups, n]``) and scales ``alpha`` ``[groups]``."""
    g = _grouped(w.detach(), groups)
    return _sign(g), _exact_mean(g.abs())


@torch.no_grad()
def ternary_codes(w: torch.Tensor, groups: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Ternary codes (-1/0/+1, shape ``[groups, n]``) and scales ``alpha`` ``[groups]`` (TWN).

    A group whose mask is empty (all zeros) gets alpha = 0, not NaN.
    """
    g = _grouped(w.detach(), groups)
    a = g.abs()
    delta = TERNARY_THRESHOLD * _exact_mean(a)[:, None]
    mask = (a > delta).to(g.dtype)
    count = mask.sum(dim=1, dtype=_wide(a))
    alpha = ((a * mask).sum(dim=1, dtype=_wide(a)) / count.clamp(min=1)).to(g.dtype)
    return torch.sign(g) * mask, alpha


@torch.no_grad()
def symmetric_codes(w: torch.Tensor, bits: int, groups: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer codes in ``[-(2^(k-1)-1), 2^(k-1)-1]`` and scales ``max|W| / (2^(k-1)-1)`` per group."""
    if bits < 2:
        raise ConfigError(f"symmetric quantization needs bits >= 2, got {bits}; use binarize for 1 bit")
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
# A scheme with learned state (LSQ's step size) also registers ``init_state``; it is then called
# as fn(w, bits, groups, state) with the module's state tensor (one value per group).
# --------------------------------------------------------------------------------------------
_WEIGHT_QUANTIZERS: Dict[str, WeightQuantizer] = {}
_STATE_INITS: Dict[str, Callable[..., torch.Tensor]] = {}
_CODES: Dict[str, Callable[..., tuple]] = {}
# codes(w, bits, groups, state) -> (codes [groups, n], scales [groups]): the integer form of the
# quantized weight, ``W_hat = scales * codes`` per group, codes in {-1, +1} (1 bit) or {-1, 0, +1}
# (2 bits). A scheme that registers it can be exported to the packed format.
WeightCodes = Callable[..., tuple]


def register_weight_quantizer(name: str, *, init_state: Optional[Callable[..., torch.Tensor]] = None,
                              codes: Optional[WeightCodes] = None
                              ) -> Callable[[WeightQuantizer], WeightQuantizer]:
    """Decorator: make ``fn(w, bits, groups)`` available as the weight quantizer ``name``.

    ``init_state(w, bits, groups) -> Tensor[groups]``: the scheme learns one value per group (e.g. a
    step size). The quantization-aware modules then own it as an ``nn.Parameter`` named
    ``step_size`` (trained with the weights, saved in the checkpoint, restored by
    :func:`xtc.load_quantized`) and call ``fn(w, bits=..., groups=..., state=step_size)``.

    ``codes(w, bits, groups, state) -> (codes, scales)``: the scheme's weights as integer codes and
    one scale per group (1-bit and 2-bit widths); with it, ``xtc export`` packs the scheme.
    """

    def add(fn: WeightQuantizer) -> WeightQuantizer:
        if name in _WEIGHT_QUANTIZERS:
            raise ConfigError(f"a weight quantizer named {name!r} is already registered")
        _WEIGHT_QUANTIZERS[name] = fn
        if init_state is not None:
            _STATE_INITS[name] = init_state
        if codes is not None:
            _CODES[name] = codes
        return fn

    return add


def scheme_codes(name: str) -> Optional[WeightCodes]:
    """The ``codes`` function of a registered scheme, None if it registered none (not packable)."""
    get_weight_quantizer(name)
    return _CODES.get(name)


def packable_schemes() -> list[str]:
    """The registered schemes that export to the packed format (those that registered their codes)."""
    return sorted(_CODES)


def check_scheme_bits(scheme: str, bits: int) -> None:
    """Quantize a tiny tensor, so that a scheme refusing ``bits`` (absmean is 2-bit only) says so now."""
    fn, init = get_weight_quantizer(scheme), weight_quantizer_state_init(scheme)
    w = torch.ones(1, 2)
    with torch.no_grad():
        fn(w, bits=bits, groups=1, **({"state": init(w, bits, 1)} if init is not None else {}))


def weight_quantizer_state_init(name: str) -> Optional[Callable[..., torch.Tensor]]:
    """The ``init_state`` of a scheme with learned state, None for a stateless scheme."""
    get_weight_quantizer(name)
    return _STATE_INITS.get(name)


def get_weight_quantizer(name: str) -> WeightQuantizer:
    try:
        return _WEIGHT_QUANTIZERS[name]
    except KeyError:
        raise ConfigError(
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
    raise ConfigError(f"weight bits must be 1..16 (1 = binary, 2 = ternary), got {bits}")


register_weight_quantizer("binary", codes=lambda w, bits, groups, state=None: binary_codes(w, groups))(
    lambda w, bits=1, groups=1: binarize(w, groups))
register_weight_quantizer("ternary", codes=lambda w, bits, groups, state=None: ternary_codes(w, groups))(
    lambda w, bits=2, groups=1: ternarize(w, groups))
register_weight_quantizer("symmetric")(lambda w, bits, groups=1: quantize_symmetric(w, bits, groups))


# --------------------------------------------------------------------------------------------
# Ablation schemes: BitNet b1.58 absmean ternary, and learned step size (LSQ).
# --------------------------------------------------------------------------------------------
@torch.no_grad()
def absmean_codes(w: torch.Tensor, groups: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """BitNet b1.58 ternary codes ``clamp(round(W / s), -1, 1)`` and scales ``s = mean|W|`` per group.

    Unlike TWN the scale is the threshold's unit as well: a weight is non-zero when ``|W| >= s / 2``,
    and every non-zero weight becomes ``+-s``. An all-zero group stays zero.
    """
    g = _grouped(w.detach(), groups)
    scale = _exact_mean(g.abs())
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    return torch.round(g / safe[:, None]).clamp(-1, 1), scale


def absmean_ternarize(w: torch.Tensor, groups: int = 1) -> torch.Tensor:
    """BitNet b1.58 weights: ``s * clamp(round(W / s), -1, 1)``, ``s = mean|W|`` (straight-through)."""
    return _dequantize(w, *absmean_codes(w, groups))


def _absmean(w: torch.Tensor, bits: int = 2, groups: int = 1) -> torch.Tensor:
    if bits != 2:
        raise ConfigError(f"the absmean scheme is ternary (BitNet b1.58, levels -1/0/+1): use weight_bits=2, "
                         f"got {bits}")
    return absmean_ternarize(w, groups)


def lsq_levels(bits: int) -> tuple[int, int, bool]:
    """LSQ's clipping range ``(Qn, Qp)`` and whether the levels are signs rather than integers.

    * 1 bit: the two levels ``{-s, +s}`` (``sign`` in place of ``round``, as XTC's binary, so that
      one bit holds every value; LSQ's integer grid has no 1-bit form, ``{-1, 0}`` would waste a level);
    * 2 bits: the ternary levels ``{-s, 0, +s}`` (Qn = Qp = 1), the level set of TWN and absmean, so
      that the 2-bit rows of the ablation differ only in how the scale is chosen (LSQ's own signed
      2-bit grid ``{-2, -1, 0, 1}`` is asymmetric and does not pack as ternary);
    * k >= 3 bits: the symmetric grid ``[-(2^(k-1)-1), 2^(k-1)-1]`` of the ``symmetric`` scheme.
    """
    if bits == 1:
        return 1, 1, True
    if 2 <= bits <= 16:
        q = 1 if bits == 2 else 2 ** (bits - 1) - 1
        return q, q, False
    raise ConfigError(f"weight bits must be 1..16 for the lsq scheme, got {bits}")


LSQ_MIN_STEP = 1e-8  # the step size is kept positive (a zero group would otherwise divide by zero)


@torch.no_grad()
def lsq_init(w: torch.Tensor, bits: int, groups: int = 1) -> torch.Tensor:
    """Initial step size per group: LSQ's ``2 mean|W| / sqrt(Qp)`` for integer levels.

    For 1 bit the initial step is ``mean|W|`` instead: with sign levels that is the step minimizing
    ``||W - s sign(W)||^2`` (XTC's binary alpha), so LSQ-binary starts from XTC-binary and the
    ablation isolates the effect of learning the step (``2 mean|W|`` would start at twice the best).
    """
    qn, qp, signs = lsq_levels(bits)
    mean = _grouped(w.detach(), groups).abs().mean(dim=1)
    step = mean if signs else 2.0 * mean / math.sqrt(qp)
    return step.clamp(min=LSQ_MIN_STEP)


def _scale_gradient(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Forward value ``x``, gradient multiplied by ``factor`` (LSQ's step-size gradient scale)."""
    scaled = x * factor
    return (x - scaled).detach() + scaled


def lsq_quantize(w: torch.Tensor, bits: int, groups: int = 1, state: Optional[torch.Tensor] = None
                 ) -> torch.Tensor:
    """Learned step size quantization (Esser et al., 2020): ``s * R(clamp(W / s, -Qn, Qp))``.

    ``state`` holds the step ``s`` per group (``[groups]``); ``R`` is ``round`` (``sign`` for 1 bit),
    passed straight through. Gradients are LSQ's: to ``W``, 1 inside the clipping range and 0 outside;
    to ``s``, ``R(W/s) - W/s`` inside and ``-Qn`` / ``Qp`` outside, summed over the group and scaled
    by ``1 / sqrt(N * Qp)`` (N the group's size).
    """
    if state is None:
        raise ConfigError("the lsq scheme needs its learned step size (state=); quantize the model with "
                         "xtc.quantize_, which creates it")
    qn, qp, signs = lsq_levels(bits)
    g = _grouped(w, groups)
    if state.shape != (g.shape[0],):
        raise ValueError(f"lsq: {tuple(state.shape)} step sizes for {g.shape[0]} groups")
    step = _scale_gradient(state, 1.0 / math.sqrt(g.shape[1] * qp)).clamp(min=LSQ_MIN_STEP)[:, None]
    x = torch.clamp(g / step, -qn, qp)
    r = _sign(x) if signs else torch.round(x)
    return ((x + (r - x).detach()) * step).reshape(w.shape)


@torch.no_grad()
def lsq_codes(w: torch.Tensor, bits: int, groups: int, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer codes ``R(clamp(W / s, -Qn, Qp))`` (``[groups, n]``) and the steps ``s`` (``[groups]``)."""
    qn, qp, signs = lsq_levels(bits)
    step = state.detach().clamp(min=LSQ_MIN_STEP)
    x = torch.clamp(_grouped(w.detach(), groups) / step[:, None], -qn, qp)
    return (_sign(x) if signs else torch.round(x)), step


register_weight_quantizer("absmean", codes=lambda w, bits, groups, state=None: absmean_codes(w, groups))(_absmean)
register_weight_quantizer("lsq", init_state=lsq_init,
                          codes=lambda w, bits, groups, state: lsq_codes(w, bits, groups, state.detach().float()))(
    lsq_quantize)
