"""quantize_, reduce_layers and distillation on every supported encoder family (tiny random models)."""

import pytest
import torch
from torch import nn

import xtc
from xtc.distillation import Distiller, capture_attention_scores, uses_attention_interface
from xtc.modules import QuantEmbedding, QuantLinear
from xtc.surgery import TESTED_FAMILIES, UnsupportedModelError, quantized_modules

COMMON = dict(vocab_size=100, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64,
              max_position_embeddings=64, num_labels=3)


def _build(family: str):
    import transformers as T

    torch.manual_seed(0)
    if family == "bert":
        return T.BertForSequenceClassification(T.BertConfig(**COMMON))
    if family == "roberta":
        return T.RobertaForSequenceClassification(T.RobertaConfig(**COMMON))
    if family == "xlm-roberta":
        return T.XLMRobertaForSequenceClassification(T.XLMRobertaConfig(**COMMON))
    if family == "electra":  # embedding_size != hidden_size: an embedding projection outside the blocks
        return T.ElectraForSequenceClassification(T.ElectraConfig(embedding_size=16, **COMMON))
    if family == "distilbert":  # n_layers / dim / n_heads / hidden_dim
        return T.DistilBertForSequenceClassification(T.DistilBertConfig(
            vocab_size=100, dim=32, n_layers=3, n_heads=4, hidden_dim=64, max_position_embeddings=64, num_labels=3))
    if family == "mpnet":
        return T.MPNetForSequenceClassification(T.MPNetConfig(**COMMON))
    if family == "deberta-v2":  # DeBERTa-v3 style: relative attention, c2p + p2c, shared keys
        return T.DebertaV2ForSequenceClassification(T.DebertaV2Config(
            relative_attention=True, pos_att_type=["p2c", "c2p"], position_buckets=16, share_att_key=True,
            norm_rel_ebd="layer_norm", position_biased_input=False, type_vocab_size=0, **COMMON))
    if family == "deberta-v2-unshared":  # separate position projections per layer
        return T.DebertaV2ForSequenceClassification(T.DebertaV2Config(
            relative_attention=True, pos_att_type=["p2c", "c2p"], max_relative_positions=32, share_att_key=False,
            **COMMON))
    raise AssertionError(family)


FAMILIES = ["bert", "roberta", "xlm-roberta", "electra", "distilbert", "mpnet", "deberta-v2", "deberta-v2-unshared"]
# the weight matrices XTC quantizes in one block: q, k, v, attention out, FFN up, FFN down
PER_LAYER = {f: 6 for f in FAMILIES} | {"deberta-v2-unshared": 8}  # + DeBERTa's pos_key_proj, pos_query_proj
HEAD_LINEARS = {"bert": ["classifier", "bert.pooler.dense"],
                "roberta": ["classifier.dense", "classifier.out_proj"],
                "xlm-roberta": ["classifier.dense", "classifier.out_proj"],
                "electra": ["classifier.dense", "classifier.out_proj", "electra.embeddings_project"],
                "distilbert": ["pre_classifier", "classifier"],
                "mpnet": ["classifier.dense", "classifier.out_proj"],
                "deberta-v2": ["classifier", "pooler.dense"],
                "deberta-v2-unshared": ["classifier", "pooler.dense"]}


def _batch():
    torch.manual_seed(1)
    ids = torch.randint(5, 100, (2, 7))
    mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3])
    return {"input_ids": ids, "attention_mask": mask}


def test_every_family_is_listed():
    assert {f for f in FAMILIES if "unshared" not in f} <= set(TESTED_FAMILIES)


@pytest.mark.parametrize("family", FAMILIES)
def test_quantize_replaces_the_block_linears_and_word_embedding_only(family):
    model = _build(family)
    modules = dict(model.named_modules())
    xtc.quantize_(model, xtc.XTCConfig(weight_bits=1))
    linears = [n for n, m in quantized_modules(model).items() if isinstance(m, QuantLinear)]
    assert len(linears) == 3 * PER_LAYER[family]
    assert len(xtc.find_layers(model)) == 3
    assert isinstance(model.get_input_embeddings(), QuantEmbedding)
    for name in HEAD_LINEARS[family]:  # heads, pooler, embedding projection: full precision
        assert type(dict(model.named_modules())[name]) is nn.Linear, name
    # every other embedding (positions, token types, relative positions) stays full precision
    embeddings = [m for m in model.modules() if isinstance(m, nn.Embedding)]
    assert sum(isinstance(m, QuantEmbedding) for m in embeddings) == 1
    assert len(modules) == len(dict(model.named_modules()))  # replaced in place, nothing added


@pytest.mark.parametrize("family", FAMILIES)
def test_reduce_layers_and_one_distillation_step(family):
    teacher = _build(family).eval()
    batch = _batch()
    # the captured scores are the pre-softmax ones: softmax over the real keys gives the model's probabilities
    probs = teacher(**batch, output_attentions=True).attentions
    with torch.no_grad(), capture_attention_scores(teacher) as scores:
        ref = teacher(**batch).logits
    assert len(scores) == 3 and scores[0].shape == (2, 4, 7, 7)
    keys = batch["attention_mask"][:, None, None, :] == 0
    for s, p in zip(scores, probs):
        assert torch.allclose(s.masked_fill(keys, float("-inf")).softmax(-1)[0], p[0], atol=1e-5)
        assert torch.allclose(s.masked_fill(keys, float("-inf")).softmax(-1)[1, :, :4], p[1, :, :4], atol=1e-5)
    with torch.no_grad():  # capturing changes nothing
        assert torch.allclose(teacher(**batch).logits, ref, atol=1e-6)

    student = xtc.reduce_layers(teacher, [0, 2])
    assert len(xtc.find_layers(student)) == 2 and student.config.num_hidden_layers == 2
    assert len(xtc.find_layers(teacher)) == 3 and teacher.config.num_hidden_layers == 3
    assert xtc.layer_map(student) == [0, 2]
    identical = Distiller(teacher, xtc.reduce_layers(teacher, [0, 1, 2]), [0, 1, 2])
    _, _, parts = identical(**batch)
    assert parts["att"] < 1e-8 and parts["hid"] < 1e-8  # the pairing of scores and hidden states is right

    xtc.quantize_(student, xtc.XTCConfig(weight_bits=1))
    student.train()
    loss, out, parts = Distiller(teacher, student, xtc.layer_map(student))(**batch, labels=torch.tensor([0, 2]))
    assert torch.isfinite(loss) and parts["att"] > 0 and parts["hid"] > 0 and parts["pred"] > 0
    loss.backward()
    grads = [m.weight.grad for m in quantized_modules(student).values()]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)
    assert all(p.grad is None for p in teacher.parameters())
    with capture_attention_scores(student) as s_scores:
        student(**batch)
    assert len(s_scores) == 2


@pytest.mark.parametrize("family", FAMILIES)
def test_reduced_quantized_checkpoint_round_trips(family, tmp_path):
    from transformers import AutoModelForSequenceClassification

    student = xtc.reduce_layers(_build(family), [1, 2])
    xtc.quantize_(student, xtc.XTCConfig(weight_bits=2))
    student.eval().save_pretrained(tmp_path)
    if family == "distilbert":
        assert student.config.n_layers == 2  # its own name for the layer count
    loaded = xtc.load_quantized(tmp_path, AutoModelForSequenceClassification).eval()
    assert type(loaded) is type(student) and len(xtc.find_layers(loaded)) == 2
    assert len(quantized_modules(loaded)) == len(quantized_modules(student))
    batch = _batch()
    with torch.no_grad():
        assert torch.allclose(loaded(**batch).logits, student(**batch).logits, atol=1e-5)


def test_families_that_compute_attention_themselves_are_captured_at_the_softmax():
    assert not uses_attention_interface(_build("mpnet")) and not uses_attention_interface(_build("deberta-v2"))
    for family in ("bert", "roberta", "xlm-roberta", "electra", "distilbert"):
        assert uses_attention_interface(_build(family)), family
    # nothing global is replaced: the capture is a torch function mode active only inside the attention
    # modules' forwards; a softmax outside them (here, before the forward and in the head) is not recorded
    f = torch.nn.functional.softmax
    model = _build("mpnet").eval()
    with capture_attention_scores(model) as scores:
        assert torch.nn.functional.softmax is f
        torch.nn.functional.softmax(torch.zeros(3), dim=-1)
        assert scores == []
        model(**_batch())
    assert len(scores) == 3 and all(s.shape == (2, 4, 7, 7) for s in scores)


def test_unsupported_models_are_refused_with_the_supported_families():
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=100))  # Conv1D, not nn.Linear
    for model in (gpt2, nn.Sequential(nn.Linear(2, 2))):
        with pytest.raises(UnsupportedModelError, match="deberta-v2"):
            xtc.quantize_(model, xtc.XTCConfig())
        with pytest.raises(UnsupportedModelError, match="mpnet"):
            xtc.reduce_layers(model, [0])


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("bits", [1, 2])
def test_every_family_packs_loads_and_predicts(family, bits, tmp_path):
    """save_packed -> load_packed on every family: the packed model computes the quantized student's
    logits (the integer kernels against the fake-quant arithmetic: equal up to float rounding)."""
    from xtc.packed import load_packed, save_packed

    student = xtc.reduce_layers(_build(family), [0, 2]).eval()
    xtc.quantize_(student, xtc.XTCConfig(weight_bits=bits))
    save_packed(student, tmp_path)
    packed = load_packed(tmp_path)
    assert type(packed) is type(student)
    batch = _batch()
    with torch.no_grad():
        expected, got = student(**batch).logits, packed(**batch).logits
    torch.testing.assert_close(got, expected, rtol=0, atol=2e-3)
    assert not torch.allclose(got[0], got[1])


def test_mpnet_relative_position_bias_is_shared_and_kept_by_layer_reduction():
    """MPNet computes its relative-position bias once in the encoder (one table for all layers) and
    hands it to every block: a reduced student keeps that table, so each copied block sees the very
    bias it saw in the teacher. The student's output equals the teacher's kept blocks run in turn."""
    teacher = _build("mpnet").eval()
    student = xtc.reduce_layers(teacher, [0, 2]).eval()
    t_enc, s_enc = teacher.mpnet.encoder, student.mpnet.encoder
    assert torch.equal(s_enc.relative_attention_bias.weight, t_enc.relative_attention_bias.weight)
    assert s_enc.relative_attention_bias.weight.data_ptr() != t_enc.relative_attention_bias.weight.data_ptr()
    batch = _batch()
    with torch.no_grad():
        hidden = teacher.mpnet.embeddings(input_ids=batch["input_ids"])
        mask = (1.0 - batch["attention_mask"][:, None, None, :].float()) * torch.finfo(torch.float32).min
        bias = t_enc.compute_position_bias(hidden)
        for i in (0, 2):
            hidden = t_enc.layer[i](hidden, mask, bias)[0]
        by_hand = teacher.classifier(hidden)
        torch.testing.assert_close(student(**batch).logits, by_hand, rtol=0, atol=1e-5)
