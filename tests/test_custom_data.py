"""Your own data: CSV / TSV / JSON Lines (and the hub) -> TaskSpec + Examples, and a pipeline run on it."""

import json
import sys

import pytest
import tiny_data

from xtc.data import load_custom_task, split_dev
from xtc.data import DataError, Example, compute_metrics


def _csv(path, rows, header="text,label"):
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


def test_csv_classification_with_dev_file_and_sorted_labels(tmp_path):
    train = _csv(tmp_path / "train.csv", ['"good, really",pos', "bad,neg", "fine,neutral", '"say ""hi""",pos'])
    dev = _csv(tmp_path / "dev.csv", ["great,pos", "awful,neg"])
    task, tr, dv = load_custom_task(train, dev, text_column="text", label_column="label")
    assert task.labels == ("neg", "neutral", "pos") and task.num_labels == 3
    assert task.metrics == ("accuracy", "macro_f1") and task.main_metric == "macro_f1"
    assert task.dev_splits == ("dev",) and task.name == tmp_path.name  # "train.csv": the folder names the task
    assert tr[0] == Example("good, really", None, 2) and tr[3].text_a == 'say "hi"'  # CSV quoting
    assert dv == {"dev": [Example("great", None, 2), Example("awful", None, 0)]}


def test_integer_labels_sort_numerically_and_given_labels_keep_their_order(tmp_path):
    train = _csv(tmp_path / "reviews.csv", ["a,10", "b,2", "c,1"])
    task, tr, _ = load_custom_task(train, train, text_column="text", label_column="label")
    assert task.labels == ("1", "2", "10") and [e.label for e in tr] == [2, 1, 0] and task.name == "reviews"
    task, tr, _ = load_custom_task(train, train, text_column="text", label_column="label", labels=["10", "2", "1", "5"])
    assert task.labels == ("10", "2", "1", "5") and [e.label for e in tr] == [0, 1, 2]


def test_tsv_pairs_without_quoting(tmp_path):
    train = tmp_path / "pairs.tsv"
    train.write_text('id\tq1\tq2\tdup\n1\t"what\tis it\t1\n2\tone\ttwo\t0\n')
    task, tr, dev = load_custom_task(train, text_column="q1", text_pair_column="q2", label_column="dup",
                                     dev_fraction=0.5, seed=0)
    assert task.labels == ("0", "1")
    everything = tr + dev["dev"]
    assert len(tr) == 1 and len(dev["dev"]) == 1
    assert Example('"what', "is it", 1) in everything  # a quote is an ordinary character in TSV


def test_jsonl_regression_and_json_array(tmp_path):
    rows = [{"s1": "a", "s2": "b", "score": 4.5}, {"s1": "c", "s2": "d", "score": "1"}, {"s1": 3, "s2": "e", "score": 0}]
    jl = tmp_path / "sts.jsonl"
    jl.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    task, tr, dev = load_custom_task(jl, jl, text_column="s1", text_pair_column="s2", label_column="score",
                                     task_type="regression")
    assert task.is_regression and task.labels is None and task.num_labels == 1
    assert task.metrics == ("pearson", "spearmanr") and task.main_metric == "pearson"
    assert [e.label for e in tr] == [4.5, 1.0, 0.0] and tr[2].text_a == "3"
    arr = tmp_path / "cls.json"
    arr.write_text(json.dumps([{"t": "x", "y": True}, {"t": "y", "y": False}, {"t": "z", "y": 1.0}, {"t": "w", "y": 1}]))
    task, tr, _ = load_custom_task(arr, arr, text_column="t", label_column="y")
    assert task.labels == ("1", "false", "true") and [e.label for e in tr] == [2, 1, 0, 0]


def test_dev_fraction_is_seeded_and_disjoint():
    examples = [Example(str(i), None, i % 2) for i in range(50)]
    a = split_dev(examples, 0.2, seed=1)
    assert a == split_dev(examples, 0.2, seed=1) and a != split_dev(examples, 0.2, seed=2)
    train, dev = a
    assert len(dev) == 10 and len(train) == 40 and not {e.text_a for e in train} & {e.text_a for e in dev}
    with pytest.raises(DataError, match="between 0 and 1"):
        split_dev(examples, 1.0, seed=0)
    with pytest.raises(DataError, match="cannot be split"):
        split_dev(examples[:1], 0.5, seed=0)


@pytest.mark.parametrize("content, kwargs, match", [
    ("text,lab\na,b\n", {}, r"x.csv:1: header has no column 'label'"),
    ("text,label\na,pos\nb\n", {}, r"x.csv:3: expected 2 comma-separated columns"),
    ("text,label\na,pos\nb,\n", {}, r"x.csv:3: empty label"),
    ("text,label\na,pos\n", {}, "only the label"),
    ("text,label\na,x\nb,y\n", {"task_type": "regression"}, r"x.csv:2: label 'x' is not a number"),
    ("text,label\na,x\nb,y\n", {"task_type": "ranking"}, "task type"),
])
def test_bad_input_names_the_file_and_line(tmp_path, content, kwargs, match):
    path = tmp_path / "x.csv"
    path.write_text(content)
    with pytest.raises(DataError, match=match):
        load_custom_task(path, text_column="text", label_column="label", **kwargs)


def test_bad_input_dev_label_unknown_missing_file_and_format(tmp_path):
    train = _csv(tmp_path / "t.csv", ["a,pos", "b,neg"])
    dev = _csv(tmp_path / "d.csv", ["c,maybe"])
    with pytest.raises(DataError, match=r"d.csv:2: label 'maybe' is not one of"):
        load_custom_task(train, dev, text_column="text", label_column="label")
    with pytest.raises(DataError, match="not found"):
        load_custom_task(tmp_path / "nope.csv", text_column="text", label_column="label")
    (tmp_path / "t.parquet").write_text("")
    with pytest.raises(DataError, match="unknown file type"):
        load_custom_task(tmp_path / "t.parquet", text_column="text", label_column="label")
    bad = tmp_path / "b.jsonl"
    bad.write_text('{"text": "a", "label": 1}\n{"text": "b"\n')
    with pytest.raises(DataError, match=r"b.jsonl:2: not valid JSON"):
        load_custom_task(bad, text_column="text", label_column="label")


def test_hub_dataset_without_the_datasets_package_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # import fails as if not installed
    with pytest.raises(DataError, match="pip install datasets"):
        load_custom_task(dataset="someone/reviews", text_column="text", label_column="label")


def test_macro_f1_hand_computed(tmp_path):
    train = _csv(tmp_path / "t.csv", ["a,x", "b,y", "c,z"])
    task, _, _ = load_custom_task(train, train, text_column="text", label_column="label")
    # labels [0, 0, 1, 2], predicted [0, 1, 1, 2]: F1 per class 2/3, 2/3, 1 -> macro 7/9 ; accuracy 3/4
    m = compute_metrics(task, [0, 1, 1, 2], [0, 0, 1, 2])
    assert m == pytest.approx({"accuracy": 0.75, "macro_f1": 7 / 9})


def test_pipeline_runs_on_your_own_data(tmp_path):
    from xtc.pipeline import compress, distill, evaluate, finetune
    from xtc.recipe import QuantConfig, Recipe
    from xtc.train import TrainConfig

    model = tiny_data.make_model(tmp_path / "m", num_labels=3)
    rows = [f"{w} {w2},{w}" for w in ("good", "bad", "fine") for w2 in ("movie", "film", "story", "plot")]
    train = _csv(tmp_path / "train.csv", rows)
    data = load_custom_task(train, text_column="text", label_column="label", dev_fraction=0.25, seed=0)
    fast = TrainConfig(max_steps=2, batch_size=4, eval_steps=2, logging_steps=1, warmup_epochs=0.0)
    summary = finetune(model, None, tmp_path / "ft", config=fast, data=data)
    assert set(summary["dev"]) >= {"accuracy", "macro_f1"}
    teacher = str(tmp_path / "ft" / "model")
    summary = distill(teacher, None, tmp_path / "kd", layers=[1], quant=QuantConfig(weight_bits=2), config=fast,
                      data=data)
    assert set(summary["dev"]) >= {"accuracy", "macro_f1"}
    assert set(evaluate(str(tmp_path / "kd" / "model"), None, data=data)["dev"]) == {"accuracy", "macro_f1"}
    recipe = Recipe(model=model, teacher=teacher, task=data[0].name, finetune=fast, qat=fast, reduce=fast,
                    quant=QuantConfig(weight_bits=2, weight_scheme="lsq"))
    results = compress(recipe, tmp_path / "run", data=data)
    assert results["task"] == data[0].name and results["main_metric"] == "macro_f1"
    assert set(results["teacher"]) == {"accuracy", "macro_f1"}
    assert set(results["compressed"]) == {"accuracy", "macro_f1"}
