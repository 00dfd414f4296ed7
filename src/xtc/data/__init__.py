"""Data: what a task is, where its examples come from, how they are batched and scored.

=============  ===============================================================================
``tasks``      :class:`TaskSpec` (labels, metrics, model class, dataset, scoring) and :class:`Example`
``glue``       the nine GLUE tasks, read from the original TSV files or the hub
``own``        your own CSV / TSV / JSON Lines files or a hub dataset (:func:`load_custom_task`)
``token``      token classification (NER): CoNLL / JSON Lines, entity F1 (:class:`TokenTaskSpec`)
``batches``    tokenized datasets and the dynamic-padding collator
``metrics``    the metrics, as sklearn/scipy compute them
``augment``    TinyBERT-style data augmentation (imported on use: it loads torch models)
=============  ===============================================================================
"""

from ..errors import DataError
from .batches import TokenizedDataset, make_collator
from .glue import (
           GLUE_TASKS,
           HUB_DATASET,
           compute_metrics,
           get_task,
           load_split,
           read_split,
           read_tsv,
           write_split,
)
from .metrics import pad_concat
from .own import load_custom_task, split_dev
from .tasks import Example, TaskSpec
from .token import TokenTaskSpec, load_token_task

__all__ = ["DataError", "Example", "GLUE_TASKS", "HUB_DATASET", "TaskSpec", "TokenTaskSpec", "TokenizedDataset",
           "compute_metrics", "get_task", "load_custom_task", "load_split", "load_token_task", "make_collator",
           "pad_concat", "read_split", "read_tsv", "split_dev", "write_split"]
