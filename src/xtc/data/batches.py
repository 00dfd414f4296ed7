"""Tokenized datasets and the dynamic-padding collator."""

from __future__ import annotations

from typing import Sequence

import torch
from transformers import DataCollatorForTokenClassification, DataCollatorWithPadding

from ..errors import DataError


class TokenizedDataset(torch.utils.data.Dataset):
    """Examples tokenized once (truncated to ``max_length``, unpadded: the collator pads per batch).

    Items are dicts of ``input_ids``, ``attention_mask``, ``token_type_ids`` (if the tokenizer makes
    them) and ``labels`` (int, or float for regression; absent for unlabeled examples).
    ``lengths`` holds each item's token count, for length-grouped sampling.
    """

    def __init__(self, examples: Sequence, tokenizer, max_length: int = 128):
        self.examples = list(examples)
        pairs = [e.text_b is not None for e in self.examples]
        if any(pairs) and not all(pairs):
            raise DataError("examples mix single sentences and sentence pairs; one task has one kind")
        text_a = [e.text_a for e in self.examples]
        text_b = [e.text_b for e in self.examples] if any(pairs) else None
        # explicit padding=False: tokenizer.json files may carry a saved padding setting
        encodings = tokenizer(text_a, text_b, truncation=True, max_length=max_length, padding=False)
        self.encodings = dict(encodings)
        self.lengths = [len(ids) for ids in self.encodings["input_ids"]]

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict:
        item = {key: values[i] for key, values in self.encodings.items()}
        label = self.examples[i].label
        if label is not None:
            item["labels"] = float(label) if isinstance(label, float) else int(label)
        return item


def same_length_batches(input_ids: Sequence[Sequence[int]], batch_size: int) -> list[list[int]]:
    """Indices of ``input_ids`` in batches of at most ``batch_size`` items of the same token length, so
    that inference never pads: an item's result does not depend on the batch size or its neighbours."""
    by_length: dict[int, list[int]] = {}
    for k, ids in enumerate(input_ids):
        by_length.setdefault(len(ids), []).append(k)
    return [same[start:start + batch_size] for same in by_length.values() for start in range(0, len(same), batch_size)]


TEACHER_PREFIX = "teacher_"  # the teacher's own inputs, when it tokenizes differently from the student


class WithTeacherInputs(torch.utils.data.Dataset):
    """``student`` items plus the same examples as the teacher tokenizes them (keys ``teacher_*``),
    for distillation from a teacher of another family whose tokenizer differs."""

    def __init__(self, student: TokenizedDataset, teacher: TokenizedDataset):
        if len(student) != len(teacher):
            raise DataError(f"{len(student)} student items but {len(teacher)} teacher items")
        self.student, self.teacher = student, teacher
        self.lengths = student.lengths

    def __len__(self) -> int:
        return len(self.student)

    def __getitem__(self, i: int) -> dict:
        extra = {TEACHER_PREFIX + k: v for k, v in self.teacher[i].items() if k != "labels"}
        return {**self.student[i], **extra}


def make_collator(tokenizer, pad_to_multiple_of: int | None = None, max_length: int | None = None,
                  teacher_tokenizer=None):
    """Batches padded to their longest item (dynamic padding); with ``max_length``, padded to exactly
    ``max_length`` instead (as the reference scripts do).

    Items whose ``labels`` are lists (token classification) get their labels padded with -100. With
    ``teacher_tokenizer``, the items' ``teacher_*`` inputs are padded by it, apart from the student's."""
    padding = dict(padding="longest") if max_length is None else dict(padding="max_length", max_length=max_length)
    sequence = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=pad_to_multiple_of, return_tensors="pt",
                                       **padding)
    tokens = DataCollatorForTokenClassification(tokenizer, pad_to_multiple_of=pad_to_multiple_of,
                                                return_tensors="pt", label_pad_token_id=-100, **padding)
    teacher = (DataCollatorWithPadding(teacher_tokenizer, pad_to_multiple_of=pad_to_multiple_of, return_tensors="pt",
                                       **padding) if teacher_tokenizer is not None else None)
    return _Collator(sequence, tokens, teacher)


class _Collator:
    """Pads a batch with ``sequence`` (one label per item), or ``tokens`` (a label per token); the
    teacher's own inputs (``teacher_*``), if any, with ``teacher``."""

    def __init__(self, sequence, tokens, teacher=None):
        self.sequence, self.tokens, self.teacher = sequence, tokens, teacher
        self.tokenizer = sequence.tokenizer

    def __call__(self, items: list[dict]):
        teacher_items = None
        if self.teacher is not None and items and any(k.startswith(TEACHER_PREFIX) for k in items[0]):
            n = len(TEACHER_PREFIX)
            teacher_items = [{k[n:]: v for k, v in item.items() if k.startswith(TEACHER_PREFIX)} for item in items]
            items = [{k: v for k, v in item.items() if not k.startswith(TEACHER_PREFIX)} for item in items]
        labelled = [item for item in items if "labels" in item]
        if labelled and len(labelled) < len(items):
            items = _mark_missing_labels(items, labelled[0]["labels"])
        per_token = bool(items) and isinstance(items[0].get("labels"), list)
        batch = (self.tokens if per_token else self.sequence)(items)
        if teacher_items is not None:
            batch.update({TEACHER_PREFIX + k: v for k, v in self.teacher(teacher_items).items()})
        return batch


def _mark_missing_labels(items: list[dict], example_label) -> list[dict]:
    """Gives unlabelled items (augmented copies) a label that the label loss skips: -100 for classes
    (one per token for token classification), NaN for regression."""
    def missing(item):
        if isinstance(example_label, list):
            return [-100] * len(item["input_ids"])
        return float("nan") if isinstance(example_label, float) else -100
    return [item if "labels" in item else {**item, "labels": missing(item)} for item in items]
