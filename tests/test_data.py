"""Tests of xtc.data: GLUE readers (shared files and hand-written MNLI/QQP layouts), writer round trips,
metrics against hand-computed values, every DataError, and the tokenized dataset + collator."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest

from xtc.data import (
    GLUE_TASKS,
    DataError,
    Example,
    TokenizedDataset,
    compute_metrics,
    get_task,
    load_split,
    make_collator,
    read_split,
    read_tsv,
    write_split,
)

from conftest import SHARED  # noqa: E402
GLUE = SHARED / "glue"
TOKENIZER = SHARED / "models" / "all-MiniLM-L6-v2"
needs_glue = pytest.mark.skipif(not GLUE.is_dir(), reason="shared GLUE files not present")

# official GLUE row counts (train, dev, test) and labels in index order
COUNTS = {
    "cola": (8551, 1043, 1063),
    "sst2": (67349, 872, 1821),
    "mrpc": (3668, 408, 1725),
    "stsb": (5749, 1500, 1379),
    "rte": (2490, 277, 3000),
    "wnli": (635, 71, 146),
}

MNLI_TRAIN_HEADER = ("index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\t"
                     "sentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label")
MNLI_DEV_HEADER = ("index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\t"
                   "sentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tlabel2\tlabel3\tlabel4\t"
                   "label5\tgold_label")
MNLI_TEST_HEADER = ("index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\t"
                    "sentence1_parse\tsentence2_parse\tsentence1\tsentence2")


def _write(path: Path, lines: list[str], end: str = "\n", encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(("\n".join(lines) + end).encode(encoding))
    return path


def _mnli_row(i: int, s1: str, s2: str, labels: list[str]) -> str:
    parses = ["( x )", "( y )", "(ROOT x)", "(ROOT y)"]
    return "\t".join([str(i), "31193", f"{i}e", "government", *parses, s1, s2, *labels])


# --- task specs ------------------------------------------------------------------------------------


def test_get_task_aliases():
    assert get_task("STS-B") is get_task("sts-b") is get_task("stsb") is GLUE_TASKS["stsb"]
    assert get_task("sst-2").dir_name == "SST-2"
    assert get_task("mnli-mm") is GLUE_TASKS["mnli"]
    assert get_task(GLUE_TASKS["rte"]) is GLUE_TASKS["rte"]
    stsb, mnli, mrpc = GLUE_TASKS["stsb"], GLUE_TASKS["mnli"], GLUE_TASKS["mrpc"]
    assert stsb.is_regression and stsb.num_labels == 1 and stsb.main_metric == "pearson"
    assert mnli.labels == ("entailment", "neutral", "contradiction") and mnli.num_labels == 3
    assert mnli.dev_splits == ("dev_matched", "dev_mismatched")
    assert mrpc.metrics == ("f1", "accuracy") and mrpc.main_metric == "f1"
    assert GLUE_TASKS["cola"].main_metric == "mcc"
    for task in GLUE_TASKS.values():
        assert task.main_metric in task.metrics


def test_bad_input_unknown_task():
    with pytest.raises(DataError, match=r"unknown task 'glu'.*mrpc.*wnli"):
        get_task("glu")


# --- the shared GLUE files -------------------------------------------------------------------------


@needs_glue
@pytest.mark.parametrize("name", sorted(COUNTS))
def test_shared_files_parse_with_official_counts(name):
    task = get_task(name)
    for split, count in zip(("train", "dev", "test"), COUNTS[name]):
        examples = read_split(task, GLUE, split)
        assert len(examples) == count, split
        assert all(e.text_a for e in examples)
        assert all((e.text_b is None) == (name in ("cola", "sst2")) for e in examples)
        if split == "test":
            assert all(e.label is None for e in examples)
        elif task.is_regression:
            assert all(isinstance(e.label, float) and 0.0 <= e.label <= 5.0 for e in examples)
        else:
            assert {e.label for e in examples} == set(range(task.num_labels))


@needs_glue
def test_shared_qnli_dev_and_known_rows():
    qnli = read_split("qnli", GLUE, "dev")
    assert len(qnli) == 5463
    assert sum(e.label == 0 for e in qnli) == 2702  # entailment count of the official QNLI dev set
    mrpc = read_split("mrpc", GLUE, "dev")  # header with a BOM; texts with stray quotes
    assert mrpc[0].text_b.startswith('" The foodservice pie business') and mrpc[0].label == 1
    cola = read_split("cola", GLUE, "dev")  # headerless, no final newline
    assert cola[0] == Example("The sailors rode the breeze clear of the rocks.", None, 1)
    assert sum(e.label for e in cola) == 721


# --- MNLI and QQP layouts (not shipped: small files in their original header layout) --------------


def test_mnli_layouts(tmp_path):
    _write(tmp_path / "MNLI" / "train.tsv", [
        MNLI_TRAIN_HEADER,
        _mnli_row(0, "He walked.", "He moved.", ["entailment", "entailment"]),
        _mnli_row(1, 'A "quoted" cat.', "No cat.", ["contradiction", "contradiction"]),
    ])
    five = ["neutral"] * 5
    _write(tmp_path / "MNLI" / "dev_matched.tsv",
           [MNLI_DEV_HEADER, _mnli_row(0, "a", "b", [*five, "neutral"])])
    _write(tmp_path / "MNLI" / "dev_mismatched.tsv",
           [MNLI_DEV_HEADER, _mnli_row(0, "c", "d", [*five, "contradiction"])])
    _write(tmp_path / "MNLI" / "test_matched.tsv", [MNLI_TEST_HEADER, _mnli_row(0, "e", "f", [])])

    train = read_split("mnli", tmp_path, "train")
    assert train == [Example("He walked.", "He moved.", 0), Example('A "quoted" cat.', "No cat.", 2)]
    assert read_split("mnli", tmp_path, "dev") == [Example("a", "b", 1)]  # "dev" = dev_matched
    assert read_split("mnli", tmp_path, "dev_matched") == [Example("a", "b", 1)]
    assert read_split("mnli", tmp_path, "dev_mismatched") == [Example("c", "d", 2)]
    assert read_split("mnli", tmp_path, "test") == [Example("e", "f", None)]


def test_qqp_layouts(tmp_path):
    _write(tmp_path / "QQP" / "train.tsv", [
        "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate",
        "133273\t213221\t213222\tHow is the life of a math student?\tWhich level of prepration is needed?\t0",
        "402555\t536040\t536041\tHow do I control my horny emotions?\tHow do you control your horniness?\t1",
    ])
    _write(tmp_path / "QQP" / "test.tsv", ["id\tquestion1\tquestion2", "0\tWhy?\tWhy not?"])
    train = read_split("qqp", tmp_path, "train")
    assert [e.label for e in train] == [0, 1]
    assert train[1].text_a == "How do I control my horny emotions?"
    assert read_split("qqp", tmp_path, "test") == [Example("Why?", "Why not?", None)]


# --- write_split round trips -----------------------------------------------------------------------


def _examples_for(task) -> list[Example]:
    pair = task.name not in ("cola", "sst2")
    b = (lambda s: s) if pair else (lambda s: None)
    if task.is_regression:
        labels = [0.0, 3.8, 4.999, None]
    else:
        labels = [0, task.num_labels - 1, task.num_labels - 1, None]  # None: unlabeled, e.g. augmented
    texts = ['it \'s a "charming" film ', "plain", "x", "augmented, no label"]
    return [Example(t, b(t[::-1]), y) for t, y in zip(texts, labels)]


@pytest.mark.parametrize("name", sorted(GLUE_TASKS))
def test_write_read_round_trip(tmp_path, name):
    task = get_task(name)
    examples = _examples_for(task)
    write_split(task, examples, tmp_path / task.dir_name / "train.tsv")
    assert read_split(task, tmp_path, "train") == examples
    assert read_tsv(task, tmp_path / task.dir_name / "train.tsv") == examples


@needs_glue
def test_write_matches_original_layout(tmp_path):
    # written files start with the same header as the originals (MRPC's BOM aside)
    for name in ("mrpc", "stsb", "rte", "sst2"):
        task = get_task(name)
        out = tmp_path / f"{name}.tsv"
        write_split(task, read_split(task, GLUE, "dev")[:3], out)
        original = (GLUE / task.dir_name / "dev.tsv").read_text(encoding="utf-8-sig").split("\n")[0]
        assert out.read_text().split("\n")[0] == original
    # CoLA: headerless, 4 columns, label in column 2
    write_split("cola", [Example("Good.", None, 1)], tmp_path / "cola.tsv")
    assert (tmp_path / "cola.tsv").read_text().split("\t")[1] == "1"


def test_write_flattens_tabs_and_newlines(tmp_path):
    write_split("rte", [Example("a\tb\nc", "d", 0)], tmp_path / "RTE" / "dev.tsv")
    assert read_split("rte", tmp_path, "dev") == [Example("a b c", "d", 0)]


def test_bad_input_write_label_out_of_range(tmp_path):
    with pytest.raises(DataError, match=r"rte.tsv: example 0 has label 2"):
        write_split("rte", [Example("a", "b", 2)], tmp_path / "rte.tsv")


# --- metrics ---------------------------------------------------------------------------------------


def test_metrics_classification():
    # logits argmax -> predictions [1, 1, 0, 1, 0], labels [1, 0, 0, 1, 1]
    logits = np.array([[0.1, 0.9], [0.2, 0.8], [3.0, -1.0], [0.0, 5.0], [0.7, 0.3]])
    labels = np.array([1, 0, 0, 1, 1])
    # TP=2, FP=1, FN=1, TN=1: precision 2/3, recall 2/3, f1 2/3; accuracy 3/5
    m = compute_metrics("mrpc", logits, labels)
    assert list(m) == ["f1", "accuracy"]
    assert m["f1"] == pytest.approx(2 / 3) and m["accuracy"] == pytest.approx(0.6)
    # mcc = (TP*TN - FP*FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = (2-1)/sqrt(3*3*2*2) = 1/6
    assert compute_metrics("cola", logits, labels) == {"mcc": pytest.approx(1 / 6)}
    assert compute_metrics("sst2", logits, labels) == {"accuracy": pytest.approx(0.6)}
    # three classes, class ids given directly
    assert compute_metrics("mnli", np.array([0, 1, 2, 2]), np.array([0, 1, 1, 2])) == {"accuracy": 0.75}


def test_metrics_regression():
    preds = np.array([[1.0], [2.0], [3.0], [5.0]])  # [N, 1] as a regression head returns
    labels = np.array([1.0, 3.0, 2.0, 4.0])
    # pearson: x-mean = [-1.75,-.75,.25,2.25], y-mean = [-1.5,.5,-.5,1.5]; sum xy = 5.5,
    # sum x^2 = 8.75, sum y^2 = 5 -> 5.5/sqrt(43.75);
    # spearman: ranks [1,2,3,4] vs [1,3,2,4] -> 1 - 6*2/(4*15) = 0.8
    m = compute_metrics("stsb", preds, labels)
    assert list(m) == ["pearson", "spearmanr"]
    assert m["pearson"] == pytest.approx(5.5 / np.sqrt(43.75)) and m["spearmanr"] == pytest.approx(0.8)
    assert compute_metrics("stsb", preds[:, 0], labels) == m  # [N] works too


def test_metrics_constant_predictions_do_not_crash():
    labels = np.array([0, 1, 1, 0])
    constant = compute_metrics("stsb", np.full(4, 2.5), labels.astype(float))
    assert constant == {"pearson": 0.0, "spearmanr": 0.0}
    all_zero = np.array([[1.0, 0.0]] * 4)
    assert compute_metrics("cola", all_zero, labels) == {"mcc": 0.0}
    assert compute_metrics("qqp", all_zero, labels) == {"f1": 0.0, "accuracy": 0.5}


# --- DataError cases -------------------------------------------------------------------------------


def test_bad_input_missing_glue_folder(tmp_path):
    with pytest.raises(DataError, match=r"nope does not exist; pass --glue-dir .*MRPC/, CoLA/"):
        read_split("mrpc", tmp_path / "nope", "train")


def test_bad_input_missing_task_folder(tmp_path):
    _write(tmp_path / "RTE" / "dev.tsv", ["index\tsentence1\tsentence2\tlabel", "0\ta\tb\tentailment"])
    with pytest.raises(DataError, match=r"has no MRPC/ folder \(found: RTE\).*--glue-dir"):
        read_split("mrpc", tmp_path, "train")
    # pointing at the task folder itself gets a hint to use its parent
    with pytest.raises(DataError, match=r"looks like a task folder: use its parent"):
        read_split("rte", tmp_path / "RTE", "dev")


def test_bad_input_missing_file(tmp_path):
    _write(tmp_path / "RTE" / "dev.tsv", ["index\tsentence1\tsentence2\tlabel", "0\ta\tb\tentailment"])
    with pytest.raises(DataError, match=r"RTE/train.tsv not found \(the folder has: dev.tsv\).*--glue-dir"):
        read_split("rte", tmp_path, "train")


def test_bad_input_unknown_split(tmp_path):
    with pytest.raises(DataError, match=r"unknown split 'dev_matched' for rte; use one of train, dev, test"):
        read_split("rte", tmp_path, "dev_matched")


def test_bad_input_wrong_columns(tmp_path):
    _write(tmp_path / "RTE" / "dev.tsv", [
        "index\tsentence1\tsentence2\tlabel",
        "0\ta\tb\tentailment",
        "1\ta tab\there\tb\tentailment",
    ])
    with pytest.raises(DataError, match=r"RTE/dev.tsv:3: expected 4 tab-separated columns, got 5"):
        read_split("rte", tmp_path, "dev")
    _write(tmp_path / "CoLA" / "train.tsv", ["gj04\t1\t\tFine.", "gj04\t1\tTruncated."], end="")
    with pytest.raises(DataError, match=r"CoLA/train.tsv:2: expected 4 tab-separated columns, got 3"):
        read_split("cola", tmp_path, "train")


def test_bad_input_header_without_text_column(tmp_path):
    _write(tmp_path / "MNLI" / "train.tsv", ["index\tpremise\thypothesis\tgold_label", "0\ta\tb\tneutral"])
    with pytest.raises(DataError, match=r"MNLI/train.tsv:1: header has no 'sentence1' column"):
        read_split("mnli", tmp_path, "train")


def test_bad_input_unknown_label(tmp_path):
    _write(tmp_path / "QNLI" / "dev.tsv", [
        "index\tquestion\tsentence\tlabel",
        "0\tq\ts\tentailment",
        "1\tq\ts\tneutral",
    ])
    with pytest.raises(DataError, match=r"QNLI/dev.tsv:3: label 'neutral' .*entailment, not_entailment"):
        read_split("qnli", tmp_path, "dev")
    _write(tmp_path / "STS-B" / "dev.tsv", [
        "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore",
        "0\tg\tf\ty\t0\tn\tn\ta\tb\tfive",
    ])
    with pytest.raises(DataError, match=r"STS-B/dev.tsv:2: score 'five' is not a number"):
        read_split("stsb", tmp_path, "dev")


def test_bad_input_empty_split(tmp_path):
    _write(tmp_path / "SST-2" / "dev.tsv", ["sentence\tlabel"])
    with pytest.raises(DataError, match=r"SST-2/dev.tsv: no examples"):
        read_split("sst2", tmp_path, "dev")
    _write(tmp_path / "CoLA" / "dev.tsv", [], end="")
    with pytest.raises(DataError, match=r"CoLA/dev.tsv: no examples"):
        read_split("cola", tmp_path, "dev")


def test_bad_input_not_utf8(tmp_path):
    lines = ["sentence\tlabel", "good\t1", "caf\u00e9 bad\t0"]
    _write(tmp_path / "SST-2" / "train.tsv", lines, encoding="latin-1")
    with pytest.raises(DataError, match=r"SST-2/train.tsv:3: not valid UTF-8.*re-save the file as UTF-8"):
        read_split("sst2", tmp_path, "train")


def test_bad_input_train_file_without_labels(tmp_path):
    _write(tmp_path / "SST-2" / "train.tsv", ["index\tsentence", "0\tno label here"])  # a test file
    with pytest.raises(DataError, match=r"SST-2/train.tsv: no 'label' column, but train files need labels"):
        read_split("sst2", tmp_path, "train")


def test_bad_input_hub_without_datasets(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` fail even if installed
    with pytest.raises(DataError, match=r"'datasets' package is not installed; pip install datasets, or "
                                        r"pass --glue-dir"):
        load_split("mrpc", "dev")


def test_bad_input_hub_offline(monkeypatch):
    def load_dataset(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'nyu-mll/glue' on the Hub\nmore detail")

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    with pytest.raises(DataError, match=r"nyu-mll/glue \(rte, validation\).*ConnectionError.*--glue-dir"):
        load_split("rte", "dev")


def test_load_split_from_hub_maps_splits_and_labels(monkeypatch):
    calls = []

    def load_dataset(path, name, split):
        calls.append((path, name, split))
        return [{"premise": "p", "hypothesis": "h", "label": 2},
                {"premise": "q", "hypothesis": "i", "label": -1}]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    assert load_split("mnli", "dev_mismatched") == [Example("p", "h", 2), Example("q", "i", None)]
    assert calls == [("nyu-mll/glue", "mnli", "validation_mismatched")]
    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(
        load_dataset=lambda *a, **k: [{"sentence1": "a", "sentence2": "b", "label": -1.0}]))
    assert load_split("stsb", "test") == [Example("a", "b", None)]


@needs_glue
def test_load_split_with_glue_dir_reads_tsv():
    assert len(load_split("wnli", "dev", GLUE)) == 71


# --- tokenized dataset and collator ----------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer():
    if not TOKENIZER.is_dir():
        pytest.skip("shared tokenizer not present")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(TOKENIZER)


def test_tokenized_dataset_and_dynamic_padding(tokenizer):
    examples = [Example("a short one", "pair", 1), Example("a much longer first sentence " * 3, "b", 0),
                Example("unlabeled", "x", None)]
    ds = TokenizedDataset(examples, tokenizer, max_length=16)
    assert len(ds) == 3
    assert ds.lengths[0] == len(tokenizer("a short one", "pair")["input_ids"])
    assert ds.lengths[1] == 16  # truncated, not padded
    item = ds[0]
    assert set(item) == {"input_ids", "attention_mask", "token_type_ids", "labels"} and item["labels"] == 1
    assert "labels" not in ds[2]

    batch = make_collator(tokenizer)([ds[0], ds[1]])
    assert batch["input_ids"].shape == (2, 16)  # padded to the longest in the batch
    batch = make_collator(tokenizer)([ds[0]])
    assert batch["input_ids"].shape == (1, ds.lengths[0])
    assert batch["attention_mask"].sum() == ds.lengths[0]
    assert batch["labels"].tolist() == [1]
    batch = make_collator(tokenizer, pad_to_multiple_of=8)([ds[0]])
    assert batch["input_ids"].shape[1] % 8 == 0


def test_collator_max_length_padding_and_regression_labels(tokenizer):
    examples = [Example("one", None, 2.5), Example("two words", None, 0.0)]
    ds = TokenizedDataset(examples, tokenizer, max_length=128)
    assert ds.lengths == [3, 4] and "token_type_ids" in ds[0]
    batch = make_collator(tokenizer, max_length=128)([ds[0], ds[1]])
    assert batch["input_ids"].shape == (2, 128)
    assert batch["labels"].dtype.is_floating_point and batch["labels"].tolist() == [2.5, 0.0]


def test_collator_marks_unlabelled_items_in_a_mixed_batch(tokenizer):
    """Augmented copies carry no label: mixed with originals, they get a label the label loss skips."""
    mixed = TokenizedDataset([Example("labelled", None, 1), Example("augmented copy", None, None)], tokenizer)
    batch = make_collator(tokenizer)([mixed[0], mixed[1]])
    assert batch["labels"].tolist() == [1, -100]
    scores = TokenizedDataset([Example("scored", None, 2.5), Example("augmented", None, None)], tokenizer)
    labels = make_collator(tokenizer)([scores[1], scores[0]])["labels"]
    assert labels.dtype.is_floating_point and labels.isnan().tolist() == [True, False] and labels[1] == 2.5
    assert "labels" not in make_collator(tokenizer)([mixed[1]])  # nothing labelled: no labels at all
