"""What a task is to xtc: a :class:`TaskSpec` knows its labels and metrics, the transformers class
of its model, how to tokenize its examples and how to score predictions. Sequence tasks (GLUE, your
own CSV/JSON Lines files) use :class:`TaskSpec` itself; token tasks (NER) subclass it
(:class:`xtc.data.token.TokenTaskSpec`). The rest of xtc calls these methods and never asks which
kind a task is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Sequence


@dataclass(frozen=True)
class TaskSpec:
    name: str  # hub config name: "mrpc", "stsb", ...
    dir_name: str  # folder in the GLUE layout: "MRPC", "STS-B", ...
    labels: tuple[str, ...] | None  # label strings as in the TSVs, in hub ClassLabel order; None = regression
    metrics: tuple[str, ...]  # keys of compute_metrics
    main_metric: str  # the task's headline metric
    dev_splits: tuple[str, ...]  # splits evaluated during training
    # metrics whose mean picks the best checkpoint (default: the main metric). MRPC and QQP use F1 and
    # accuracy together: on F1 alone a model that answers "paraphrase" to everything (F1 81 on MRPC) can
    # win over one that learnt something.
    best_by: tuple[str, ...] = ()
    fine_tunes_teacher: ClassVar[bool] = True  # compress fine-tunes the model on the task to make the teacher
    can_hold_out: ClassVar[bool] = True  # part of the training set can choose the checkpoint (labelled data)

    @property
    def selection_metrics(self) -> tuple[str, ...]:
        return self.best_by or (self.main_metric,)

    @property
    def num_labels(self) -> int:
        return 1 if self.labels is None else len(self.labels)

    @property
    def is_regression(self) -> bool:
        return self.labels is None

    # --- the interface the pipeline uses --------------------------------------------------------
    def model_class(self):
        """The transformers auto class of this task's model."""
        from transformers import AutoModelForSequenceClassification

        return AutoModelForSequenceClassification

    def dataset(self, examples: Sequence, tokenizer, max_length: int):
        """``examples`` tokenized for training or evaluation."""
        from .batches import TokenizedDataset

        return TokenizedDataset(examples, tokenizer, max_length)

    def compute(self, predictions, labels) -> dict[str, float]:
        """``self.metrics`` of ``predictions`` against ``labels`` (fractions)."""
        from .metrics import sequence_metrics

        return sequence_metrics(self, predictions, labels)

    def evaluator(self, tokenizer):
        """None: the model's logits on the dev set are scored with :meth:`compute`. A task scored
        another way (sentence embeddings) returns ``fn(model, dev_set) -> metrics``."""
        return None


@dataclass
class Example:
    text_a: str
    text_b: str | None
    label: int | float | None  # index into TaskSpec.labels, float for stsb, None if unlabeled
