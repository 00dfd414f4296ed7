"""CPU kernels for packed linears: W1A8 / W2A8 computed straight from the weight bits.

The C++ extension (``csrc/xtc_kernels.cpp``) is compiled on first use with
``torch.utils.cpp_extension.load`` and cached by torch under ``~/.cache/torch_extensions`` (or
``$TORCH_EXTENSIONS_DIR``); later imports only load the cached library. If compiling fails (no
compiler, unsupported platform), or ``XTC_DISABLE_KERNELS=1`` is set, a pure-torch path computes the
same integer arithmetic and a warning is given once.

Weights are re-arranged once, at load time, from the canonical codes into the kernel's tile layout
(see the comment at the top of the C++ file): tiles of 16 outputs x 4 inputs, one 64-bit mask per
tile and plane (binary: 1 plane = 1 bit/weight; ternary: nonzero + negative planes = 2 bits/weight).

The instruction set is picked at run time (AVX-512 VNNI, AVX2 or portable scalar code, all in one
build); ``XTC_KERNEL_ISA=avx2|scalar`` or ``extension().set_isa(...)`` forces a slower path.
Threads: ``torch.set_num_threads`` (the kernels run in torch's OpenMP pool via at::parallel_for).
"""

from __future__ import annotations

import hashlib
import os
import threading
import warnings
import weakref
from pathlib import Path
from typing import Optional

import torch

CSRC = Path(__file__).with_name("csrc")
TILE_N, TILE_K = 16, 4  # outputs x inputs per 64-bit mask (must match the C++ file)

_ext = None
_ext_error: Optional[str] = None
_lock = threading.Lock()


def extension():
    """The compiled extension module, or None when it cannot be built (warned once)."""
    global _ext, _ext_error
    if _ext is not None or _ext_error is not None:
        return _ext
    with _lock:
        if _ext is not None or _ext_error is not None:
            return _ext
        if os.environ.get("XTC_DISABLE_KERNELS", "") not in ("", "0"):
            _ext_error = "disabled by XTC_DISABLE_KERNELS"
            return None
        try:
            from torch.utils.cpp_extension import load

            # A content hash in the name: an edited source never reuses a stale cached build.
            src = CSRC / "xtc_kernels.cpp"
            tag = hashlib.sha256(src.read_bytes()).hexdigest()[:10]
            _ext = load(
                name=f"xtc_packed_kernels_{tag}",
                sources=[str(src)],
                # -fopenmp: at::parallel_for is an OpenMP region compiled into this library; the
                # process shares torch's libgomp (same soname), hence torch.set_num_threads applies.
                extra_cflags=["-O3", "-fopenmp", "-ffp-contract=off"],
                extra_ldflags=["-fopenmp"],
                verbose=False,
            )
        except Exception as exc:  # noqa: BLE001 - any build failure means: use the torch path
            _ext_error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}"
            warnings.warn(
                f"xtc: the packed C++ kernels could not be built ({_ext_error}); using the slower pure-torch "
                "path (same results)",
                RuntimeWarning,
                stacklevel=2,
            )
            _ext = None
    return _ext


def kernel_info() -> dict:
    """Which path packed linears use: {'backend': 'cpp'|'torch', 'isa': ..., 'error': ...}."""
    ext = extension()
    if ext is None:
        return {"backend": "torch", "isa": None, "error": _ext_error}
    return {"backend": "cpp", "isa": ext.get_isa(), "host_isa": ext.host_isa(), "error": None}


# ------------------------------------------------------------------------------------------------
# Weight preparation (load time)
# ------------------------------------------------------------------------------------------------
def _bits_to_u64(bits: torch.Tensor) -> torch.Tensor:
    """[..., 64] bool -> [...] int64 with bit j = bits[..., j] (two's complement view of uint64)."""
    b = bits.to(torch.int64).reshape(*bits.shape[:-1], 8, 8)
    byte = (b << torch.arange(8, dtype=torch.int64)).sum(-1).to(torch.uint8)  # [..., 8], little endian
    return byte.contiguous().view(torch.int64).squeeze(-1)


def prepare_weights(codes: torch.Tensor, row_scales: torch.Tensor, bias: Optional[torch.Tensor],
                    ternary: bool) -> dict:
    """Tile layout and epilogue vectors for codes ``[N, K]`` in {-1, 0, +1}.

    Returns tensors ``wp`` (int64 [N/16, K/4, planes]), ``colsum128`` (int32), ``alpha``, ``bias_p``
    (float32), all padded to a multiple of 16 outputs.
    """
    n, k = codes.shape
    nt, k4 = -(-n // TILE_N), -(-k // TILE_K)
    c = torch.zeros(nt * TILE_N, k4 * TILE_K, dtype=torch.int8)
    c[:n, :k] = codes.to(torch.int8)
    # [nt, 16, k4, 4] -> [nt, k4, 16, 4]: bit j of a tile is (row j // 4, column j % 4)
    tiles = c.reshape(nt, TILE_N, k4, TILE_K).permute(0, 2, 1, 3).reshape(nt, k4, TILE_N * TILE_K)
    if ternary:
        planes = [tiles != 0, tiles < 0]
    else:
        planes = [tiles > 0]
    wp = torch.stack([_bits_to_u64(p) for p in planes], dim=-1).contiguous()
    # What the kernel multiplies: binary padded columns expand to -1 (bit 0), the activation there is
    # u = 128 (q = 0), so they add -128 per column; colsum must include those -1 to cancel them.
    expanded = torch.where(tiles > 0, 1, -1) if not ternary else tiles.to(torch.int32)
    colsum = expanded.reshape(nt, k4, TILE_N, TILE_K).sum(dim=(1, 3), dtype=torch.int64).reshape(-1)
    alpha = torch.zeros(nt * TILE_N, dtype=torch.float32)
    alpha[:n] = row_scales.to(torch.float32)
    b = torch.zeros(nt * TILE_N, dtype=torch.float32)
    if bias is not None:
        b[:n] = bias.to(torch.float32)
    return {"wp": wp, "colsum128": (colsum * 128).to(torch.int32).contiguous(), "alpha": alpha, "bias_p": b}


def codes_from_tiles(wp: torch.Tensor, n: int, k: int) -> torch.Tensor:
    """Inverse of the tile layout: int8 codes ``[n, k]`` (used by the torch path and re-export)."""
    nt, k4, planes = wp.shape
    bytes_ = wp.contiguous().view(torch.uint8).reshape(nt, k4, planes, 8)
    bits = ((bytes_[..., None] >> torch.arange(8, dtype=torch.uint8)) & 1).reshape(nt, k4, planes, 64).bool()
    if planes == 1:
        vals = torch.where(bits[:, :, 0], 1, -1)
    else:
        vals = torch.where(bits[:, :, 0], torch.where(bits[:, :, 1], -1, 1), 0)
    vals = vals.to(torch.int8).reshape(nt, k4, TILE_N, TILE_K).permute(0, 2, 1, 3).reshape(nt * TILE_N, k4 * TILE_K)
    return vals[:n, :k].contiguous()


# ------------------------------------------------------------------------------------------------
# Reference arithmetic in torch (fallback and test oracle)
# ------------------------------------------------------------------------------------------------
def quantize_activations_int(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """int8 codes and per-row scales, the same formula as ``xtc.quantizers.quantize_activations``."""
    s = 2.0 * x.abs().amax(dim=-1, keepdim=True) / 256
    safe = torch.where(s > 0, s, torch.ones_like(s))
    q = torch.clamp(torch.round(x / safe), -128, 127)
    return q.to(torch.int8), s.squeeze(-1)


def linear_reference(x: torch.Tensor, codes: torch.Tensor, row_scales: torch.Tensor,
                     bias: Optional[torch.Tensor]) -> torch.Tensor:
    """``s * alpha * (q @ codes^T) + bias`` in torch. The integer products are summed in float32,
    which is exact here: every partial sum is an integer below 128 * K < 2^24."""
    q, s = quantize_activations_int(x)
    if x.shape[-1] * 128 >= 2**24:
        acc = torch.matmul(q.double(), codes.double().t()).float()
    else:
        acc = torch.matmul(q.float(), codes.float().t())
    y = acc * s[:, None] * row_scales.float()[None, :]
    return y + bias.float() if bias is not None else y


# ------------------------------------------------------------------------------------------------
# Activation sharing: query, key and value receive the same tensor; quantize and pack it once.
# ------------------------------------------------------------------------------------------------
_local = threading.local()


def packed_activations(ext, x: torch.Tensor, group: Optional[int] = None, group_size: int = 1):
    """``ext.pack_activations`` of ``x`` as ``[-1, K]`` float32.

    Linears of one sharing ``group`` (siblings called one after the other on the same input, like
    query/key/value) reuse the packed activations: the entry serves the next ``group_size - 1``
    calls of that group with the very same tensor object (and, outside inference mode, the same
    version counter), then it is dropped. The input is held weakly.
    """
    if group is not None:
        entry = getattr(_local, "entry", None)
        if entry is not None and entry[0] == group and entry[1]() is x and entry[2] == _version(x):
            _local.entry = (*entry[:4], entry[4] - 1) if entry[4] > 1 else None
            return entry[3]
    packed = ext.pack_activations(x.reshape(-1, x.shape[-1]).float())
    if group is not None and group_size > 1:
        try:
            _local.entry = (group, weakref.ref(x), _version(x), packed, group_size - 1)
        except TypeError:  # a tensor subclass refusing weak references: no sharing
            _local.entry = None
    return packed


def _version(x: torch.Tensor) -> Optional[int]:
    return None if x.is_inference() else x._version  # inference tensors have no version counter


ACTIVATIONS = {None: 0, "gelu": 1}  # epilogue activations of the kernels (exact erf GELU)


def packed_linear(x: torch.Tensor, prep: dict, out_features: int, group: Optional[int] = None,
                  group_size: int = 1, act: Optional[str] = None) -> Optional[torch.Tensor]:
    """Kernel linear of ``x`` ``[..., K]`` -> ``[M, N]`` float32 (None without the extension);
    the tensors of ``prep`` come from :func:`prepare_weights`."""
    ext = extension()
    if ext is None:
        return None
    ap, s = packed_activations(ext, x, group, group_size)
    return ext.linear_packed(ap, s, prep["wp"], prep["colsum128"], prep["alpha"], prep["bias_p"], out_features,
                             ACTIVATIONS[act])


def packed_ffn(x: torch.Tensor, up: dict, n_up: int, down: dict, n_down: int,
               act: Optional[str] = "gelu") -> Optional[torch.Tensor]:
    """Fused ``down(act(up(x)))`` -> ``[M, n_down]`` (None without the extension)."""
    ext = extension()
    if ext is None:
        return None
    ap, s = ext.pack_activations(x.reshape(-1, x.shape[-1]).float())
    return ext.ffn_packed(ap, s, up["wp"], up["colsum128"], up["alpha"], up["bias_p"], n_up,
                          down["wp"], down["colsum128"], down["alpha"], down["bias_p"], n_down, ACTIVATIONS[act])
