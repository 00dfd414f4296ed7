"""CPU kernels for packed linears: W1A8 / W2A8 computed straight from the weight bits.

The C++ extension (``csrc/xtc_kernels.cpp``) is compiled on first use with
``torch.utils.cpp_extension.load`` and cached by torch under ``~/.cache/torch_extensions`` (or
``$TORCH_EXTENSIONS_DIR``); later imports only load the cached library. If compiling fails (no
compiler, unsupported platform), or ``XTC_DISABLE_KERNELS=1`` is set, a pure-torch path computes the
same integer arithmetic and a warning is given once.

Weights are re-arranged once, at load time, from the canonical codes into the kernel's tile layout
(see the comment at the top of the C++ file): tiles of 16 outputs x 4 inputs, one 64-bit mask per
tile and plane (binary: 1 plane = 1 bit/weight; ternary: nonzero + negative planes = 2 bits/weight).

The instruction set is picked at run time (AMX-INT8 tiles, AVX-512 VNNI, AVX2 or portable scalar code,
all in one build); ``XTC_KERNEL_ISA=avx512|avx2|scalar`` or ``extension().set_isa(...)`` forces a slower
path. AMX expands the 1-2 bit weights to int8 tiles in a small per-thread buffer, call by call: the
weights stay packed in memory.
Threads: ``torch.set_num_threads`` (the kernels run in torch's OpenMP pool via at::parallel_for).
"""

from __future__ import annotations

import hashlib
import os
import threading
import warnings
import weakref
from pathlib import Path

import torch

CSRC = Path(__file__).with_name("csrc")
TILE_N, TILE_K = 16, 4  # outputs x inputs per 64-bit mask (must match the C++ file)

_ext = None
_ext_error: str | None = None
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
            name = f"xtc_packed_kernels_{tag}"
            if not _built(name):
                import sys

                print("compiling xtc kernels (first use, about 30 s)", file=sys.stderr, flush=True)
            _ext = load(
                name=name,
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


def _built(name: str) -> bool:
    """Whether torch's extension cache already holds this build (then loading takes no time)."""
    try:
        from torch.utils.cpp_extension import _get_build_directory

        return (Path(_get_build_directory(name, verbose=False)) / f"{name}.so").exists()
    except Exception:  # noqa: BLE001 - a private torch helper: if it moves, just say nothing
        return True


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


def prepare_weights(codes: torch.Tensor, row_scales: torch.Tensor, bias: torch.Tensor | None,
                    ternary: bool) -> dict:
    """Tile layout and epilogue vectors for codes ``[N, K]`` in {-1, 0, +1}.

    Returns tensors ``wp`` (int64 [N/16, K/4, planes]), ``colsum128`` (int32), ``alpha``, ``bias_p``
    (float32), all padded to a multiple of 16 outputs.
    """
    n = codes.shape[0]
    nt = -(-n // TILE_N)
    alpha = torch.zeros(nt * TILE_N, dtype=torch.float32)
    alpha[:n] = row_scales.to(torch.float32)
    b = torch.zeros(nt * TILE_N, dtype=torch.float32)
    if bias is not None:
        b[:n] = bias.to(torch.float32)
    ext = extension()
    if ext is not None:  # same layout as below, in C++ (the torch version takes seconds for BERT-base)
        wp, colsum128 = ext.prepare_tiles(codes.to(torch.int8), ternary)
    else:
        wp, colsum128 = tiles_torch(codes, ternary)
    return {"wp": wp, "colsum128": colsum128, "alpha": alpha, "bias_p": b}


def tiles_torch(codes: torch.Tensor, ternary: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Tile layout and ``128 * colsum`` in torch (fallback and test oracle of ``prepare_tiles``)."""
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
    return wp, (colsum * 128).to(torch.int32).contiguous()


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
                     bias: torch.Tensor | None) -> torch.Tensor:
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
# Siblings on one input (query, key, value): quantize it once, run all three in one call
# ------------------------------------------------------------------------------------------------
_local = threading.local()


def _version(x: torch.Tensor) -> int | None:
    return None if x.is_inference() else x._version  # inference tensors have no version counter


def _weights(prep: dict, out_features: int, act: int = 0) -> tuple:
    return prep["wp"], prep["colsum128"], prep["alpha"], prep["bias_p"], out_features, act


def group_linear(x: torch.Tensor, me, members: list, group: int) -> torch.Tensor | None:
    """Output of packed linear ``me`` for ``x`` ``[..., K]`` as ``[M, N]``, computed together with its
    sibling ``members`` (same input, e.g. query/key/value) in one kernel call on the first call;
    the siblings' outputs wait in a thread-local slot for the very same tensor object (and, outside
    inference mode, the same version counter) and are handed out once each. None without the
    extension."""
    ext = extension()
    if ext is None:
        return None
    entry = getattr(_local, "entry", None)
    if (entry is not None and entry[0] == group and entry[1]() is x and entry[2] == _version(x)
            and id(me) in entry[3]):
        y = entry[3].pop(id(me))
        if not entry[3]:
            _local.entry = None
        return y
    ys = packed_linears(x, members)
    outputs = {id(m): y for m, y in zip(members, ys)}
    y = outputs.pop(id(me))
    try:
        _local.entry = (group, weakref.ref(x), _version(x), outputs) if outputs else None
    except TypeError:  # a tensor subclass refusing weak references: siblings recompute
        _local.entry = None
    return y


def packed_linears(x: torch.Tensor, linears: list) -> list[torch.Tensor]:
    """Outputs ``[M, N_i]`` of several kernel :class:`PackedLinear` s on one input ``x`` ``[..., K]``:
    one activation quantization and one kernel call (one parallel region) for all of them."""
    ext = extension()
    ap, s = ext.pack_activations(x.reshape(-1, x.shape[-1]).float())
    return ext.linear_multi(ap, s, [_weights(m._buffers, m.out_features) for m in linears])


ACTIVATIONS = {None: 0, "gelu": 1}  # epilogue activations of the kernels (the erf GELU, to ~1e-6)


def packed_linear(x: torch.Tensor, prep: dict, out_features: int, act: str | None = None) -> torch.Tensor | None:
    """Kernel linear of ``x`` ``[..., K]`` -> ``[M, N]`` float32 (None without the extension);
    the tensors of ``prep`` come from :func:`prepare_weights`."""
    ext = extension()
    if ext is None:
        return None
    ap, s = ext.pack_activations(x.reshape(-1, x.shape[-1]).float())
    return ext.linear_packed(ap, s, *_weights(prep, out_features, ACTIVATIONS[act]))


def packed_ffn(x: torch.Tensor, up: dict, n_up: int, down: dict, n_down: int,
               act: str | None = "gelu") -> torch.Tensor | None:
    """Fused ``down(act(up(x)))`` -> ``[M, n_down]`` (None without the extension)."""
    ext = extension()
    if ext is None:
        return None
    ap, s = ext.pack_activations(x.reshape(-1, x.shape[-1]).float())
    return ext.ffn_packed(ap, s, up["wp"], up["colsum128"], up["alpha"], up["bias_p"], n_up,
                          down["wp"], down["colsum128"], down["alpha"], down["bias_p"], n_down, ACTIVATIONS[act])


# ------------------------------------------------------------------------------------------------
# The float parts of a block (attention, residual + LayerNorm) on AVX-512 / AMX hosts
# ------------------------------------------------------------------------------------------------
def float_ops(head_size: int, mask: torch.Tensor | None = None, bias: torch.Tensor | None = None) -> bool:
    """Whether the lean forward can hand attention and LayerNorm to the kernels: an AVX-512 host (or
    AMX), a head size that is a multiple of 16, and a mask / bias of the shapes the kernel takes
    (mask: none, or bool / float32 ``[B, 1, 1 or T, T]``; bias: float32 ``[1 or B, H, T, T]``)."""
    ext = extension()
    if ext is None or head_size % 16 or not ext.float_ops_available():
        return False
    if mask is not None and (mask.dim() != 4 or mask.shape[1] != 1 or mask.dtype not in (torch.bool, torch.float32)):
        return False
    return bias is None or (bias.dim() == 4 and bias.dtype == torch.float32)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, batch: int, heads: int, scale: float,
              mask: torch.Tensor | None = None, bias: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(q k^T * scale + bias + mask) v per head, for q, k, v ``[batch * T, heads * D]`` as the
    projections give them; returns the context in the same layout (heads side by side)."""
    return extension().attention(q, k, v, batch, heads, scale, mask, _one_bias(bias))


def _one_bias(bias: torch.Tensor | None) -> torch.Tensor | None:
    """A bias broadcast over the batch (stride 0, as the cached MPNet position bias is) as its one copy:
    the kernels take ``[1, H, T, T]`` as well, and the expanded view would be copied B times."""
    if bias is not None and bias.shape[0] > 1 and bias.stride(0) == 0:
        return bias[:1]
    return bias


def add_layer_norm(x: torch.Tensor, residual: torch.Tensor, norm: torch.nn.LayerNorm) -> torch.Tensor:
    """``norm(x + residual)`` in one pass over each row; ``[M, N]`` (x's rows, whatever residual's shape)."""
    return extension().add_layer_norm(x, residual.reshape(x.shape), norm.weight, norm.bias, norm.eps)


def encoder_block(x: torch.Tensor, batch: int, heads: int, scale: float, mask: torch.Tensor | None,
                  bias: torch.Tensor | None, qkv: list, out, norm1: torch.nn.LayerNorm, ffn,
                  norm2: torch.nn.LayerNorm) -> torch.Tensor:
    """A whole post-LayerNorm block in one kernel call: ``norm2(ffn(a) + a)`` with
    ``a = norm1(out(attention(qkv(x))) + x)``; ``qkv``: the query, key and value :class:`PackedLinear` s,
    ``out`` the attention's output projection, ``ffn`` a :class:`PackedFFN`. The arithmetic of
    :func:`attention`, :func:`add_layer_norm` and the packed linears, op for op; ``[B * T, hidden]``."""
    def w(m):
        return _weights(m._buffers, m.out_features)

    return extension().encoder_block(x.reshape(-1, x.shape[-1]), batch, heads, scale, mask, _one_bias(bias),
                                      [w(m) for m in qkv], w(out), norm1.weight, norm1.bias, norm1.eps,
                                      w(ffn.up), w(ffn.down), ACTIVATIONS["gelu"], norm2.weight, norm2.bias, norm2.eps)
