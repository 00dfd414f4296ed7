import math

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_bert

import xtc
from xtc.distillation import (
    DistillConfig,
    Distiller,
    attention_loss,
    capture_attention_scores,
    hidden_loss,
    prediction_loss,
)


def test_soft_cross_entropy_hand_computed():
    s = torch.tensor([[0.0, 0.0]])
    t = torch.tensor([[math.log(3.0), 0.0]])  # teacher probabilities 0.75 / 0.25
    # -(0.75 log 0.5 + 0.25 log 0.5) = log 2
    assert prediction_loss(s, t).item() == pytest.approx(math.log(2))
    assert prediction_loss(s, t, averaging="reference").item() == pytest.approx(math.log(2) / 2)
    # regression: MSE
    assert prediction_loss(torch.tensor([[1.0]]), torch.tensor([[3.0]])).item() == pytest.approx(4.0)


def test_attention_loss_ignores_padding_and_maps_layers():
    mask = torch.tensor([[1, 1, 0]])
    s = [torch.zeros(1, 1, 3, 3)]
    t = [torch.full((1, 1, 3, 3), 9.0), torch.ones(1, 1, 3, 3)]
    t[1][..., 2] = 100.0  # padded key column: ignored
    t[1][..., 2, :] = 100.0  # padded query row: ignored
    # student layer 0 <- teacher layer 1: real positions all differ by 1 -> MSE 1
    assert attention_loss(s, t, [1], mask).item() == pytest.approx(1.0)
    # reference averaging: masked entries are zero in both; mean over all 9 entries -> 4/9
    assert attention_loss(s, t, [1], mask, averaging="reference").item() == pytest.approx(4 / 9)


def test_hidden_loss_sums_embeddings_and_mapped_layers():
    mask = torch.tensor([[1, 0]])
    s = [torch.zeros(1, 2, 2), torch.zeros(1, 2, 2)]
    t = [torch.ones(1, 2, 2), torch.full((1, 2, 2), 5.0), torch.full((1, 2, 2), 2.0)]
    t[2][0, 1] = 50.0  # padded token: ignored
    # embeddings: 1 ; student layer 0 <- teacher layer 1 (hidden index 2): 4
    assert hidden_loss(s, t, [1], mask).item() == pytest.approx(5.0)


def test_captured_scores_are_pre_softmax_and_outputs_unchanged():
    model = tiny_bert(layers=2)
    ids = torch.randint(0, 1000, (2, 5))
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    ref = model(input_ids=ids, attention_mask=mask, output_attentions=False).logits
    with capture_attention_scores(model) as scores:
        out = model(input_ids=ids, attention_mask=mask)
    assert torch.allclose(out.logits, ref, atol=1e-6)
    assert len(scores) == 2 and scores[0].shape == (2, 4, 5, 5)
    # softmax of the scores over the real keys gives the probabilities eager attention returns
    probs = model(input_ids=ids, attention_mask=mask, output_attentions=True).attentions[0]
    masked = scores[0].masked_fill(mask[:, None, None, :] == 0, float("-inf"))
    assert torch.allclose(masked.softmax(-1), probs, atol=1e-6)


def test_distiller_loss_is_zero_for_identical_student_and_backprops():
    teacher = tiny_bert(layers=2)
    student = xtc.reduce_layers(teacher, [0, 1])
    ids = torch.randint(0, 1000, (2, 6))
    loss, _, parts = Distiller(teacher, student, [0, 1])(input_ids=ids, attention_mask=torch.ones_like(ids))
    assert loss.item() < 1e-9 + parts["pred"]  # only the soft-CE (entropy of the teacher) remains
    assert parts["att"] < 1e-10 and parts["hid"] < 1e-10
    xtc.quantize_(student, xtc.XTCConfig(weight_bits=1))
    loss, _, parts = Distiller(teacher, student, [0, 1], DistillConfig(label_weight=1.0))(
        input_ids=ids, attention_mask=torch.ones_like(ids), labels=torch.tensor([0, 1]))
    assert parts["att"] > 0 and "label" in parts
    loss.backward()
    assert student.bert.encoder.layer[0].attention.self.query.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())


def test_label_loss_skips_unlabelled_items():
    from xtc.distillation import label_loss

    logits = torch.randn(3, 2, requires_grad=True)
    assert torch.allclose(label_loss(logits, torch.tensor([1, -100, 0])),
                          F.cross_entropy(logits[[0, 2]], torch.tensor([1, 0])))
    scores = torch.randn(3, 1, requires_grad=True)
    assert torch.allclose(label_loss(scores, torch.tensor([0.5, float("nan"), 2.0])),
                          F.mse_loss(scores[[0, 2], 0], torch.tensor([0.5, 2.0])))
    none = label_loss(logits, torch.tensor([-100, -100, -100]))
    assert none.item() == 0.0 and none.requires_grad  # a batch of augmented copies only: no NaN, no crash
    assert label_loss(scores, torch.full((3,), float("nan"))).item() == 0.0


def test_a_student_with_another_tokenizer_learns_from_the_teachers_predictions(tmp_path, caplog):
    """MiniLM under an MPNet teacher: the two tokenize the same text differently, so each model gets its
    own inputs and only the prediction loss applies (the attention and hidden-state terms are off)."""
    import json

    from xtc_tiny import SPECIAL, WORDS, make_tiny_glue, make_tiny_model, save_tiny_bert

    from xtc.pipeline import distill
    from xtc.train import TrainConfig

    teacher = make_tiny_model(tmp_path / "teacher", layers=2)
    student = save_tiny_bert(tmp_path / "student", SPECIAL + list(reversed(WORDS)), layers=1, seed=1)
    glue = make_tiny_glue(tmp_path / "glue", n_train=16, n_dev=8)
    with caplog.at_level("WARNING", logger="xtc"):
        summary = distill(str(teacher), "sst2", tmp_path / "kd", str(glue), student=str(student),
                          config=TrainConfig(max_steps=3, eval_steps=3, batch_size=4, logging_steps=1))
    assert "tokenizes differently" in caplog.text
    logs = [json.loads(x) for x in (tmp_path / "kd" / "log.jsonl").read_text().splitlines() if '"loss_pred"' in x]
    assert logs and all("loss_att" not in r and "loss_hid" not in r and r["loss_pred"] > 0 for r in logs)
    assert "accuracy" in summary["dev"]
    # the student keeps its own tokenizer
    saved = json.loads((tmp_path / "kd" / "model" / "tokenizer.json").read_text())["model"]["vocab"]
    assert saved[WORDS[-1]] == len(SPECIAL)
