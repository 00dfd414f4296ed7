"""Your own text classification / regression data: CSV, TSV, JSON Lines files or a hub dataset.

:func:`load_custom_task` gives what the GLUE path gives: a :class:`~xtc.data.TaskSpec` and lists of
:class:`~xtc.data.Example`, so fine-tuning, distillation, evaluation and compression run on it
unchanged (``pipeline.finetune/distill/evaluate/compress(..., data=load_custom_task(...))``).

* Files: ``.csv`` (comma-separated, standard CSV quoting), ``.tsv`` (tab-separated, *no* quoting, as
  GLUE's files: a ``"`` is an ordinary character), ``.jsonl`` / ``.json`` (one JSON object per line;
  a ``.json`` file holding one array of objects works too). CSV/TSV need a header line naming the
  columns. Texts and labels are picked by column name.
* Hub: ``dataset="owner/name"`` (and ``dataset_config``); ``train``/``dev`` are then split names
  (default ``train``; dev defaults to ``validation`` when the dataset has one). Needs the optional
  ``datasets`` package.
* Dev set: a second file (or split), or ``dev_fraction`` of the training rows drawn with ``seed``.
* Labels (classification): the label strings found in the training data, sorted (numerically when
  every label is an integer, so ``"2"`` comes before ``"10"``), or the list given in ``labels``
  (then in that order, and any other label is an error). A hub ``ClassLabel`` column keeps its names
  and order. Regression labels are numbers.
* Metrics: accuracy and macro-F1 (the best checkpoint by macro-F1) for classification; Pearson and
  Spearman (by Pearson) for regression.
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

from ..errors import DataError
from .tasks import Example, TaskSpec

CLASSIFICATION_METRICS = ("accuracy", "macro_f1")
REGRESSION_METRICS = ("pearson", "spearmanr")
TASK_TYPES = ("classification", "regression")
_FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl"}


def load_custom_task(train: str | Path | None = None, dev: str | Path | None = None, *, text_column: str,
                     text_pair_column: Optional[str] = None, label_column: str,
                     task_type: str = "classification", dev_fraction: float = 0.1, seed: int = 42,
                     dataset: Optional[str] = None, dataset_config: Optional[str] = None,
                     labels: Optional[Sequence[str]] = None, name: Optional[str] = None,
                     main_metric: Optional[str] = None) -> tuple[TaskSpec, list[Example], dict[str, list[Example]]]:
    """``(task, train_examples, {"dev": dev_examples})`` from files or a hub dataset.

    ``train``/``dev``: file paths, or split names with ``dataset``. ``labels``: the class names in
    index order (default: discovered from the training data). ``name``: the task's name in results
    (default: the dataset's or the training file's name).
    """
    if task_type not in TASK_TYPES:
        raise DataError(f"task type {task_type!r} is not one of {', '.join(TASK_TYPES)}")
    regression = task_type == "regression"
    if regression and labels:
        raise DataError("labels were given for a regression task; regression labels are numbers")
    columns = _Columns(text_column, text_pair_column, label_column)
    if dataset is not None:
        train_rows, dev_rows, hub_labels = _hub_rows(dataset, dataset_config, train or "train", dev, columns)
        default_name = dataset.rstrip("/").rsplit("/", 1)[-1]
        if hub_labels and not labels and not regression:
            labels = hub_labels
    else:
        if train is None:
            raise DataError("no training data: pass a training file (CSV, TSV or JSON Lines) or a hub dataset")
        train_rows = list(_file_rows(Path(train), columns))
        dev_rows = list(_file_rows(Path(dev), columns)) if dev is not None else None
        stem = Path(train).stem
        default_name = Path(train).resolve().parent.name if stem.lower() in ("train", "training") else stem
    if not train_rows:
        raise DataError(f"{train}: no examples")

    if regression:
        label_names = None
    else:
        label_names = tuple(str(x) for x in labels) if labels else _discover_labels(train_rows)
        if not labels:
            _report_labels(label_names, str(train or dataset))
        if len(set(label_names)) != len(label_names):
            raise DataError(f"labels {list(label_names)} repeat a name; give each class once")
        if len(label_names) < 2:
            raise DataError(f"{train}: the training data has only the label {list(label_names)}; "
                            "classification needs at least two classes (or use --task-type regression)")
    convert = _label_converter(label_names)
    train_examples = [_example(row, convert) for row in train_rows]
    if dev_rows is None:
        train_examples, dev_examples = split_dev(train_examples, dev_fraction, seed, where=str(train or dataset))
    else:
        dev_examples = [_example(row, convert) for row in dev_rows]
        if not dev_examples:
            raise DataError(f"{dev}: no examples")
    metrics = REGRESSION_METRICS if regression else CLASSIFICATION_METRICS
    main = main_metric or ("pearson" if regression else "macro_f1")
    if main not in metrics:
        raise DataError(f"main metric {main!r} is not one of {', '.join(metrics)}")
    task_name = name or default_name
    task = TaskSpec(task_name, task_name, label_names, metrics, main, ("dev",))
    return task, train_examples, {"dev": dev_examples}


def split_dev(examples: list, fraction: float, seed: int, where: str = "the training data") -> tuple[list, list]:
    """``(train, dev)``: ``fraction`` of ``examples`` (at least one) drawn with ``seed`` as dev, the rest
    train, both in their original order."""
    if not 0 < fraction < 1:
        raise DataError(f"dev fraction must be between 0 and 1 (exclusive), got {fraction}; or pass a dev file")
    n_dev = max(1, round(len(examples) * fraction))
    if n_dev >= len(examples):
        raise DataError(f"{where}: {len(examples)} example(s) cannot be split into train and dev; "
                        "give more data or a dev file")
    chosen = set(random.Random(seed).sample(range(len(examples)), n_dev))
    return ([e for i, e in enumerate(examples) if i not in chosen],
            [e for i, e in enumerate(examples) if i in chosen])


# ---------------------------------------------------------------------------------------------------
# Rows: (text_a, text_b, raw label, where) from any source


class _Columns:
    def __init__(self, text: str, pair: Optional[str], label: str):
        self.text, self.pair, self.label = text, pair, label

    @property
    def needed(self) -> list[str]:
        return [c for c in (self.text, self.pair, self.label) if c is not None]


def _row(record: dict, columns: _Columns, where: str):
    missing = [c for c in columns.needed if c not in record]
    if missing:
        raise DataError(f"{where}: no column {missing[0]!r} (found: {', '.join(map(str, record)) or 'nothing'}); "
                        "check --text-column / --text-pair-column / --label-column")
    text_a = record[columns.text]
    text_b = record[columns.pair] if columns.pair else None
    for column, value in ((columns.text, text_a), (columns.pair, text_b)):
        if column is not None and not isinstance(value, str):
            if value is None:
                raise DataError(f"{where}: column {column!r} is empty; every example needs its text")
            value = str(value)
            if column == columns.text:
                text_a = value
            else:
                text_b = value
    return text_a, text_b, record[columns.label], where


def _file_rows(path: Path, columns: _Columns) -> Iterator[tuple]:
    fmt = _FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DataError(f"{path}: unknown file type {path.suffix!r}; use .csv, .tsv or .jsonl (JSON Lines)")
    if not path.is_file():
        raise DataError(f"{path} not found; check the path")
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            if fmt == "jsonl":
                yield from _json_rows(f, path, columns)
            else:
                yield from _delimited_rows(f, path, columns, fmt)
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not valid UTF-8 ({err.reason}); re-save the file as UTF-8") from None
    except csv.Error as err:
        raise DataError(f"{path}: unreadable row ({err}); fix or remove that line") from None


def _delimited_rows(f, path: Path, columns: _Columns, fmt: str) -> Iterator[tuple]:
    if fmt == "tsv":
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
    else:
        reader = csv.reader(f)
    header = None
    for row in reader:
        if not row or (len(row) == 1 and not row[0].strip()):
            continue  # blank line
        if header is None:
            header = [h.strip() for h in row]
            missing = [c for c in columns.needed if c not in header]
            if missing:
                raise DataError(f"{path}:1: header has no column {missing[0]!r} (columns: {', '.join(header)}); "
                                "check --text-column / --text-pair-column / --label-column, or add a header line")
            continue
        where = f"{path}:{reader.line_num}"
        if len(row) != len(header):
            sep = "tab" if fmt == "tsv" else "comma"
            raise DataError(f"{where}: expected {len(header)} {sep}-separated columns, got {len(row)}; fix that row"
                            + (" (a tab inside a text?)" if fmt == "tsv" else " (quote texts holding commas)"))
        yield _row(dict(zip(header, row)), columns, where)
    if header is None:
        raise DataError(f"{path}: empty file; it needs a header line and examples")


def _json_rows(f, path: Path, columns: _Columns) -> Iterator[tuple]:
    text = f.read()
    if text.lstrip().startswith("["):  # one JSON array of objects
        try:
            records = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{err.lineno}: not valid JSON ({err.msg})") from None
        numbered = [(f"{path}: item {i + 1}", r) for i, r in enumerate(records)]
    else:
        numbered = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                numbered.append((f"{path}:{number}", json.loads(line)))
            except json.JSONDecodeError as err:
                raise DataError(f"{path}:{number}: not valid JSON ({err.msg}); JSON Lines files hold one object "
                                "per line") from None
    for where, record in numbered:
        if not isinstance(record, dict):
            raise DataError(f"{where}: expected a JSON object with named fields, got {type(record).__name__}")
        yield _row(record, columns, where)


def open_hub_splits(dataset: str, config: Optional[str], train_split: str, dev_split: Optional[str],
                    local_formats: str):
    """``(where, splits, dev_split)`` of a hub dataset; DataError when it cannot be had.

    ``dev_split`` defaults to "validation" when the dataset has one; ``local_formats`` names the
    files a user can pass instead (for the message).
    """
    where = f"hub dataset {dataset}" + (f" ({config})" if config else "")
    try:
        import datasets  # optional: only needed for hub data
    except ImportError:
        raise DataError(f"cannot load {where}: the 'datasets' package is not installed; pip install datasets, "
                        f"or pass {local_formats}") from None
    try:
        splits = datasets.load_dataset(dataset, config)
    except Exception as err:  # network, offline mode, unknown name: any failure means "no hub data"
        reason = (str(err).splitlines() or [""])[0]
        raise DataError(f"cannot load {where} ({type(err).__name__}: {reason}); check the name, the network / "
                        "HF_HUB_OFFLINE, or pass local files") from err
    if dev_split is None and "validation" in splits:
        dev_split = "validation"
    for split in (train_split, dev_split):
        if split is not None and split not in splits:
            raise DataError(f"{where} has no split {split!r}; it has {', '.join(splits)}")
    return where, splits, dev_split


def _hub_rows(dataset: str, config: Optional[str], train_split: str, dev_split: Optional[str], columns: _Columns):
    """Rows of the train and dev splits, and the label names of a ClassLabel column (else None)."""
    where, splits, dev_split = open_hub_splits(dataset, config, train_split, dev_split, "CSV / TSV / JSON Lines files")
    feature = splits[train_split].features.get(columns.label)
    names = list(feature.names) if hasattr(feature, "names") else None

    def rows(split):
        out = []
        for i, record in enumerate(splits[split]):
            text_a, text_b, label, here = _row(record, columns, f"{where} {split} row {i}")
            if names is not None:  # ClassLabel: an index; -1 marks an unlabeled (test) row
                if label is None or label < 0:
                    raise DataError(f"{here}: no label (is {split!r} a test split?); use a labelled split")
                label = names[label]
            out.append((text_a, text_b, label, here))
        return out

    return rows(train_split), (rows(dev_split) if dev_split is not None else None), names


# ---------------------------------------------------------------------------------------------------
# Labels


def _label_text(value: Any) -> Optional[str]:
    if value is None:
        return None
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # 1.0 in JSON and 1 in a CSV are the same class
    return str(value).strip()


def _report_labels(names: tuple[str, ...], where: str) -> None:
    """Say which classes the training data defined: a stray label (a ``5`` among ``0``/``1``) would
    otherwise become a class of its own without a word."""
    import logging

    listed = ", ".join(names[:20]) + (", ..." if len(names) > 20 else "")
    note = f"{where}: {len(names)} classes found in the training data, in index order: {listed}"
    if all(n.lstrip("-").isdigit() for n in names) and [int(n) for n in names] != list(range(len(names))):
        note += f" (integer labels that are not 0..{len(names) - 1}: each becomes the class at its position)"
    logging.getLogger("xtc").warning(note + "; pass --labels to name the classes yourself")


def _discover_labels(rows: list[tuple]) -> tuple[str, ...]:
    found = set()
    for _, _, label, where in rows:
        text = _label_text(label)
        if not text:
            raise DataError(f"{where}: empty label; every training example needs one")
        found.add(text)
    try:
        return tuple(sorted(found, key=int))
    except ValueError:
        return tuple(sorted(found))


def _label_converter(label_names: Optional[tuple[str, ...]]):
    if label_names is None:
        def to_number(value, where):
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise DataError(f"{where}: label {value!r} is not a number; a regression task needs numeric "
                                "labels (or use --task-type classification)") from None
            if number != number or number in (float("inf"), float("-inf")):
                raise DataError(f"{where}: label {value!r} is not a finite number")
            return number
        return to_number
    index = {name: i for i, name in enumerate(label_names)}

    def to_index(value, where):
        text = _label_text(value)
        if not text:
            raise DataError(f"{where}: empty label; every example needs one")
        if text not in index:
            raise DataError(f"{where}: label {text!r} is not one of the task's labels "
                            f"({', '.join(label_names)}); fix the row or pass the full label list")
        return index[text]
    return to_index


def _example(row: tuple, convert) -> Example:
    text_a, text_b, label, where = row
    return Example(text_a, text_b, convert(label, where))
