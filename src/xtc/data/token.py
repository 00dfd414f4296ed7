"""Token classification (e.g. named entities) as a second task type, on the same pipeline.

* Data: CoNLL-style files (one ``token<TAB or spaces>tag`` per line, a blank line between sentences;
  with more columns, as CoNLL-2003's ``word POS chunk NER``, the first is the token and the last the
  tag; ``-DOCSTART-`` lines are skipped), JSON Lines with a list of tokens and a list of tags per
  line, or a hub dataset (tags as a ``Sequence(ClassLabel)`` keep their names).
* Labels: the tags found in the training data, sorted, or the list given. Each word's tag goes to
  its *first* word-piece; the other pieces, and [CLS]/[SEP]/padding, get -100 (no label).
* Model: ``AutoModelForTokenClassification``; quantization and layer reduction are the same.
* Distillation: the prediction loss is the soft cross-entropy of the per-token distributions over
  every real token (attention mask 1), plus the same attention and hidden-state losses
  (:func:`xtc.distillation.prediction_loss` with ``[B, T, C]`` logits and a mask).
* Metric: entity-level precision / recall / F1 over BIO (IOB2) spans, micro-averaged over entities
  (the numbers of seqeval's default mode and conlleval; IOBES tags are read too), and token accuracy
  over labelled words. Words cut off by ``max_length`` are not scored.

``load_token_task`` returns ``(task, train_examples, {"dev": dev_examples})`` like
:func:`xtc.data.own.load_custom_task`; pass it as ``data=`` to ``xtc.pipeline`` functions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Optional, Sequence

import numpy as np
import torch

from ..errors import DataError
from .own import open_hub_splits, split_dev
from .tasks import TaskSpec

TOKEN_METRICS = ("entity_f1", "entity_precision", "entity_recall", "token_accuracy")
IGNORE = -100


@dataclass(frozen=True)
class TokenTaskSpec(TaskSpec):
    """A token classification task: ``labels`` are the tag names, one prediction per word."""

    token_level: ClassVar[bool] = True  # for readers of a task's repr; xtc itself calls the methods below

    def model_class(self):
        from transformers import AutoModelForTokenClassification

        return AutoModelForTokenClassification

    def dataset(self, examples, tokenizer, max_length: int):
        return TokenClassificationDataset(examples, tokenizer, max_length)

    def compute(self, predictions, labels) -> dict[str, float]:
        return token_metrics(self, predictions, labels)


@dataclass
class TokenExample:
    tokens: list[str]
    tags: Optional[list[int]]  # indices into TaskSpec.labels, one per token; None if unlabeled


# ---------------------------------------------------------------------------------------------------
# Reading


def read_conll(path: str | Path) -> list[tuple[list[str], list[str]]]:
    """Sentences of a CoNLL-style file as ``(tokens, tags)``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} not found; check the path")
    sentences, tokens, tags = [], [], []
    try:
        with open(path, encoding="utf-8-sig") as f:
            for number, line in enumerate(f, 1):
                fields = line.split()
                if not fields:
                    if tokens:
                        sentences.append((tokens, tags))
                    tokens, tags = [], []
                    continue
                if fields[0] == "-DOCSTART-":
                    continue
                if len(fields) < 2:
                    raise DataError(f"{path}:{number}: expected a token and its tag separated by a tab or spaces, "
                                    f"got {line.strip()!r}")
                tokens.append(fields[0])
                tags.append(fields[-1])
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not valid UTF-8 ({err.reason}); re-save the file as UTF-8") from None
    if tokens:
        sentences.append((tokens, tags))
    if not sentences:
        raise DataError(f"{path}: no sentences (a line per token, a blank line between sentences)")
    return sentences


def read_token_jsonl(path: str | Path, tokens_column: str = "tokens", tags_column: str = "tags"
                     ) -> list[tuple[list[str], list]]:
    """Sentences of a JSON Lines file, one object per line with a list of tokens and a list of tags."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} not found; check the path")
    sentences = []
    with open(path, encoding="utf-8-sig") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}:{number}: not valid JSON ({err.msg})") from None
            sentences.append(_sentence(record, tokens_column, tags_column, f"{path}:{number}"))
    if not sentences:
        raise DataError(f"{path}: no sentences")
    return sentences


def _sentence(record, tokens_column: str, tags_column: str, where: str) -> tuple[list[str], list]:
    if not isinstance(record, dict) or tokens_column not in record or tags_column not in record:
        found = ", ".join(record) if isinstance(record, dict) else type(record).__name__
        raise DataError(f"{where}: expected an object with a {tokens_column!r} list and a {tags_column!r} list "
                        f"(found: {found})")
    tokens, tags = record[tokens_column], record[tags_column]
    if not isinstance(tokens, list) or not isinstance(tags, list) or len(tokens) != len(tags):
        raise DataError(f"{where}: {tokens_column!r} and {tags_column!r} must be lists of the same length")
    if not tokens:
        raise DataError(f"{where}: an empty sentence")
    return [str(t) for t in tokens], list(tags)


def _read(path: Path, tokens_column: str, tags_column: str):
    if path.suffix.lower() in (".jsonl", ".json", ".ndjson"):
        return read_token_jsonl(path, tokens_column, tags_column)
    return read_conll(path)


def load_token_task(train: str | Path | None = None, dev: str | Path | None = None, *,
                    dev_fraction: float = 0.1, seed: int = 42, labels: Optional[Sequence[str]] = None,
                    tokens_column: str = "tokens", tags_column: str = "tags", dataset: Optional[str] = None,
                    dataset_config: Optional[str] = None, name: Optional[str] = None
                    ) -> tuple[TokenTaskSpec, list[TokenExample], dict[str, list[TokenExample]]]:
    """``(task, train_examples, {"dev": dev_examples})`` of a token classification task.

    ``train``/``dev``: CoNLL-style or JSON Lines files (``.jsonl``), or split names with ``dataset``.
    """
    hub_names = None
    if dataset is not None:
        train_sents, dev_sents, hub_names = _hub_sentences(dataset, dataset_config, train or "train", dev,
                                                           tokens_column, tags_column)
        default_name = dataset.rstrip("/").rsplit("/", 1)[-1]
    else:
        if train is None:
            raise DataError("no training data: pass a CoNLL-style or JSON Lines file, or a hub dataset")
        train_sents = _read(Path(train), tokens_column, tags_column)
        dev_sents = _read(Path(dev), tokens_column, tags_column) if dev is not None else None
        stem = Path(train).stem
        default_name = Path(train).resolve().parent.name if stem.lower() in ("train", "training") else stem
    if labels:
        names = tuple(str(x) for x in labels)
    elif hub_names:
        names = tuple(hub_names)
    else:
        names = tuple(sorted({str(t) for _, tags in train_sents for t in tags}))
    if len(set(names)) != len(names) or len(names) < 2:
        raise DataError(f"tags {list(names)}: token classification needs at least two distinct tags")
    index = {n: i for i, n in enumerate(names)}

    def examples(sentences, where):
        out = []
        for k, (tokens, tags) in enumerate(sentences):
            ids = []
            for tag in tags:
                key = names[tag] if hub_names and isinstance(tag, int) else str(tag)
                if key not in index:
                    raise DataError(f"{where}: sentence {k + 1} has the tag {key!r}, not one of the task's tags "
                                    f"({', '.join(names)}); fix it or pass the full tag list")
                ids.append(index[key])
            out.append(TokenExample(list(tokens), ids))
        return out

    train_examples = examples(train_sents, str(train or dataset))
    if dev_sents is None:
        train_examples, dev_examples = split_dev(train_examples, dev_fraction, seed, where=str(train or dataset))
    else:
        dev_examples = examples(dev_sents, str(dev))
    task_name = name or default_name
    task = TokenTaskSpec(task_name, task_name, names, TOKEN_METRICS, "entity_f1", ("dev",))
    return task, train_examples, {"dev": dev_examples}


def _hub_sentences(dataset, config, train_split, dev_split, tokens_column, tags_column):
    where, splits, dev_split = open_hub_splits(dataset, config, train_split, dev_split,
                                               "CoNLL-style / JSON Lines files")
    feature = splits[train_split].features.get(tags_column)
    inner = getattr(feature, "feature", None)
    names = list(inner.names) if hasattr(inner, "names") else None

    def read(split):
        return [_sentence(r, tokens_column, tags_column, f"{where} {split} row {i}")
                for i, r in enumerate(splits[split])]

    return read(train_split), (read(dev_split) if dev_split else None), names


# ---------------------------------------------------------------------------------------------------
# Tokenized dataset


class TokenClassificationDataset(torch.utils.data.Dataset):
    """Sentences tokenized once (word-pieces of each word, truncated to ``max_length``), each word's tag
    on its first word-piece and -100 elsewhere. Items: ``input_ids``, ``attention_mask``,
    ``token_type_ids`` (if the tokenizer makes them) and ``labels`` (a list; absent if unlabeled)."""

    def __init__(self, examples: Sequence[TokenExample], tokenizer, max_length: int = 128):
        self.examples = list(examples)
        words = [e.tokens for e in self.examples]
        if not getattr(tokenizer, "is_fast", False):
            raise DataError("token classification needs a fast tokenizer (tokenizer.json) to map words to pieces")
        try:
            encodings = tokenizer(words, is_split_into_words=True, truncation=True, max_length=max_length,
                                  padding=False)
        except (ValueError, AssertionError) as err:
            if "add_prefix_space" not in str(err):
                raise
            # byte-level BPE tokenizers (RoBERTa, ...) need a space before each pre-split word
            tokenizer = type(tokenizer).from_pretrained(tokenizer.name_or_path, add_prefix_space=True)
            encodings = tokenizer(words, is_split_into_words=True, truncation=True, max_length=max_length,
                                  padding=False)
        self.labels = []
        for i, example in enumerate(self.examples):
            if example.tags is None:
                self.labels.append(None)
                continue
            aligned, previous = [], None
            for word in encodings.word_ids(i):
                aligned.append(IGNORE if word is None or word == previous else int(example.tags[word]))
                previous = word
            self.labels.append(aligned)
        self.encodings = {k: v for k, v in encodings.items()}
        self.lengths = [len(ids) for ids in self.encodings["input_ids"]]

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict:
        item = {key: values[i] for key, values in self.encodings.items()}
        if self.labels[i] is not None:
            item["labels"] = list(self.labels[i])
        return item


# ---------------------------------------------------------------------------------------------------
# Entity-level metric


def _split_tag(tag: str) -> tuple[str, str]:
    if tag in ("O", ""):
        return "O", ""
    if len(tag) > 1 and tag[1] in "-_" and tag[0] in "BIESLU":
        prefix = {"L": "E", "U": "S"}.get(tag[0], tag[0])  # BILOU spelled as IOBES
        return prefix, tag[2:]
    return "I", tag  # a tag without a prefix is an entity type on its own


def entities(tags: Sequence[str]) -> set[tuple[str, int, int]]:
    """Entity spans ``(type, first, last)`` of a BIO / IOB2 (or IOBES) tag sequence.

    As conlleval and seqeval's default mode: a span starts at a B- (or S-), or at an I- (or E-) that
    does not continue a span of its type (so ``O I-PER`` and ``B-LOC I-PER`` start a PER span); it ends
    before an O, a B-/S-, or a tag of another type, and after an E-/S-.
    """
    spans = set()
    start, kind, prev = None, "", "O"
    for i, tag in enumerate(list(tags) + ["O"]):
        prefix, typ = _split_tag(tag)
        ends = start is not None and (prefix in ("O", "B", "S") or prev in ("E", "S") or typ != kind)
        if ends:
            spans.add((kind, start, i - 1))
            start = None
        if prefix != "O" and (start is None or prefix in ("B", "S")):
            start, kind = i, typ
        prev = prefix
    return spans


def entity_scores(true_sequences: Sequence[Sequence[str]], predicted_sequences: Sequence[Sequence[str]]
                  ) -> dict[str, float]:
    """Micro-averaged entity precision, recall and F1 over all sentences (0 when undefined)."""
    correct = n_pred = n_true = 0
    for true, pred in zip(true_sequences, predicted_sequences):
        t, p = entities(true), entities(pred)
        correct += len(t & p)
        n_true += len(t)
        n_pred += len(p)
    precision = correct / n_pred if n_pred else 0.0
    recall = correct / n_true if n_true else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"entity_precision": precision, "entity_recall": recall, "entity_f1": f1}


def token_metrics(task: TaskSpec, predictions, labels) -> dict[str, float]:
    """Entity P/R/F1 and token accuracy of logits ``[N, T, C]`` (or tag ids ``[N, T]``) against labels
    ``[N, T]`` with -100 wherever there is no word start (padding included)."""
    predictions = np.asarray(predictions)
    labels = np.asarray(labels)
    if predictions.ndim == 3:
        predictions = predictions.argmax(axis=-1)
    if predictions.shape != labels.shape:
        raise ValueError(f"{task.name}: predictions {predictions.shape} and labels {labels.shape} differ")
    names = task.labels
    true_seqs, pred_seqs = [], []
    for p, y in zip(predictions, labels):
        keep = y != IGNORE
        true_seqs.append([names[int(i)] for i in y[keep]])
        pred_seqs.append([names[int(i)] if 0 <= int(i) < len(names) else "O" for i in p[keep]])
    scores = entity_scores(true_seqs, pred_seqs)
    total = sum(len(s) for s in true_seqs)
    scores["token_accuracy"] = (sum(a == b for t, q in zip(true_seqs, pred_seqs) for a, b in zip(t, q)) / total
                                if total else 0.0)
    return {name: float(scores[name]) for name in task.metrics}
