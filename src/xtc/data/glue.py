"""GLUE: the nine tasks, and their data from the original TSV files or the hub.

Two sources give the same :class:`Example` lists:

* the original ``glue_data/`` TSV layout (``<glue_dir>/<Task>/<split>.tsv``), read by :func:`read_split`;
* the hub's ``nyu-mll/glue`` dataset, read by :func:`load_split` when no ``glue_dir`` is given
  (needs the optional ``datasets`` package).

TSVs are read exactly as the GLUE download script wrote them: tab-separated, *no* quoting (texts contain
stray ``"`` characters that a quote-aware parser would swallow, merging rows), UTF-8 with an optional
byte-order mark (MRPC's headers carry one). Columns are picked by header name, because the tasks differ
in layout (MNLI has a dozen parse columns, STS-B has ten columns); CoLA train/dev are the one headerless
layout and are read by position.

Labels are indices into :attr:`TaskSpec.labels`, which lists the label strings of the TSV files in the
order of the hub's ``ClassLabel`` (e.g. MRPC ``"0"`` = not_equivalent, ``"1"`` = equivalent), so a model
trained on either source predicts the same indices.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..errors import DataError
from .tasks import Example, TaskSpec

HUB_DATASET = "nyu-mll/glue"


_BINARY = ("0", "1")
_NLI2 = ("entailment", "not_entailment")
GLUE_TASKS: dict[str, TaskSpec] = {
    t.name: t
    for t in (
        TaskSpec("cola", "CoLA", _BINARY, ("mcc",), "mcc", ("dev",)),
        TaskSpec("sst2", "SST-2", _BINARY, ("accuracy",), "accuracy", ("dev",)),
        TaskSpec("mrpc", "MRPC", _BINARY, ("f1", "accuracy"), "f1", ("dev",), best_by=("f1", "accuracy")),
        TaskSpec("qqp", "QQP", _BINARY, ("f1", "accuracy"), "f1", ("dev",), best_by=("f1", "accuracy")),
        TaskSpec("stsb", "STS-B", None, ("pearson", "spearmanr"), "pearson", ("dev",)),
        TaskSpec("mnli", "MNLI", ("entailment", "neutral", "contradiction"), ("accuracy",), "accuracy",
                 ("dev_matched", "dev_mismatched")),
        TaskSpec("qnli", "QNLI", _NLI2, ("accuracy",), "accuracy", ("dev",)),
        TaskSpec("rte", "RTE", _NLI2, ("accuracy",), "accuracy", ("dev",)),
        # WNLI's TSV labels are 0/1 and the hub's ClassLabel is (not_entailment, entailment): same order.
        TaskSpec("wnli", "WNLI", _BINARY, ("accuracy",), "accuracy", ("dev",)),
    )
}

# "mnli-mm"/"mnli-m" are how GLUE leaderboards name MNLI's two dev sets; both are the MNLI task here.
_ALIASES = {"mnlimm": "mnli", "mnlim": "mnli", "mnlimatched": "mnli", "mnlimismatched": "mnli"}


def get_task(name: str | TaskSpec) -> TaskSpec:
    """Task by name, ignoring case, '-' and '_' ("STS-B", "sst-2", "mnli-mm" all work)."""
    if isinstance(name, TaskSpec):
        return name
    key = str(name).lower().replace("-", "").replace("_", "")
    key = _ALIASES.get(key, key)
    if key == "embedding":
        raise DataError("the embedding task is made from its model (its pooling) and its sentences: pass "
                        "data=xtc.data.embedding.load_embedding_task(model, sentences_file) to the stages; compress "
                        "builds it from the recipe")
    if key not in GLUE_TASKS:
        raise DataError(f"unknown task {name!r}; known tasks: {', '.join(GLUE_TASKS)}")
    return GLUE_TASKS[key]


# ---------------------------------------------------------------------------------------------------
# Layouts of the original files


@dataclass(frozen=True)
class _Layout:
    columns: tuple[str, ...]  # train/dev columns of the original files (written back by write_split)
    text_a: str
    text_b: str | None
    label: str
    hub_text_a: str  # column names in the hub dataset
    hub_text_b: str | None
    headerless: bool = False  # CoLA train/dev have no header line: columns are read by position


_MNLI_PARSES = ("sentence1_binary_parse", "sentence2_binary_parse", "sentence1_parse", "sentence2_parse")
_LAYOUTS = {
    "cola": _Layout(("source", "label", "original_label", "sentence"), "sentence", None, "label",
                    "sentence", None, headerless=True),
    "sst2": _Layout(("sentence", "label"), "sentence", None, "label", "sentence", None),
    "mrpc": _Layout(("Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"), "#1 String", "#2 String",
                    "Quality", "sentence1", "sentence2"),
    "qqp": _Layout(("id", "qid1", "qid2", "question1", "question2", "is_duplicate"), "question1",
                   "question2", "is_duplicate", "question1", "question2"),
    "stsb": _Layout(("index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1",
                     "sentence2", "score"), "sentence1", "sentence2", "score", "sentence1", "sentence2"),
    # MNLI train layout; dev files add label1..label5 before gold_label, and columns are found by name.
    "mnli": _Layout(("index", "promptID", "pairID", "genre", *_MNLI_PARSES, "sentence1", "sentence2",
                     "label1", "gold_label"), "sentence1", "sentence2", "gold_label",
                    "premise", "hypothesis"),
    "qnli": _Layout(("index", "question", "sentence", "label"), "question", "sentence", "label",
                    "question", "sentence"),
    "rte": _Layout(("index", "sentence1", "sentence2", "label"), "sentence1", "sentence2", "label",
                   "sentence1", "sentence2"),
    "wnli": _Layout(("index", "sentence1", "sentence2", "label"), "sentence1", "sentence2", "label",
                    "sentence1", "sentence2"),
}

# hub split names -> ours, so that either spelling works everywhere
_SPLIT_ALIASES = {"validation": "dev", "validation_matched": "dev_matched",
                  "validation_mismatched": "dev_mismatched"}
_HUB_SPLITS = {"dev": "validation", "dev_matched": "validation_matched",
               "dev_mismatched": "validation_mismatched"}


def _split_file(task: TaskSpec, split: str) -> str:
    """File stem of ``split`` for ``task`` (MNLI's "dev"/"test" mean the matched sets, as in GLUE)."""
    split = _SPLIT_ALIASES.get(split, split)
    if task.name == "mnli":
        split = {"dev": "dev_matched", "test": "test_matched"}.get(split, split)
        known = ("train", "dev_matched", "dev_mismatched", "test_matched", "test_mismatched")
    else:
        known = ("train", "dev", "test")
    if split not in known:
        raise DataError(f"unknown split {split!r} for {task.name}; use one of {', '.join(known)}")
    return split


# ---------------------------------------------------------------------------------------------------
# Reading


def read_split(task: TaskSpec | str, glue_dir: str | Path, split: str) -> list[Example]:
    """Examples of ``<glue_dir>/<dir_name>/<split>.tsv``; test files (no label column) give label None."""
    task = get_task(task)
    stem = _split_file(task, split)
    glue_dir = Path(glue_dir)
    hint = "pass --glue-dir pointing at the folder that holds MRPC/, CoLA/, ... (the GLUE data folder)"
    if not glue_dir.is_dir():
        raise DataError(f"GLUE folder {glue_dir} does not exist; {hint}")
    folder = glue_dir / task.dir_name
    if not folder.is_dir():
        found = sorted(p.name for p in glue_dir.iterdir() if p.is_dir())
        # a common slip: pointing at the task folder itself instead of its parent
        slip = (f" ({glue_dir} looks like a task folder: use its parent)"
                if (glue_dir / f"{stem}.tsv").exists() else "")
        raise DataError(f"{glue_dir} has no {task.dir_name}/ folder (found: {', '.join(found) or 'nothing'})"
                        f"{slip}; {hint}")
    path = folder / f"{stem}.tsv"
    if not path.is_file():
        found = sorted(p.name for p in folder.glob("*.tsv"))
        raise DataError(f"{path} not found (the folder has: {', '.join(found) or 'no .tsv files'}); "
                        f"get the {task.dir_name} {stem} file from the GLUE download, or {hint}")
    examples, labeled = _read(task, path)
    if not labeled and not stem.startswith("test"):
        raise DataError(f"{path}: no {_LAYOUTS[task.name].label!r} column, but {stem} files need labels "
                        "(is this a test file?); use the original GLUE train/dev file")
    return examples


def read_tsv(task: TaskSpec | str, path: str | Path) -> list[Example]:
    """Examples of one TSV in the task's original layout (any split; a missing or empty label gives None).

    Raises :class:`DataError` for a row with the wrong number of columns, an unknown label, a file
    without examples or non-UTF-8 bytes, naming ``path`` and the line.
    """
    return _read(get_task(task), Path(path))[0]


def _read(task: TaskSpec, path: Path) -> tuple[list[Example], bool]:
    """Examples of ``path`` and whether the file has a label column."""
    examples: list[Example] = []
    pick = labeled = None
    try:
        # newline="" + QUOTE_NONE: every physical line is one row and quotes are plain text
        with open(path, encoding="utf-8-sig", newline="") as f:
            rows = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
            for row in rows:
                if not row:  # a blank line (e.g. a trailing one added by an editor) carries no example
                    continue
                if pick is None:
                    pick, is_header, labeled = _column_picker(task, row, path)
                    if is_header:
                        continue
                examples.append(pick(row, rows.line_num))
    except UnicodeDecodeError as err:
        raise DataError(f"{path}:{_first_bad_line(path)}: not valid UTF-8 ({err.reason}); "
                        "re-save the file as UTF-8") from None
    except csv.Error as err:
        raise DataError(f"{path}:{rows.line_num}: unreadable row ({err}); fix or remove that line") from None
    except OSError as err:
        raise DataError(f"cannot read {path} ({err.strerror or err}); check the path") from None
    if not examples:
        raise DataError(f"{path}: no examples (the file is empty or holds only a header); "
                        "use a complete GLUE file")
    return examples, labeled


def _column_picker(task: TaskSpec, first_row: list[str], path: Path):
    """``(pick, is_header, labeled)`` for a file, from its first row: ``pick(row, line) -> Example``,
    whether that row is a header (every file has one except CoLA train/dev), whether there are labels."""
    layout = _LAYOUTS[task.name]
    is_header = not layout.headerless or first_row == ["index", "sentence"]  # CoLA test has a header
    header = [name.strip() for name in first_row] if is_header else list(layout.columns)
    where = {name: i for i, name in enumerate(header)}
    for name in (layout.text_a, layout.text_b):
        if name is not None and name not in where:
            raise DataError(f"{path}:1: header has no {name!r} column (got {' | '.join(header)!r}); "
                            f"expected the original GLUE {task.dir_name} layout: "
                            f"{' | '.join(layout.columns)!r}")
    a = where[layout.text_a]
    b = where[layout.text_b] if layout.text_b is not None else None
    y = where.get(layout.label)  # absent in test files
    width = len(header)

    def pick(row: list[str], line: int) -> Example:
        if len(row) != width:
            raise DataError(f"{path}:{line}: expected {width} tab-separated columns, got {len(row)}; "
                            "fix that row (a tab inside a text, or a truncated line)")
        label = None if y is None else _parse_label(task, row[y].strip(), path, line, layout.label)
        return Example(row[a], None if b is None else row[b], label)

    return pick, is_header, y is not None


def _parse_label(task: TaskSpec, value: str, path: Path, line: int, column: str) -> int | float | None:
    if value == "":  # written by write_split for unlabeled (e.g. augmented) examples
        return None
    if task.labels is None:
        try:
            return float(value)
        except ValueError:
            raise DataError(f"{path}:{line}: {column} {value!r} is not a number; "
                            f"{task.name} needs a similarity score (0-5)") from None
    if value not in task.labels:
        raise DataError(f"{path}:{line}: label {value!r} (column {column!r}) is not one of "
                        f"{', '.join(task.labels)}; fix the row or check that this is a {task.dir_name} file")
    return task.labels.index(value)


def _first_bad_line(path: Path) -> int:
    """Line number of the first line that is not UTF-8 (the decoder error itself has only a byte offset)."""
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            try:
                raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError:
                return number
    return 0


# ---------------------------------------------------------------------------------------------------
# Hub


def load_split(task: TaskSpec | str, split: str, glue_dir: str | Path | None = None) -> list[Example]:
    """Examples of ``split`` from ``glue_dir`` (TSV layout) if given, else from the hub's GLUE dataset."""
    task = get_task(task)
    if glue_dir is not None:
        return read_split(task, glue_dir, split)
    stem = _split_file(task, split)
    hub_split = _HUB_SPLITS.get(stem, stem)  # train, test_matched ... are spelled the same on the hub
    where = f"{HUB_DATASET} ({task.name}, {hub_split})"
    try:
        import datasets  # optional: only needed without a local GLUE folder
    except ImportError:
        raise DataError(f"cannot load {where}: the 'datasets' package is not installed; "
                        "pip install datasets, or pass --glue-dir pointing at a GLUE data folder") from None
    try:
        rows = datasets.load_dataset(HUB_DATASET, task.name, split=hub_split)
    except Exception as err:  # network, offline mode, cache: any failure means "no hub data"
        reason = (str(err).splitlines() or [""])[0]
        raise DataError(f"cannot load {where} from the hub ({type(err).__name__}: {reason}); "
                        "check the network / HF_HUB_OFFLINE, or pass --glue-dir pointing at a GLUE data "
                        "folder") from err
    layout = _LAYOUTS[task.name]
    examples = []
    for row in rows:
        label = row.get("label")
        # the hub marks unlabeled (test) rows with -1, also for stsb (whose scores are 0..5)
        if label is None or label < 0:
            label = None
        else:
            label = float(label) if task.is_regression else int(label)
        text_b = row[layout.hub_text_b] if layout.hub_text_b is not None else None
        examples.append(Example(row[layout.hub_text_a], text_b, label))
    if not examples:
        raise DataError(f"{where}: no examples; pass --glue-dir pointing at a GLUE data folder")
    return examples


# ---------------------------------------------------------------------------------------------------
# Writing


def write_split(task: TaskSpec | str, examples: Sequence[Example], path: str | Path) -> None:
    """Write ``examples`` as a TSV in the task's original train/dev layout, which :func:`read_tsv` reads back.

    Columns the examples do not carry (ids, genre, parses) are left empty, ``index``/``id`` columns get
    the row number, and an unlabeled example gets an empty label field (read back as None). Tabs and line
    breaks inside texts become spaces: the format has no quoting, so they would split the row.
    """
    task = get_task(task)
    layout = _LAYOUTS[task.name]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as f:
        # quotechar=None: with QUOTE_NONE, a '"' in a text is written as is (GLUE texts contain them)
        writer = csv.writer(f, delimiter="\t", quoting=csv.QUOTE_NONE, quotechar=None, lineterminator="\n")
        if not layout.headerless:
            writer.writerow(layout.columns)
        for i, ex in enumerate(examples):
            fields = dict.fromkeys(layout.columns, "")
            for name in ("index", "id"):
                if name in fields:
                    fields[name] = str(i)
            fields[layout.text_a] = _one_line(ex.text_a)
            if layout.text_b is not None:
                if ex.text_b is None:
                    raise DataError(f"{path}: example {i} has no text_b, but {task.name} is a "
                                    "sentence-pair task; give every example both texts")
                fields[layout.text_b] = _one_line(ex.text_b)
            fields[layout.label] = _format_label(task, ex.label, path, i)
            writer.writerow(fields.values())


_FLATTEN = str.maketrans("\t\r\n", "   ")


def _one_line(text: str) -> str:
    return text.translate(_FLATTEN)


def _format_label(task: TaskSpec, label, path: Path, i: int) -> str:
    if label is None:
        return ""
    if task.labels is None:
        return repr(float(label))  # repr round-trips the float exactly
    if not 0 <= int(label) < len(task.labels):
        raise DataError(f"{path}: example {i} has label {label}, but {task.name} has labels "
                        f"0..{len(task.labels) - 1}; fix the label or the task")
    return task.labels[int(label)]


# ---------------------------------------------------------------------------------------------------
# Metrics


def compute_metrics(task: TaskSpec | str, predictions, labels) -> dict[str, float]:
    """``task.metrics`` of ``predictions`` against ``labels``; ``task`` a TaskSpec or a GLUE name."""
    return get_task(task).compute(predictions, labels)
