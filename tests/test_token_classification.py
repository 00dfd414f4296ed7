"""Token classification: CoNLL / JSON Lines data, word-piece alignment, entity F1, KD loss, a pipeline run."""

import json
import math

import pytest
import tiny_data
import torch

from xtc.data import DataError, compute_metrics, make_collator
from xtc.distillation import prediction_loss
from xtc.data.token import (
    IGNORE,
    TokenClassificationDataset,
    TokenExample,
    entities,
    entity_scores,
    load_token_task,
    read_conll,
)


@pytest.mark.parametrize("tags, spans", [
    (["B-PER", "I-PER", "O", "B-LOC"], {("PER", 0, 1), ("LOC", 3, 3)}),
    (["O", "I-PER", "I-PER"], {("PER", 1, 2)}),  # an I- without a B- starts a span (conlleval)
    (["B-PER", "B-PER"], {("PER", 0, 0), ("PER", 1, 1)}),
    (["B-LOC", "I-PER", "I-PER"], {("LOC", 0, 0), ("PER", 1, 2)}),  # a type change ends the span
    (["B-ORG", "I-ORG", "I-ORG"], {("ORG", 0, 2)}),  # runs to the end of the sentence
    (["O", "O"], set()),
    (["S-PER", "B-LOC", "E-LOC", "I-LOC"], {("PER", 0, 0), ("LOC", 1, 2), ("LOC", 3, 3)}),  # IOBES
])
def test_entity_spans_hand_computed(tags, spans):
    assert entities(tags) == spans


def test_entity_scores_hand_computed():
    true = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    pred = [["B-PER", "I-PER", "O", "O"], ["B-ORG", "B-LOC"]]
    # true spans: PER(0,1) LOC(3) ; ORG(0)          -> 3
    # predicted:  PER(0,1)        ; ORG(0) LOC(1)   -> 3 ; correct: PER, ORG -> 2
    s = entity_scores(true, pred)
    assert s["entity_precision"] == pytest.approx(2 / 3) and s["entity_recall"] == pytest.approx(2 / 3)
    assert s["entity_f1"] == pytest.approx(2 / 3)
    # a partial span is wrong, not half right
    s = entity_scores([["B-PER", "I-PER"]], [["B-PER", "O"]])
    assert s == {"entity_precision": 0.0, "entity_recall": 0.0, "entity_f1": 0.0}
    assert entity_scores([["O"]], [["O"]])["entity_f1"] == 0.0  # nothing to find: 0, not a division by zero


def test_read_conll_tab_space_columns_and_docstart(tmp_path):
    path = tmp_path / "train.conll"
    path.write_text("-DOCSTART- -X- -X- O\n\nAnna NNP B-NP B-PER\nvisited\tO\n\n\nParis  B-LOC\n")
    assert read_conll(path) == [(["Anna", "visited"], ["B-PER", "O"]), (["Paris"], ["B-LOC"])]
    (tmp_path / "bad.conll").write_text("Anna\n")
    with pytest.raises(DataError, match=r"bad.conll:1: expected a token and its tag"):
        read_conll(tmp_path / "bad.conll")


def test_load_token_task_from_conll_and_jsonl(tmp_path):
    train = tiny_data.write_conll(tmp_path / "train.txt", [(["anna", "visited", "paris"], ["B-PER", "O", "B-LOC"]),
                                                           (["bob"], ["B-PER"])])
    dev = tmp_path / "dev.jsonl"
    dev.write_text(json.dumps({"words": ["london", "city"], "ner": ["B-LOC", "I-LOC"]}) + "\n")
    task, tr, dv = load_token_task(train, None, dev_fraction=0.5, seed=0, labels=["O", "B-PER", "B-LOC", "I-LOC"])
    assert task.labels == ("O", "B-PER", "B-LOC", "I-LOC") and task.main_metric == "entity_f1"
    assert len(tr) == 1 and len(dv["dev"]) == 1
    task, tr, dv = load_token_task(train, dev, tokens_column="words", tags_column="ner", labels=task.labels)
    assert tr[0] == TokenExample(["anna", "visited", "paris"], [1, 0, 2])
    assert dv["dev"] == [TokenExample(["london", "city"], [2, 3])]
    with pytest.raises(DataError, match="'I-LOC', not one of"):  # discovered from train, dev has another tag
        load_token_task(train, dev, tokens_column="words", tags_column="ner")
    discovered, _, _ = load_token_task(train, train)
    assert discovered.labels == ("B-LOC", "B-PER", "O")


def test_labels_go_to_the_first_word_piece(tmp_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_data.make_model(tmp_path / "m", token_level=True))
    ds = TokenClassificationDataset([TokenExample(["anna", "filmed", "films"], [1, 0, 2]),
                                     TokenExample(["paris"], None)], tok, max_length=64)
    assert tok.convert_ids_to_tokens(ds[0]["input_ids"]) == ["[CLS]", "anna", "film", "##ed", "film", "##s", "[SEP]"]
    assert ds[0]["labels"] == [IGNORE, 1, 0, IGNORE, 2, IGNORE, IGNORE]
    assert "labels" not in ds[1]  # unlabeled (augmented) sentences: the teacher supplies the targets
    short = TokenClassificationDataset([TokenExample(["anna", "filmed", "films"], [1, 0, 2])], tok, max_length=4)
    assert short[0]["labels"] == [IGNORE, 1, 0, IGNORE]  # truncated: the cut word is not scored
    batch = make_collator(tok)([ds[0], short[0]])
    assert batch["labels"].tolist()[1] == [IGNORE, 1, 0, IGNORE, IGNORE, IGNORE, IGNORE]  # padded with -100
    assert batch["attention_mask"].tolist()[1] == [1, 1, 1, 1, 0, 0, 0]


def test_token_metrics_skip_unlabeled_positions(tmp_path):
    train = tiny_data.write_conll(tmp_path / "t.conll", [(["a", "b"], ["B-PER", "O"])])
    task, _, _ = load_token_task(train, train, labels=["O", "B-PER", "I-PER"])
    labels = [[IGNORE, 1, 2, 0, IGNORE], [IGNORE, 1, 0, IGNORE, IGNORE]]
    preds = [[1, 1, 2, 0, 1], [0, 1, 1, 2, 2]]  # predictions at -100 positions do not count
    m = compute_metrics(task, torch.nn.functional.one_hot(torch.tensor(preds), 3).float().numpy(), labels)
    # sentence 1: PER(0,1) found ; sentence 2: true PER(0) ; predicted B-PER B-PER -> PER(0), PER(1)
    assert m["entity_precision"] == pytest.approx(2 / 3) and m["entity_recall"] == 1.0
    assert m["entity_f1"] == pytest.approx(0.8) and m["token_accuracy"] == pytest.approx(4 / 5)


def test_prediction_loss_per_token_with_mask():
    s = torch.zeros(1, 3, 2)
    t = torch.tensor([[[math.log(3.0), 0.0], [0.0, 0.0], [50.0, -50.0]]])  # last token is padding
    mask = torch.tensor([[1, 1, 0]])
    # every real token: soft CE against a uniform student = log 2
    assert prediction_loss(s, t, mask=mask).item() == pytest.approx(math.log(2))
    # reference: padded token as zero, divided by B*T*C = 6 -> 2 log 2 / 6
    assert prediction_loss(s, t, averaging="reference", mask=mask).item() == pytest.approx(2 * math.log(2) / 6)
    # gradients only from real tokens
    s.requires_grad_(True)
    prediction_loss(s, t, mask=mask).backward()
    assert s.grad[0, 2].abs().sum() == 0 and s.grad[0, 0].abs().sum() > 0


def test_distillation_and_pipeline_end_to_end(tmp_path):
    import xtc
    from transformers import AutoModelForTokenClassification

    from xtc.distillation import Distiller
    from xtc.pipeline import compress, finetune
    from xtc.recipe import QuantConfig, Recipe
    from xtc.train import TrainConfig

    model = tiny_data.make_model(tmp_path / "m", token_level=True, num_labels=4)
    train = tiny_data.write_conll(tmp_path / "train.conll", tiny_data.sentences(24, seed=0))
    dev = tiny_data.write_conll(tmp_path / "dev.conll", tiny_data.sentences(8, seed=1), sep=" ")
    data = load_token_task(train, dev, labels=["O", "B-PER", "B-LOC", "I-LOC"])

    # one KD step by hand: per-token prediction loss + attention + hidden, labels with -100 for the option
    teacher = AutoModelForTokenClassification.from_pretrained(model)
    student = xtc.quantize_(xtc.reduce_layers(teacher, [1]), xtc.XTCConfig(weight_bits=1))
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model)
    ds = TokenClassificationDataset(data[1][:4], tok)
    batch = make_collator(tok)([ds[i] for i in range(4)])
    loss, out, parts = Distiller(teacher, student, [1], xtc.DistillConfig(label_weight=1.0))(**batch)
    assert out.logits.shape[:2] == batch["input_ids"].shape and torch.isfinite(loss)
    assert set(parts) == {"pred", "att", "hid", "label"}
    loss.backward()
    assert student.bert.encoder.layer[0].attention.self.query.weight.grad.abs().sum() > 0

    fast = TrainConfig(max_steps=3, batch_size=8, eval_steps=3, logging_steps=1, warmup_epochs=0.0, learning_rate=1e-3)
    finetuned = finetune(model, None, tmp_path / "ft", config=fast, data=data)  # the teacher: fine-tuned
    assert set(finetuned["dev"]) >= {"entity_f1", "token_accuracy"}
    recipe = Recipe(model=model, teacher=str(tmp_path / "ft" / "model"), task=data[0].name, layers=[1],
                    quant=QuantConfig(weight_bits=2), finetune=fast, reduce=fast, qat=fast)
    results = compress(recipe, tmp_path / "run", data=data)
    assert results["main_metric"] == "entity_f1"
    assert set(results["compressed"]) == {"entity_f1", "entity_precision", "entity_recall", "token_accuracy"}
    assert set(results["steps"]) == {"reduced", "quantized"}
    loaded = xtc.load_quantized(results["model_dir"], model_class=AutoModelForTokenClassification)
    assert type(loaded).__name__ == "BertForTokenClassification" and xtc.surgery.is_quantized(loaded)


def test_export_keeps_a_token_classifier(tmp_path):
    """`xtc export` rebuilds a checkpoint as the class it was saved from: a token classifier's packed
    model gives one prediction per token (it was loaded as a sequence classifier before)."""
    import xtc
    from xtc_tiny import SPECIAL, WORDS, save_tiny_bert

    src = save_tiny_bert(tmp_path / "m", SPECIAL + list(WORDS), num_labels=3, token_level=True)
    model = xtc.quantize_(xtc.load_quantized(src), xtc.XTCConfig(weight_bits=1))
    assert type(model).__name__ == "BertForTokenClassification"
    model.save_pretrained(tmp_path / "ckpt")
    packed = xtc.load_packed(xtc.export(tmp_path / "ckpt", tmp_path / "packed"))
    assert type(packed).__name__ == "BertForTokenClassification"
    ids = torch.tensor([[2, 7, 8, 9, 3]])
    assert packed(input_ids=ids).logits.shape == (1, 5, 3)
