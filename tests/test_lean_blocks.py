"""The packed model's lean block forward gives exactly transformers' outputs (with xtc's own attention
and LayerNorm kernels: to float rounding), and steps aside for anything it does not cover (hooks,
attention capture, training mode)."""

import pytest
import torch

import xtc
from xtc.packed import kernels, load_packed, save_packed
from xtc.packed.lean_blocks import use_lean_blocks

pytestmark = pytest.mark.skipif(kernels.extension() is None, reason="the lean blocks run on the packed kernels")

COMMON = dict(vocab_size=120, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
              max_position_embeddings=64, num_labels=3)


def _packed(family, bits, folder):
    import transformers as T

    torch.manual_seed(0)
    cls, cfg = {"bert": (T.BertForSequenceClassification, T.BertConfig),
                "roberta": (T.RobertaForSequenceClassification, T.RobertaConfig),
                "electra": (T.ElectraForSequenceClassification, T.ElectraConfig),
                "mpnet": (T.MPNetForSequenceClassification, T.MPNetConfig)}[family]
    model = cls(cfg(**COMMON)).eval()
    xtc.quantize_(model, xtc.XTCConfig(weight_bits=bits) if bits != "mixed" else MIXED)
    save_packed(model, folder)
    return load_packed(folder)


# mixed precision: ternary attention, binary FFN, except block 1's ternary FFN up-projection
MIXED = xtc.XTCConfig(weight_bits=1, groups="row", module_bits={"attention": 2, "1.intermediate": 2})


def _inputs():
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(5, 120, (3, 21), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 12:] = 0
    mask[2, 3:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def _blocks(model):  # the blocks on the lean forward (MPNet's encoder has a switched class of its own)
    return [m for m in model.modules() if hasattr(type(m), "_xtc_base_class") and "forward" in type(m).__dict__]


@pytest.mark.parametrize("family,bits", [("bert", 1), ("bert", 2), ("roberta", 1), ("electra", 2), ("mpnet", 1),
                                         ("mpnet", 2), ("bert", "mixed"), ("mpnet", "mixed")])
def test_lean_blocks_equal_transformers_blocks(tmp_path, family, bits):
    model = _packed(family, bits, tmp_path)
    assert len(_blocks(model)) == 2  # load_packed switched every block on
    inputs = _inputs()  # padded rows: the attention mask matters
    calls = []
    block = kernels.encoder_block
    with torch.inference_mode(), pytest.MonkeyPatch.context() as mp:
        mp.setattr(kernels, "encoder_block", lambda *a, **k: calls.append(1) or block(*a, **k))
        fused = model(**inputs).logits  # xtc's attention + LayerNorm where the host has them
        assert use_lean_blocks(model, True, float_kernels=False) == 0  # on already: only the option changes
        lean = model(**inputs, output_hidden_states=True)
        lean_logits = model(**inputs).logits
        assert use_lean_blocks(model, False) == 2 and not _blocks(model)
        reference = model(**inputs, output_hidden_states=True)
    assert len(calls) == (2 if kernels.float_ops(16) else 0)
    assert torch.equal(lean_logits, reference.logits) and torch.equal(lean.logits, reference.logits)
    assert not torch.equal(lean_logits[0], lean_logits[1])  # a real forward, not a constant
    torch.testing.assert_close(fused, reference.logits, rtol=1e-5, atol=1e-5)
    # transformers captures hidden states with a hook on the block itself: still recorded (with
    # output_hidden_states it also hooks BERT's self-attention, and those blocks then step aside)
    assert len(lean.hidden_states) == 3
    for a, b in zip(lean.hidden_states, reference.hidden_states):
        assert torch.equal(a, b)


def test_hooks_inside_a_block_and_training_mode_take_the_transformers_path(tmp_path, monkeypatch):
    model = _packed("bert", 1, tmp_path)
    inputs = _inputs()
    attention_cls = type(model.bert.encoder.layer[0].attention.self)
    original, calls = attention_cls.forward, []

    def counted(self, *args, **kwargs):
        calls.append(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(attention_cls, "forward", counted)
    use_lean_blocks(model, True, float_kernels=False)  # torch's float operators, to compare to the bit
    with torch.inference_mode():
        expected = model(**inputs).logits
    assert calls == []  # the lean path does not call transformers' self-attention

    hooked_module = model.bert.encoder.layer[1].attention.self
    seen = []
    handle = hooked_module.register_forward_hook(lambda m, a, out: seen.append(out))
    with torch.inference_mode():
        hooked = model(**inputs).logits
    handle.remove()
    assert calls == [hooked_module] and len(seen) == 1  # only the hooked block stepped aside
    assert torch.equal(hooked, expected)

    calls.clear()
    model.train()  # dropout applies in training mode: transformers' forward, which the lean one does not copy
    with torch.no_grad():
        model(**inputs)
    assert len(calls) == 2


def test_switching_off_and_on_is_idempotent_and_the_state_dict_is_unchanged(tmp_path):
    model = _packed("bert", 2, tmp_path)
    names = list(model.state_dict())
    assert use_lean_blocks(model, True) == 0  # already on
    assert use_lean_blocks(model, False) == 2 and use_lean_blocks(model, False) == 0
    assert use_lean_blocks(model, True) == 2
    assert list(model.state_dict()) == names
    assert isinstance(model.bert.encoder.layer[0], type(model.bert.encoder.layer[0])._xtc_base_class)


@pytest.mark.skipif(not kernels.float_ops(16), reason="xtc's float kernels need an AVX-512 (or AMX) host")
@pytest.mark.parametrize("family,bits", [("bert", 1), ("bert", 2), ("mpnet", 1), ("mpnet", "mixed")])
def test_one_call_block_equals_the_kernels_op_by_op(tmp_path, family, bits):
    # kernels.encoder_block runs a whole block in C++; it must give the bits of the same kernels
    # called one by one from Python (the lean forward's float-kernel path before it existed)
    model = _packed(family, bits, tmp_path)
    block = _blocks(model)[0]
    g = torch.Generator().manual_seed(5)
    x = torch.randn(3, 21, COMMON["hidden_size"], generator=g)
    keep = torch.rand(3, 1, 1, 21, generator=g) > 0.3
    if family == "mpnet":
        attn, norm1 = block.attention.attn, block.attention.LayerNorm
        qkv, out, heads, scale = [attn.q, attn.k, attn.v], attn.o, attn.num_attention_heads, attn.attention_head_size ** -0.5
        bias = torch.randn(1, heads, 21, 21, generator=g)
    else:
        attn = block.attention.self
        qkv, out, norm1 = [attn.query, attn.key, attn.value], block.attention.output.dense, block.attention.output.LayerNorm
        heads, scale, bias = attn.num_attention_heads, attn.scaling, None
    with torch.inference_mode():
        one_call = kernels.encoder_block(x, 3, heads, scale, keep, bias, qkv, out, norm1, block.intermediate,
                                         block.output.LayerNorm)
        context = kernels.attention(*kernels.packed_linears(x, qkv), 3, heads, scale, keep, bias)
        attended = kernels.add_layer_norm(out(context), x, norm1)
        op_by_op = kernels.add_layer_norm(block.intermediate(attended), attended, block.output.LayerNorm)
    assert torch.equal(one_call, op_by_op)
    assert not torch.equal(one_call[0], one_call[1])


def test_mpnet_position_bias_is_computed_once_per_length_and_table(tmp_path):
    # the relative-position bias depends only on the length and the bias table: the packed model
    # keeps it per length, as a batch-broadcast view, and recomputes it when the table is edited
    model = _packed("mpnet", 1, tmp_path)
    encoder = model.mpnet.encoder
    reference = type(encoder)._xtc_base_class.compute_position_bias
    x = torch.zeros(3, 21, COMMON["hidden_size"])
    with torch.inference_mode():
        first, again = encoder.compute_position_bias(x), encoder.compute_position_bias(x)
        assert torch.equal(first, reference(encoder, x)) and first.shape == (3, 4, 21, 21)
        assert first.stride(0) == 0 and again.data_ptr() == first.data_ptr()  # one copy, reused
        shorter = encoder.compute_position_bias(x[:, :9])
        assert torch.equal(shorter, reference(encoder, x[:, :9]))
    with torch.no_grad():
        encoder.relative_attention_bias.weight.add_(1.0)
    with torch.inference_mode():
        assert torch.equal(encoder.compute_position_bias(x), reference(encoder, x))
        assert torch.equal(model(**_inputs()).logits, model(**_inputs()).logits)
    with torch.enable_grad():  # outside inference (training, gradients): transformers' own, uncached
        assert encoder.compute_position_bias(x).stride(0) != 0
    assert use_lean_blocks(model, False) == 2 and not hasattr(type(encoder), "_xtc_base_class")
    assert "_xtc_position_bias" not in encoder.__dict__
