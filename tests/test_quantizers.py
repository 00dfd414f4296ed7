import pytest
import torch

from xtc.quantizers import (
    absmean_codes,
    available_weight_quantizers,
    binarize,
    binary_codes,
    get_weight_quantizer,
    quantize_activations,
    quantize_symmetric,
    register_weight_quantizer,
    ternarize,
    ternary_codes,
)


def test_binarize_hand_computed():
    w = torch.tensor([[0.5, -1.5], [0.0, 2.0]])
    # alpha = mean |W| = (0.5 + 1.5 + 0 + 2) / 4 = 1.0 ; sign(0) = +1
    assert torch.equal(binarize(w), torch.tensor([[1.0, -1.0], [1.0, 1.0]]))


def test_binarize_groups_are_rows():
    w = torch.tensor([[1.0, -3.0], [0.5, 0.5]])
    # row 0: alpha 2 ; row 1: alpha 0.5
    assert torch.equal(binarize(w, groups=2), torch.tensor([[2.0, -2.0], [0.5, 0.5]]))


def test_ternarize_hand_computed():
    w = torch.tensor([[1.0, -1.0, 0.1, 0.2]])
    # mean|W| = 0.575, delta = 0.4025 ; mask = [1, 1, 0, 0] ; alpha = mean(1, 1) = 1
    assert torch.allclose(ternarize(w), torch.tensor([[1.0, -1.0, 0.0, 0.0]]))


def test_ternarize_empty_mask_gives_zeros_not_nan():
    w = torch.zeros(4, 4)
    w[0] = torch.tensor([3.0, -1.0, 0.5, 0.2])
    q = ternarize(w, groups=4)  # rows 1..3: all zero, the mask is empty
    assert torch.isfinite(q).all()
    assert torch.equal(q[1:], torch.zeros(3, 4))
    # row 0: mean|W| = 1.175, delta 0.8225 -> mask [1, 1, 0, 0], alpha = 2
    assert torch.allclose(q[0], torch.tensor([2.0, -2.0, 0.0, 0.0]))


def test_quantize_symmetric_hand_computed():
    w = torch.tensor([[3.0, -1.0, 0.4, 0.0]])
    # 3 bits: qmax 3, scale = 3/3 = 1 -> round: [3, -1, 0, 0]
    assert torch.equal(quantize_symmetric(w, bits=3), torch.tensor([[3.0, -1.0, 0.0, 0.0]]))
    assert torch.equal(quantize_symmetric(torch.zeros(2, 2), bits=4), torch.zeros(2, 2))


def test_activation_quantization_per_token():
    x = torch.tensor([[1.0, -0.5, 0.25], [0.0, 0.0, 0.0], [100.0, 1.0, -100.0]])
    q = quantize_activations(x, bits=8)
    # row 0: s = 2 * 1 / 256 = 1/128 ; 1.0/s = 128 -> clamped to 127
    assert torch.allclose(q[0], torch.tensor([127 / 128, -0.5, 0.25]))
    assert torch.equal(q[1], torch.zeros(3))  # zero row stays zero
    s = 200 / 256
    assert torch.allclose(q[2], torch.tensor([127 * s, round(1 / s) * s, -128 * s]))


@pytest.mark.parametrize("fn", [binarize, ternarize, lambda w: quantize_symmetric(w, 4),
                                quantize_activations])
def test_straight_through_gradient_is_identity(fn):
    w = torch.randn(8, 16, requires_grad=True)
    g = torch.randn(8, 16)
    (fn(w) * g).sum().backward()
    assert torch.equal(w.grad, g)


def test_bad_groups_rejected():
    with pytest.raises(ValueError, match="groups=3"):
        binarize(torch.randn(4, 4), groups=3)


def test_registry_plugs_in_a_scheme():
    name = "test-halve"
    if name not in available_weight_quantizers():
        register_weight_quantizer(name)(lambda w, bits, groups=1: w * 0.5)
    assert torch.equal(get_weight_quantizer(name)(torch.ones(2), bits=1), torch.full((2,), 0.5))
    with pytest.raises(ValueError, match="registered"):
        get_weight_quantizer("nope")


@pytest.mark.parametrize("codes", [binary_codes, ternary_codes, absmean_codes])
def test_scales_do_not_depend_on_thread_count(codes):
    # a float32 sum over a whole matrix is split differently on 1 and on 2 threads; a last-bit change
    # in the scale flipped CoLA dev predictions between training (1 thread) and `xtc evaluate` (2)
    # (a float32 sum differs in its last bit for about half of such matrices; 16 make a miss unlikely)
    w = torch.randn(16, 384 * 384, generator=torch.Generator().manual_seed(0)) * 0.05
    before = torch.get_num_threads()
    try:
        scales = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            scales.append(torch.stack([codes(m)[1] for m in w]))
    finally:
        torch.set_num_threads(before)
    assert torch.equal(scales[0], scales[1])
