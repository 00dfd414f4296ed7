"""The packed CPU kernels against exact integer arithmetic in torch (every ISA path the CPU has)."""

import pytest
import torch
import torch.nn.functional as F

from xtc.packed import kernels as K
from xtc.packed.modules import PackedFFN, PackedLinear
from xtc.quantizers import quantize_activations

ext = K.extension()
pytestmark = pytest.mark.skipif(ext is None, reason=f"packed kernels unavailable: {K.kernel_info()['error']}")

# (M, N, K), odd edges included; K a multiple of 64 runs on AMX tiles (the others there on AVX-512),
# with odd numbers of 16-token blocks and of 16-output tiles
SHAPES = [(1, 16, 4), (13, 33, 10), (37, 50, 77), (25, 64, 128), (130, 96, 768), (20, 40, 64), (50, 50, 256)]
ISAS = ["scalar", "avx2", "avx512_vnni", "amx"]  # every dispatch path of the kernels, slowest first


def _host_has(isa):
    return ISAS.index(isa) <= ISAS.index(ext.host_isa())


@pytest.fixture(params=[pytest.param(i, marks=pytest.mark.skipif(
    ext is not None and not _host_has(i), reason=f"this CPU cannot run the {i} path (host: "
                                                   f"{ext.host_isa() if ext is not None else None})"))
    for i in ISAS])
def isa(request):
    previous = ext.get_isa()
    assert ext.set_isa(request.param) == request.param
    yield request.param
    ext.set_isa(previous)


@pytest.mark.skipif(ext is None or not _host_has("amx"), reason="this CPU has no AMX: nothing to compare")
def test_amx_and_avx512_paths_give_the_same_bits():
    # one integer sum and one shared epilogue: the float outputs are identical, not merely close
    torch.manual_seed(11)
    previous = ext.get_isa()
    try:
        # 130 x 768: over 64 KB of token tiles and K <= 1024, the path that streams them
        for m, n, k in [(128, 384, 384), (33, 100, 192), (130, 48, 768)]:
            for ternary in (False, True):
                codes = _codes(n, k, ternary, seed=12)
                prep = K.prepare_weights(codes, torch.rand(n), torch.randn(n), ternary)
                x = torch.randn(m, k)
                ys = []
                for isa in ("amx", "avx512_vnni"):
                    ext.set_isa(isa)
                    ys.append(ext.linear(x, prep["wp"], prep["colsum128"], prep["alpha"], prep["bias_p"], n, 1))
                assert torch.equal(*ys), (m, n, k, ternary)
    finally:
        ext.set_isa(previous)


def _codes(n, k, ternary, seed=0):
    g = torch.Generator().manual_seed(seed)
    if ternary:
        return torch.randint(-1, 2, (n, k), generator=g).to(torch.int8)
    return (torch.randint(0, 2, (n, k), generator=g) * 2 - 1).to(torch.int8)


@pytest.mark.parametrize("ternary", [False, True])
def test_integer_accumulation_is_exact(isa, ternary):
    # Integer inputs whose row max is 128 give s = 1 and q = x, so y is the exact integer dot product.
    g = torch.Generator().manual_seed(1)
    for m, n, k in SHAPES:
        codes = _codes(n, k, ternary)
        x = torch.randint(-127, 128, (m, k), generator=g).float()
        x[:, 0] = -128
        prep = K.prepare_weights(codes, torch.ones(n), None, ternary)
        y = ext.linear(x, prep["wp"], prep["colsum128"], prep["alpha"], prep["bias_p"], n, 0)
        assert torch.equal(y, (x.long() @ codes.long().t()).float()), (isa, m, n, k)


@pytest.mark.parametrize("sign", [1, -1])
def test_largest_sums_do_not_overflow(isa, sign):
    # Every product at its extreme (u8 code 255 times a weight of +-1) over a long K: the AVX2 path
    # sums 64 steps in int16 before widening, which must hold exactly at this bound.
    m, n, k = 8, 32, 4 * 64 * 3 + 4
    codes = torch.full((n, k), sign, dtype=torch.int8)
    x = torch.full((m, k), 127.0)
    x[:, -1] = 128.0  # s = 1: the codes are 127 (u8 255) and one 128, clamped to 127
    prep = K.prepare_weights(codes, torch.ones(n), None, False)
    y = ext.linear(x, prep["wp"], prep["colsum128"], prep["alpha"], prep["bias_p"], n, 0)
    assert torch.equal(y, torch.full((m, n), float(sign * 127 * k))), isa


@pytest.mark.parametrize("ternary", [False, True])
def test_scaled_output_matches_reference(isa, ternary):
    torch.manual_seed(2)
    for m, n, k in SHAPES:
        codes = _codes(n, k, ternary, seed=3)
        alpha, bias = torch.rand(n) * 0.1, torch.randn(n)
        x = torch.randn(m, k) * 3
        x[0] = 0.0  # a zero row stays zero (output = bias)
        prep = K.prepare_weights(codes, alpha, bias, ternary)
        y = ext.linear(x, prep["wp"], prep["colsum128"], prep["alpha"], prep["bias_p"], n, 0)
        ref = K.linear_reference(x, codes, alpha, bias)
        torch.testing.assert_close(y, ref, rtol=1e-6, atol=1e-5)
        torch.testing.assert_close(y[0], bias)


def test_activation_codes_equal_the_training_quantizer(isa):
    torch.manual_seed(4)
    x = torch.randn(9, 77) * 5
    x[1] = 0.0
    x[2, :4] = torch.tensor([2.5, -2.5, 1.5, 128.0])  # exact ties (s = 1): round half to even as torch
    q, s = ext.quantize_activations(x)
    q_ref, s_ref = K.quantize_activations_int(x)
    assert torch.equal(q, q_ref) and torch.equal(s, s_ref)
    torch.testing.assert_close(q.float() * s[:, None], quantize_activations(x), rtol=0, atol=0)


def test_activation_codes_equal_the_training_quantizer_near_ties(isa):
    # the vector paths multiply by 1 / s and divide exactly only near a half-integer quotient: every
    # code must still equal torch's x / s rounding, on random rows and on quotients at, just below and
    # just above half-integers (s = 1 and s = 0.75: the row maxima 128 and 96)
    torch.manual_seed(14)
    rows = [torch.randn(3000, 96) * torch.rand(3000, 1) * 10]
    halves = torch.arange(-127.5, 127.0, 1.0)
    for scale in (1.0, 0.75):
        base = halves * scale
        near = torch.stack([base, torch.nextafter(base, base + 1), torch.nextafter(base, base - 1)])
        block = torch.cat([near, torch.full((3, 1), 128.0 * scale)], dim=1)  # the row max fixes s
        rows.append(block)
    for x in rows:
        q, s = ext.quantize_activations(x.contiguous())
        q_ref, s_ref = K.quantize_activations_int(x)
        assert torch.equal(s, s_ref) and torch.equal(q, q_ref), isa


def test_tile_layout_round_trip():
    for n, k in [(1, 1), (17, 5), (33, 70)]:
        for ternary in (False, True):
            codes = _codes(n, k, ternary, seed=n)
            prep = K.prepare_weights(codes, torch.ones(n), None, ternary)  # C++
            wp, colsum = K.tiles_torch(codes, ternary)
            assert torch.equal(prep["wp"], wp) and torch.equal(prep["colsum128"], colsum)
            assert wp.shape == (-(-n // 16), -(-k // 4), 2 if ternary else 1)
            assert torch.equal(K.codes_from_tiles(wp, n, k), codes)


def test_fused_gelu_and_ffn(isa):
    torch.manual_seed(5)
    x = torch.randn(5000) * 4
    torch.testing.assert_close(ext.gelu(x), F.gelu(x), rtol=0, atol=3e-6)
    # far tails (erf saturated, clamped inside the kernel): exactly x, and exactly 0, as torch gives
    tails = torch.cat([torch.linspace(6, 1e4, 997), torch.tensor([3e38])])
    assert torch.equal(ext.gelu(tails), tails) and torch.equal(ext.gelu(-tails), torch.zeros_like(tails))
    # torch agrees up to 1e4; near float32's maximum its AVX-512 path overflows to inf (its AVX2 path
    # does not), so the last value is compared with x only, above
    assert torch.equal(F.gelu(tails[:-1]), tails[:-1]) and torch.equal(F.gelu(-tails), torch.zeros_like(tails))
    # AMX for both linears, neither, and only the first (the intermediate width 96 is not a multiple of 64);
    # 130 tokens x 768: the up projection streams its token tiles
    for m, h, i, ternary in [(5, 64, 128, False), (200, 32, 80, True), (150, 64, 96, True), (300, 128, 256, False),
                             (130, 768, 64, True)]:
        up, down = _codes(i, h, ternary, 6), _codes(h, i, ternary, 7)
        p1 = K.prepare_weights(up, torch.rand(i) * 0.1, torch.randn(i), ternary)
        p2 = K.prepare_weights(down, torch.rand(h) * 0.1, torch.randn(h), ternary)
        x = torch.randn(m, h)
        y = K.packed_ffn(x, p1, i, p2, h)
        pre = K.linear_reference(x, up, p1["alpha"][:i], p1["bias_p"][:i])
        # the kernel's own GELU (checked against torch's above): its last-digit differences from
        # torch's can move a re-quantized code of the intermediate by one step
        hid = ext.gelu(pre)
        torch.testing.assert_close(y, K.linear_reference(hid, down, p2["alpha"][:h], p2["bias_p"][:h]),
                                   rtol=1e-5, atol=1e-4)
        # the same GELU in a single linear's epilogue (packed_linear(act="gelu"); the FFN applies it
        # before re-quantizing instead)
        torch.testing.assert_close(K.packed_linear(x, p1, i, "gelu"), F.gelu(pre), rtol=1e-5, atol=1e-5)


def test_ffn_with_large_weights_and_few_tokens_splits_columns_across_threads_to_the_same_bits(isa):
    # BERT-base-sized FFN weights, fewer tokens than one chunk per thread: with 2 threads the two
    # linears share out column blocks instead of token chunks; the sums and epilogues are the same
    torch.manual_seed(8)
    h, i, m = 256, 8192, 40  # 4 * K * N >= 2**21: "large" weights
    p1 = K.prepare_weights(_codes(i, h, False, 9), torch.rand(i) * 0.05, torch.randn(i), False)
    p2 = K.prepare_weights(_codes(h, i, True, 10), torch.rand(h) * 0.05, torch.randn(h), True)
    x = torch.randn(m, h)
    previous = torch.get_num_threads()
    try:
        ys = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            ys.append(K.packed_ffn(x, p1, i, p2, h))
    finally:
        torch.set_num_threads(previous)
    assert torch.equal(*ys)
    hid = ext.gelu(K.linear_reference(x, _codes(i, h, False, 9), p1["alpha"][:i], p1["bias_p"][:i]))
    torch.testing.assert_close(ys[0], K.linear_reference(hid, _codes(h, i, True, 10), p2["alpha"][:h], p2["bias_p"][:h]),
                               rtol=1e-5, atol=1e-4)


def test_packed_modules_kernel_and_torch_paths_agree():
    torch.manual_seed(6)
    for kind in ("binary", "ternary"):
        codes = _codes(48, 40, kind == "ternary", 8)
        lin = PackedLinear(codes, torch.tensor([0.05]), torch.randn(48), kind, 8)
        assert lin.uses_kernel()
        x = torch.randn(2, 7, 40)
        torch.testing.assert_close(lin(x), lin._forward_torch(x), rtol=1e-6, atol=1e-6)
        assert torch.equal(lin.codes(), codes)
        up = PackedLinear(_codes(96, 40, False, 9), torch.tensor([0.1]), torch.randn(96), "binary", 8)
        down = PackedLinear(_codes(40, 96, False, 10), torch.tensor([0.1]), torch.randn(40), "binary", 8)
        ffn = PackedFFN(up, down, ("up", "down"))
        torch.testing.assert_close(ffn(x), down._forward_torch(F.gelu(up._forward_torch(x))), rtol=1e-5, atol=1e-4)


def test_siblings_on_one_input_run_once_and_only_for_the_same_tensor():
    torch.manual_seed(7)
    mods = [PackedLinear(_codes(n, 32, False, n), torch.tensor([0.1]), torch.randn(n), "binary", 8) for n in (16, 48, 8)]
    x = torch.randn(4, 32)
    outs = [K.group_linear(x, m, mods, group=3) for m in mods]  # first call computes all three
    for m, y in zip(mods, outs):
        torch.testing.assert_close(y, m._forward_torch(x), rtol=1e-6, atol=1e-6)
    y0 = K.group_linear(x, mods[1], mods, group=3)  # the slot was used up: computed afresh, same result
    torch.testing.assert_close(y0, outs[1])
    x.add_(1.0)  # modified in place: the version counter moved on, nothing stale is handed out
    y1 = K.group_linear(x, mods[0], mods, group=3)
    torch.testing.assert_close(y1, mods[0]._forward_torch(x), rtol=1e-6, atol=1e-6)
    y2 = K.group_linear(x.clone(), mods[2], mods, group=3)  # another tensor: recomputed
    torch.testing.assert_close(y2, mods[2]._forward_torch(x), rtol=1e-6, atol=1e-6)


def test_build_failure_warns_once_and_falls_back(monkeypatch):
    import torch.utils.cpp_extension as cpp

    def broken(*a, **k):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(cpp, "load", broken)
    monkeypatch.setattr(K, "_ext", None)
    monkeypatch.setattr(K, "_ext_error", None)
    with pytest.warns(RuntimeWarning, match="pure-torch path"):
        assert K.extension() is None
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert K.extension() is None  # no second warning
    assert K.kernel_info()["backend"] == "torch"
    lin = PackedLinear(_codes(20, 12, False), torch.tensor([0.1]), None, "binary", 8)
    x = torch.randn(3, 12)
    torch.testing.assert_close(lin(x), K.linear_reference(x, lin.codes(), torch.full((20,), 0.1), None))


def _attention_reference(q, k, v, batch, heads, scale, mask=None, bias=None):
    rows, width = q.shape
    t, d = rows // batch, width // heads

    def split(x):
        return x.view(batch, t, heads, d).transpose(1, 2)

    scores = torch.matmul(split(q), split(k).transpose(-1, -2)) * scale
    if bias is not None:
        scores = scores + bias
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
    return torch.matmul(torch.softmax(scores, -1), split(v)).transpose(1, 2).reshape(rows, width)


@pytest.mark.skipif(ext is None or not ext.float_ops_available(), reason="attention / LayerNorm kernels: AVX-512 hosts only")
def test_attention_and_layer_norm_kernels_match_torch():
    torch.manual_seed(13)
    for b, t, h, d in [(1, 128, 12, 32), (2, 7, 4, 16), (3, 70, 2, 64), (1, 1, 1, 16), (2, 65, 3, 48)]:
        q, k, v = (torch.randn(b * t, h * d) * 2 for _ in range(3))
        keep = torch.ones(b, 1, t, t, dtype=torch.bool)
        keep[-1, :, :, t // 2 + 1:] = False  # padded keys of the last sequence
        additive = torch.zeros(b, 1, 1, t)
        additive[-1, ..., t // 2 + 1:] = torch.finfo(torch.float32).min  # transformers' extended mask
        bias = torch.randn(1, h, t, t)  # MPNet's relative-position bias
        for mask, bias_ in [(None, None), (keep, None), (additive, bias)]:
            y = K.attention(q, k, v, b, h, d**-0.5, mask, bias_)
            torch.testing.assert_close(y, _attention_reference(q, k, v, b, h, d**-0.5, mask, bias_), rtol=1e-5, atol=1e-5)
    x, res = torch.randn(2, 5, 384) * 3, torch.randn(2, 5, 384)
    norm = torch.nn.LayerNorm(384, eps=1e-12)
    torch.nn.init.normal_(norm.weight), torch.nn.init.normal_(norm.bias)
    with torch.no_grad():
        torch.testing.assert_close(K.add_layer_norm(x.view(10, 384), res, norm), norm(x + res).view(10, 384),
                                   rtol=1e-5, atol=1e-5)
    # what the kernels do not take goes to torch's operators
    assert not K.float_ops(8) and K.float_ops(32) and not K.float_ops(32, torch.zeros(1, 2, 1, 5))
    assert not K.float_ops(32, torch.zeros(1, 1, 1, 5, dtype=torch.float16))


@pytest.mark.skipif(ext is None or not ext.float_ops_available(), reason="the fused LayerNorm needs the AVX-512 path")
def test_layer_norm_that_quantizes_equals_layer_norm_then_quantization():
    # add_layer_norm_pack hands the FFN its input already quantized (and the row maxima it found on the
    # way): the same codes and scales as quantizing the LayerNorm's output afterwards
    torch.manual_seed(14)
    for rows, width in [(37, 384), (128, 768), (5, 96)]:
        x, res = torch.randn(rows, width) * 3, torch.randn(rows, width)
        gamma, beta = torch.randn(width), torch.randn(width)
        y, ap, s = ext.add_layer_norm_pack(x, res, gamma, beta, 1e-12)
        assert torch.equal(y, ext.add_layer_norm(x, res, gamma, beta, 1e-12))
        ap_ref, s_ref = ext.pack_activations(y)
        assert torch.equal(ap, ap_ref) and torch.equal(s, s_ref)


def test_linear_time_is_summed_only_while_switched_on():
    # bench_inference's multiply-accumulates per second read this sum (a packed block is one call)
    prep = K.prepare_weights(_codes(64, 128, False, 3), torch.rand(64), None, False)
    x = torch.randn(20, 128)
    ext.time_linears(True)
    K.packed_linear(x, prep, 64)
    assert ext.time_linears(False) > 0
    K.packed_linear(x, prep, 64)
    assert ext.time_linears(False) == 0
