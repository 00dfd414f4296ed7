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


def make_collator(tokenizer, pad_to_multiple_of: int | None = None, max_length: int | None = None):
    """Batches padded to their longest item (dynamic padding); with ``max_length``, padded to exactly
    ``max_length`` instead (as the reference scripts do).

    Items whose ``labels`` are lists (token classification) get their labels padded with -100."""
    padding = dict(padding="longest") if max_length is None else dict(padding="max_length", max_length=max_length)
    sequence = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=pad_to_multiple_of, return_tensors="pt",
                                       **padding)
    tokens = DataCollatorForTokenClassification(tokenizer, pad_to_multiple_of=pad_to_multiple_of,
                                                return_tensors="pt", label_pad_token_id=-100, **padding)
    return _Collator(sequence, tokens)


class _Collator:
    """Pads a batch with ``sequence`` (one label per item), or ``tokens`` (a label per token)."""

    def __init__(self, sequence, tokens):
        self.sequence, self.tokens = sequence, tokens
        self.tokenizer = sequence.tokenizer

    def __call__(self, items: list[dict]):
        labelled = [item for item in items if "labels" in item]
        if labelled and len(labelled) < len(items):
            items = _mark_missing_labels(items, labelled[0]["labels"])
        per_token = bool(items) and isinstance(items[0].get("labels"), list)
        return (self.tokens if per_token else self.sequence)(items)


def _mark_missing_labels(items: list[dict], example_label) -> list[dict]:
    """Gives unlabelled items (augmented copies) a label that the label loss skips: -100 for classes
    (one per token for token classification), NaN for regression."""
    def missing(item):
        if isinstance(example_label, list):
            return [-100] * len(item["input_ids"])
        return float("nan") if isinstance(example_label, float) else -100
    return [item if "labels" in item else {**item, "labels": missing(item)} for item in items]
