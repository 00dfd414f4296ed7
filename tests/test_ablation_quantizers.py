"""The ablation schemes: BitNet b1.58 absmean ternary and learned step size (LSQ)."""

import math

import pytest
import torch
from conftest import tiny_bert

import xtc
from xtc.modules import QuantEmbedding, QuantLinear
from xtc.quantizers import (
    absmean_codes,
    absmean_ternarize,
    available_weight_quantizers,
    get_weight_quantizer,
    lsq_codes,
    lsq_init,
    lsq_quantize,
    weight_quantizer_state_init,
)
from xtc.surgery import quantized_modules


def test_schemes_are_registered():
    assert {"binary", "ternary", "absmean", "lsq"} <= set(available_weight_quantizers())
    assert weight_quantizer_state_init("lsq") is lsq_init
    assert weight_quantizer_state_init("absmean") is None and weight_quantizer_state_init("binary") is None


def test_absmean_hand_computed():
    w = torch.tensor([[0.5, -1.5, 0.1, 2.0]])
    # s = mean|W| = 4.1 / 4 = 1.025 ; W/s = [0.49, -1.46, 0.10, 1.95] -> round [0, -1, 0, 2] -> clamp [0, -1, 0, 1]
    s = 1.025
    assert torch.allclose(absmean_ternarize(w), torch.tensor([[0.0, -s, 0.0, s]]))
    codes, scales = absmean_codes(w)
    assert torch.equal(codes, torch.tensor([[0.0, -1.0, 0.0, 1.0]])) and scales.item() == pytest.approx(s)
    # groups are rows; an all-zero row stays zero (no NaN)
    w2 = torch.tensor([[1.0, -3.0], [0.0, 0.0]])  # row 0: s = 2, W/s = [0.5, -1.5] -> round half to even [0, -2]
    assert torch.equal(absmean_ternarize(w2, groups=2), torch.tensor([[0.0, -2.0], [0.0, 0.0]]))


def test_absmean_straight_through_and_bits():
    w = torch.randn(8, 16, requires_grad=True)
    g = torch.randn(8, 16)
    (get_weight_quantizer("absmean")(w, bits=2) * g).sum().backward()
    assert torch.equal(w.grad, g)
    with pytest.raises(ValueError, match="weight_bits=2"):
        get_weight_quantizer("absmean")(w, bits=1)
    with pytest.raises(ValueError, match="weight_bits=2"):
        xtc.quantize_(tiny_bert(layers=1), xtc.XTCConfig(weight_bits=1, weight_scheme="absmean"))


def test_lsq_init_hand_computed():
    w = torch.tensor([[1.0, -3.0], [0.5, 0.5]])  # mean|W| per row: 2, 0.5
    assert torch.allclose(lsq_init(w, bits=2, groups=2), torch.tensor([4.0, 1.0]))  # 2 mean / sqrt(1)
    assert torch.allclose(lsq_init(w, bits=4, groups=2), torch.tensor([4.0, 1.0]) / math.sqrt(7))
    assert torch.allclose(lsq_init(w, bits=1, groups=2), torch.tensor([2.0, 0.5]))  # binary: mean|W|
    assert torch.allclose(lsq_init(w, bits=2), torch.tensor([2 * 1.25]))
    assert lsq_init(torch.zeros(2, 2), bits=2).item() > 0  # never a zero step


def test_lsq_ternary_values_and_gradients_hand_computed():
    w = torch.tensor([0.3, 0.7, -1.6, 2.5], requires_grad=True)
    s = torch.tensor([1.0], requires_grad=True)
    q = lsq_quantize(w, bits=2, groups=1, state=s)
    # W/s clamped to [-1, 1]: [0.3, 0.7, -1, 1] -> round [0, 1, -1, 1]
    assert torch.equal(q.detach(), torch.tensor([0.0, 1.0, -1.0, 1.0]))
    (q * torch.tensor([1.0, 2.0, 3.0, 4.0])).sum().backward()
    # to W: 1 inside the clipping range, 0 outside
    assert torch.equal(w.grad, torch.tensor([1.0, 2.0, 0.0, 0.0]))
    # to s: inside R(x) - x = -0.3, +0.3 ; outside -Qn = -1, +Qp = +1 ; weighted by 1,2,3,4:
    # -0.3 + 0.6 - 3 + 4 = 1.3 ; gradient scale 1 / sqrt(N Qp) = 1 / sqrt(4) -> 0.65
    assert s.grad.item() == pytest.approx(0.65)


def test_lsq_binary_values_and_gradients_hand_computed():
    w = torch.tensor([0.3, -0.7, -1.6, 2.5], requires_grad=True)
    s = torch.tensor([1.0], requires_grad=True)
    q = lsq_quantize(w, bits=1, groups=1, state=s)
    assert torch.equal(q.detach(), torch.tensor([1.0, -1.0, -1.0, 1.0]))  # sign levels, no zero
    (q * torch.tensor([1.0, 2.0, 3.0, 4.0])).sum().backward()
    assert torch.equal(w.grad, torch.tensor([1.0, 2.0, 0.0, 0.0]))
    # inside: (1 - 0.3) * 1 + (-1 + 0.7) * 2 = 0.1 ; outside: -3 + 4 = 1 ; x 1/2
    assert s.grad.item() == pytest.approx(0.55)


@pytest.mark.parametrize("bits, groups", [(1, 1), (2, 4), (4, 2)])
def test_lsq_gradients_match_the_formula_of_the_paper(bits, groups):
    # LSQ's gradients (eq. 3 and section 2.2): d v^/d s = -v/s + round(v/s) inside the range, -Qn or Qp
    # outside, times g = 1/sqrt(N Qp); d v^/d v = 1 inside, 0 outside. Not the derivative of the
    # value (rounding is flat): the -v/s term is the straight-through part, so no finite differences.
    torch.manual_seed(bits)
    w = (torch.randn(4, 8) * 0.1).requires_grad_()
    s = (lsq_init(w, bits, groups) * torch.rand(groups) * 2).requires_grad_()
    up = torch.randn(4, 8)
    (lsq_quantize(w, bits, groups, state=s) * up).sum().backward()
    qn, qp = (1, 1) if bits <= 2 else (7, 7)
    x = w.detach().reshape(groups, -1) / s.detach()[:, None]
    inside = (x >= -qn) & (x <= qp)
    r = torch.where(x >= 0, 1.0, -1.0) if bits == 1 else torch.round(x)
    per = torch.where(inside, r - x, x.clamp(-qn, qp))
    expected_s = (per * up.reshape(groups, -1)).sum(1) / math.sqrt(x.shape[1] * qp)
    assert torch.allclose(s.grad, expected_s, atol=1e-5)
    assert torch.allclose(w.grad, (up.reshape(groups, -1) * inside).reshape(4, 8), atol=1e-6)


def test_lsq_codes_and_bad_state():
    w = torch.tensor([[0.3, 0.7, -1.6, 2.5]])
    codes, steps = lsq_codes(w, bits=2, groups=1, state=torch.tensor([1.0]))
    assert torch.equal(codes, torch.tensor([[0.0, 1.0, -1.0, 1.0]])) and steps.item() == 1.0
    codes, _ = lsq_codes(w, bits=3, groups=1, state=torch.tensor([0.5]))  # Qp = 3: [0.6, 1.4, -3.2, 5]
    assert torch.equal(codes, torch.tensor([[1.0, 1.0, -3.0, 3.0]]))
    with pytest.raises(ValueError, match="step size"):
        lsq_quantize(w, bits=2)
    with pytest.raises(ValueError, match="groups"):
        lsq_quantize(w, bits=2, groups=1, state=torch.ones(2))


def test_lsq_modules_own_a_trained_step_size():
    model = tiny_bert(layers=2)
    xtc.quantize_(model, xtc.XTCConfig(weight_bits=2, weight_scheme="lsq"))
    lin = model.bert.encoder.layer[0].attention.self.query
    assert isinstance(lin, QuantLinear) and lin.step_size.shape == (1,)
    assert lin.step_size.item() == pytest.approx(2 * lin.weight.abs().mean().item(), rel=1e-5)
    emb = model.bert.embeddings.word_embeddings
    assert isinstance(emb, QuantEmbedding) and emb.step_size.shape == (emb.num_embeddings,)
    keys = [k for k in model.state_dict() if k.endswith("step_size")]
    assert len(keys) == 2 * 6 + 1  # one per quantized linear and the embedding
    assert any(n.endswith("query.step_size") for n, _ in model.named_parameters())
    ids = torch.tensor([[1, 5, 7], [0, 0, 3]])
    assert torch.allclose(emb(ids), emb.quantized_weight()[ids])  # per-row step looked up per token
    model(input_ids=ids).logits.sum().backward()
    assert lin.step_size.grad is not None and lin.step_size.grad.abs().item() > 0
    assert emb.step_size.grad[5].abs().item() > 0 and emb.step_size.grad[2].item() == 0  # only used rows
    # a stateless scheme adds no key
    plain = tiny_bert(layers=1)
    before = set(plain.state_dict())
    xtc.quantize_(plain, xtc.XTCConfig(weight_bits=2, weight_scheme="absmean"))
    assert set(plain.state_dict()) == before


@pytest.mark.parametrize("bits", [1, 2])
def test_lsq_checkpoint_round_trips_with_learned_steps(tmp_path, bits):
    model = tiny_bert(layers=2)
    xtc.quantize_(model, xtc.XTCConfig(weight_bits=bits, weight_scheme="lsq"))
    with torch.no_grad():  # move the steps away from their initial value, as training does
        for m in quantized_modules(model).values():
            m.step_size.mul_(1.7)
    model.save_pretrained(tmp_path)
    loaded = xtc.load_quantized(tmp_path).eval()
    ids = torch.randint(0, 1000, (2, 6))
    q = loaded.bert.encoder.layer[1].output.dense
    assert torch.equal(q.step_size, model.bert.encoder.layer[1].output.dense.step_size)
    assert torch.allclose(loaded(input_ids=ids).logits, model.eval()(input_ids=ids).logits, atol=1e-5)


def test_lsq_checkpoint_without_steps_is_refused(tmp_path):
    model = tiny_bert(layers=1)
    model.config.xtc = xtc.XTCConfig(weight_bits=2, weight_scheme="lsq").to_dict()  # config claims lsq, no steps
    model.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="missing .*step_size"):
        xtc.load_quantized(tmp_path)
