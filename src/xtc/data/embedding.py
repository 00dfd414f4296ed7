"""The embedding task: compress a sentence embedder with no labels at all.

* Teacher: the sentence-transformers model itself (no fine-tuning), pooled as its files say
  (:func:`xtc.embedding.read_pooling`).
* Training data: unlabeled sentences, one per line of any text file; by default the sentences of
  the GLUE training sets at hand (STS-B, MRPC, RTE, CoLA: both sentences of a pair, deduplicated).
  The student learns the teacher's hidden states, pre-softmax attention scores and pooled,
  normalised embedding (:func:`xtc.distillation.embedding_loss`).
* Evaluation, as sentence-transformers users read it: STS-B dev, Spearman correlation of the cosine
  similarity of the two sentences' embeddings with the gold scores (no training on STS-B labels);
  and retrieval on MRPC dev: each pair labelled paraphrase asks for its second sentence among all
  distinct second sentences of the dev set, ranked by cosine (recall@1 and mean reciprocal rank).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Optional, Sequence

import numpy as np

from ..errors import ConfigError, DataError
from .tasks import Example, TaskSpec

EMBEDDING = "embedding"
EMBEDDING_METRICS = ("stsb_spearman", "recall_at_1", "mrr")
CORPUS_TASKS = ("stsb", "mrpc", "rte", "cola")  # the default training sentences: these GLUE train sets


@dataclass
class EmbeddingDevSet:
    """The evaluation sentences: STS-B dev pairs with gold scores, MRPC dev pairs with labels."""

    stsb: list[Example]
    mrpc: list[Example]
    max_length: int = 128

    def __len__(self) -> int:
        return len(self.stsb) + len(self.mrpc)


@dataclass(frozen=True)
class EmbeddingTaskSpec(TaskSpec):
    """Sentence embedding: the model is the bare encoder, its output the pooled token states."""

    pooling: object = None  # xtc.embedding.Pooling
    fine_tunes_teacher: ClassVar[bool] = False  # the teacher is the pre-trained embedder itself
    can_hold_out: ClassVar[bool] = False  # unlabeled sentences cannot choose a checkpoint

    def model_class(self):
        from ..embedding import Pooling, SentenceEncoder

        return SentenceEncoder(self.pooling or Pooling())

    def dataset(self, examples, tokenizer, max_length: int):
        if isinstance(examples, EmbeddingDevSet):
            examples.max_length = max_length
            return examples
        from .batches import TokenizedDataset

        return TokenizedDataset(examples, tokenizer, max_length)

    def evaluator(self, tokenizer):
        """``fn(model, dev_set) -> metrics``: how this task scores a model (no logits involved)."""
        return lambda model, dev: embedding_metrics(model, tokenizer, dev, self.pooling)

    def compute(self, predictions, labels):
        raise DataError("the embedding task is scored from sentence embeddings (embedding_metrics), not logits")


def embedding_task(pooling=None) -> EmbeddingTaskSpec:
    return EmbeddingTaskSpec(EMBEDDING, EMBEDDING, None, EMBEDDING_METRICS, "stsb_spearman", ("dev",),
                             pooling=pooling)


def read_sentences(path: str | Path) -> list[str]:
    """Non-blank lines of a UTF-8 text file, one sentence per line (tabs split a line into sentences)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} not found; give a text file with one sentence per line")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not valid UTF-8 ({err.reason}); re-save the file as UTF-8") from None
    sentences = [s.strip() for line in text.splitlines() for s in line.split("\t") if s.strip()]
    if not sentences:
        raise DataError(f"{path}: no sentences (one per line)")
    return sentences


def default_corpus(glue_dir: Optional[str], tasks: Sequence[str] = CORPUS_TASKS) -> list[str]:
    """The distinct sentences of the training sets of ``tasks`` (default :data:`CORPUS_TASKS`; no labels
    used), in the order of the tasks."""
    from .glue import load_split

    seen: dict[str, None] = {}
    for name in tasks:
        for e in load_split(name, "train", glue_dir):
            for s in (e.text_a, e.text_b):
                if s and s.strip():
                    seen.setdefault(s.strip(), None)
    return list(seen)


def dev_set(glue_dir: Optional[str]) -> EmbeddingDevSet:
    from .glue import load_split

    return EmbeddingDevSet(load_split("stsb", "dev", glue_dir), load_split("mrpc", "dev", glue_dir))


def load_embedding_task(model: str, train_file: Optional[str] = None, glue_dir: Optional[str] = None,
                        pooling=None) -> tuple[EmbeddingTaskSpec, list[Example], dict[str, EmbeddingDevSet]]:
    """``(task, train_examples, {"dev": dev_set})`` for compressing the embedder ``model``: pass it as
    ``data=`` to :func:`xtc.compress` / :func:`xtc.distill`. ``train_file``: a text file with one
    sentence per line (default: :func:`default_corpus`); ``pooling``: as the model's files say."""
    from ..embedding import read_pooling

    sentences = read_sentences(train_file) if train_file else default_corpus(glue_dir)
    task = embedding_task(pooling or read_pooling(model))
    return task, [Example(s, None, None) for s in sentences], {"dev": dev_set(glue_dir)}


# ---------------------------------------------------------------------------------------------------
# Metrics


def spearman(similarities: Sequence[float], gold: Sequence[float]) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(similarities, gold).statistic)


def retrieval(queries: np.ndarray, candidates: np.ndarray, targets: Sequence[int]) -> dict[str, float]:
    """Recall@1 and MRR of ``targets[i]`` (an index into ``candidates``) for query ``i``, by cosine
    (the vectors are normalised here; ties count against the target)."""
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True).clip(1e-12)
    c = candidates / np.linalg.norm(candidates, axis=1, keepdims=True).clip(1e-12)
    scores = q @ c.T
    own = scores[np.arange(len(targets)), targets]
    ranks = (scores >= own[:, None]).sum(axis=1)  # 1 = the target is the most similar
    return {"recall_at_1": float((ranks == 1).mean()), "mrr": float((1.0 / ranks).mean())}


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)).clip(1e-12)


def embedding_metrics(model, tokenizer, dev: EmbeddingDevSet, pooling=None, batch_size: int = 64
                      ) -> dict[str, float]:
    """STS-B Spearman (fraction, -1..1), MRPC retrieval recall@1 and MRR of ``model``'s embeddings."""
    from ..embedding import encode

    if not isinstance(dev, EmbeddingDevSet):
        raise ConfigError("the embedding task is evaluated on its own dev set (STS-B and MRPC dev pairs)")
    sts = dev.stsb
    emb = encode(model, tokenizer, [e.text_a for e in sts] + [e.text_b for e in sts], batch_size,
                 dev.max_length, pooling)
    n = len(sts)
    out = {"stsb_spearman": spearman(cosine(emb[:n], emb[n:]), [e.label for e in sts])}
    # each paraphrase pair's first sentence asks for its second among the distinct second sentences
    # (a few repeat in MRPC dev; a repeated copy would tie with the target and count against it)
    positive = [e for e in dev.mrpc if e.label == 1]
    candidates = list(dict.fromkeys(e.text_b for e in dev.mrpc))
    index = {text: i for i, text in enumerate(candidates)}
    emb = encode(model, tokenizer, [e.text_a for e in positive] + candidates, batch_size, dev.max_length, pooling)
    out.update(retrieval(emb[:len(positive)], emb[len(positive):], [index[e.text_b] for e in positive]))
    return out


__all__ = ["CORPUS_TASKS", "EMBEDDING", "EmbeddingDevSet", "EmbeddingTaskSpec", "default_corpus", "dev_set",
           "embedding_metrics", "embedding_task", "load_embedding_task", "read_sentences", "retrieval",
           "spearman"]
