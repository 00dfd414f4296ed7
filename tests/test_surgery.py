import pytest
import torch
from conftest import tiny_bert
from torch import nn

import xtc
from xtc.errors import ConfigError
from xtc.modules import QuantEmbedding, QuantLinear
from xtc.surgery import UnsupportedModelError, quantized_modules


def test_quantize_replaces_exactly_the_xtc_modules_and_keeps_latent_weights():
    model = tiny_bert(layers=3)
    before = {n: p for n, p in model.named_parameters()}
    q_weight = model.bert.encoder.layer[0].attention.self.query.weight
    xtc.quantize_(model, xtc.XTCConfig(weight_bits=1))
    quant = quantized_modules(model)
    linears = [n for n, m in quant.items() if isinstance(m, QuantLinear)]
    # 6 linears per layer: query, key, value, attention output, FFN up, FFN down
    assert len(linears) == 3 * 6
    assert {n.split(".")[-1] for n in linears} == {"query", "key", "value", "dense"}
    assert isinstance(model.bert.embeddings.word_embeddings, QuantEmbedding)
    # full precision: pooler, classifier, position/token-type embeddings
    assert type(model.bert.pooler.dense) is nn.Linear and type(model.classifier) is nn.Linear
    assert type(model.bert.embeddings.position_embeddings) is nn.Embedding
    # the latent weights are the very same parameters, under the same names
    assert model.bert.encoder.layer[0].attention.self.query.weight is q_weight
    assert {n: p for n, p in model.named_parameters()} == before


def test_quantized_forward_uses_quantized_weights():
    model = tiny_bert(layers=1)
    x = torch.randn(2, 5, 32)
    xtc.quantize_(model, xtc.XTCConfig(weight_bits=1, activation_bits=None))
    lin = model.bert.encoder.layer[0].attention.self.query
    assert isinstance(lin, QuantLinear)
    expected = x @ xtc.binarize(lin.weight).T + lin.bias
    assert torch.allclose(lin(x), expected, atol=1e-6)


def test_quantized_embedding_matches_table_quantization():
    model = tiny_bert(layers=1)
    xtc.quantize_(model, xtc.XTCConfig(weight_bits=2))
    emb = model.bert.embeddings.word_embeddings
    ids = torch.tensor([[1, 5, 7], [0, 0, 3]])
    assert torch.allclose(emb(ids), emb.quantized_weight()[ids])


def test_quantized_checkpoint_round_trips(tmp_path):
    model = tiny_bert(layers=2)
    xtc.quantize_(model, xtc.XTCConfig(weight_bits=2, activation_bits=8))
    model.save_pretrained(tmp_path)
    loaded = xtc.load_quantized(tmp_path).eval()
    ids = torch.randint(0, 1000, (2, 6))
    assert len(quantized_modules(loaded)) == len(quantized_modules(model))
    assert torch.allclose(loaded(input_ids=ids).logits, model(input_ids=ids).logits, atol=1e-5)


def test_embedding_bits_survive_a_quantized_checkpoint(tmp_path):
    model = tiny_bert(layers=1)
    xtc.quantize_(model, xtc.XTCConfig(weight_bits=1, embedding_bits=2))
    model.save_pretrained(tmp_path)
    emb = xtc.load_quantized(tmp_path).get_input_embeddings()
    assert isinstance(emb, QuantEmbedding) and (emb.weight_bits, emb.weight_scheme) == (2, "ternary")


def test_module_bits_give_the_named_linears_their_own_bits_and_survive_a_checkpoint(tmp_path):
    model = tiny_bert(layers=2)
    config = xtc.XTCConfig(weight_bits=1, module_bits={"attention": 2, "0.attention.self.query": 1, "1.output": 2})
    xtc.quantize_(model, config)
    bits = {n: (m.weight_bits, m.weight_scheme) for n, m in quantized_modules(model).items() if isinstance(m, QuantLinear)}
    layer = "bert.encoder.layer"
    assert bits[f"{layer}.0.attention.self.query"] == (1, "binary")  # the longest pattern wins
    assert bits[f"{layer}.0.attention.self.key"] == bits[f"{layer}.1.attention.output.dense"] == (2, "ternary")
    assert bits[f"{layer}.0.output.dense"] == bits[f"{layer}.1.intermediate.dense"] == (1, "binary")
    assert bits[f"{layer}.1.output.dense"] == (2, "ternary")  # "1.output": block 1's FFN down only
    model.save_pretrained(tmp_path)
    loaded = xtc.load_quantized(tmp_path)
    assert {n: (m.weight_bits, m.weight_scheme) for n, m in quantized_modules(loaded).items()
            if isinstance(m, QuantLinear)} == bits
    same = xtc.XTCConfig(weight_bits=1, module_bits={"1.output": 2, "attention": 2, "0.attention.self.query": 1})
    assert same == config and hash(same) == hash(config) and len({config, xtc.XTCConfig()}) == 2  # still hashable


@pytest.mark.parametrize("module_bits,msg", [({"atention": 2}, "match no quantized linear"),
                                             ({"attention": 0}, "module_bits"), ({"": 2}, "module_bits"),
                                             ({"attention": "2"}, "must be a whole number")])
def test_bad_module_bits_are_refused_before_the_model_changes(module_bits, msg):
    model = tiny_bert(layers=1)
    with pytest.raises(ConfigError, match=msg):
        xtc.quantize_(model, xtc.XTCConfig(weight_bits=1, module_bits=module_bits))
    assert not quantized_modules(model)  # nothing was half-quantized


def test_row_groups_give_each_linear_one_scale_per_output_row(tmp_path):
    model = tiny_bert(layers=2)
    xtc.quantize_(model, xtc.XTCConfig(weight_bits=1, groups="row"))
    linears = [m for m in quantized_modules(model).values() if isinstance(m, QuantLinear)]
    assert {m.groups for m in linears} == {m.out_features for m in linears} and len({m.groups for m in linears}) == 2
    up = model.bert.encoder.layer[0].intermediate.dense
    scales = up.weight.detach().abs().mean(dim=1)  # one alpha per row: row i is +-scales[i]
    assert torch.allclose(up.quantized_weight().abs(), scales[:, None].expand_as(up.weight))
    model.save_pretrained(tmp_path)  # the setting travels with the checkpoint
    loaded = xtc.load_quantized(tmp_path)
    assert loaded.bert.encoder.layer[0].intermediate.dense.groups == up.out_features


@pytest.mark.parametrize("groups", [0, "rows", 1.5, True])
def test_bad_groups_are_refused_with_the_allowed_values(groups):
    with pytest.raises(ValueError, match="'row'"):
        xtc.XTCConfig(weight_bits=1, groups=groups)


def test_reduce_layers_copies_exactly_the_chosen_layers_and_leaves_teacher_alone():
    teacher = tiny_bert(layers=6)
    snapshot = {k: v.clone() for k, v in teacher.state_dict().items()}
    student = xtc.reduce_layers(teacher, [1, 3, 5])
    assert len(student.bert.encoder.layer) == 3 and student.config.num_hidden_layers == 3
    assert len(teacher.bert.encoder.layer) == 6 and teacher.config.num_hidden_layers == 6
    for i, t in enumerate([1, 3, 5]):
        s_state = student.bert.encoder.layer[i].state_dict()
        t_state = teacher.bert.encoder.layer[t].state_dict()
        assert all(torch.equal(s_state[k], t_state[k]) for k in t_state)
        assert student.bert.encoder.layer[i].attention.self.query.weight is not \
            teacher.bert.encoder.layer[t].attention.self.query.weight
    assert torch.equal(student.classifier.weight, teacher.classifier.weight)
    assert xtc.layer_map(student) == [1, 3, 5]
    # training the student does not touch the teacher
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    assert all(torch.equal(v, snapshot[k]) for k, v in teacher.state_dict().items())
    # a second reduction composes the map
    assert xtc.layer_map(xtc.reduce_layers(student, [0, 2])) == [1, 5]


@pytest.mark.parametrize("keep, msg", [([0, 6], "out of range"), ([1, 1], "repeat"), ([], "empty")])
def test_bad_input_layers(keep, msg):
    with pytest.raises(ValueError, match=msg):
        xtc.reduce_layers(tiny_bert(layers=6), keep)


def test_bad_input_unsupported_model_names_supported_families():
    with pytest.raises(UnsupportedModelError, match="bert"):
        xtc.quantize_(nn.Sequential(nn.Linear(2, 2)), xtc.XTCConfig())


def test_roberta_is_supported():
    from transformers import RobertaConfig, RobertaForSequenceClassification

    cfg = RobertaConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64)
    model = RobertaForSequenceClassification(cfg)
    xtc.quantize_(model, xtc.XTCConfig(weight_bits=1))
    assert len([m for m in quantized_modules(model).values() if isinstance(m, QuantLinear)]) == 12
    student = xtc.reduce_layers(model, [1])
    assert len(student.roberta.encoder.layer) == 1


def test_layer_map_of_a_shallower_pre_distilled_student_is_uniform():
    teacher, student = tiny_bert(layers=6), tiny_bert(layers=3)
    assert xtc.layer_map(student, teacher) == [1, 3, 5]
    assert xtc.layer_map(teacher, teacher) == list(range(6))


def test_quantize_twice_keeps_one_config():
    """A second quantize_ with the same config changes nothing; with another it is refused (the modules
    would stay binary under a config that says ternary)."""
    import pytest
    import torch

    from conftest import tiny_bert
    from xtc.errors import ConfigError

    model = tiny_bert(layers=1)
    xtc.quantize_(model, xtc.XTCConfig(weight_bits=1))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    xtc.quantize_(model, xtc.XTCConfig(weight_bits=1, weight_scheme="binary"))  # the same, spelled out
    xtc.quantize_(model, xtc.XTCConfig(weight_bits=1, embedding_bits=1))  # the same, spelled out
    with pytest.raises(ConfigError, match="already quantized"):
        xtc.quantize_(model, xtc.XTCConfig(weight_bits=1, embedding_bits=2))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(ConfigError, match="already quantized"):
        xtc.quantize_(model, xtc.XTCConfig(weight_bits=2))
    with pytest.raises(ConfigError, match="activation_bits must be 4..16"):
        xtc.XTCConfig(weight_bits=1, activation_bits=3)
    with pytest.raises(ConfigError, match="quantize_embeddings is false"):
        xtc.XTCConfig(weight_bits=1, embedding_bits=2, quantize_embeddings=False)
