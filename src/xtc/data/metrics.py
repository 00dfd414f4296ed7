"""Scores of predictions: the GLUE metrics (accuracy, F1, MCC, Pearson/Spearman) exactly as
sklearn/scipy compute them, and the padding of per-token outputs of different lengths."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef


def sequence_metrics(task, predictions, labels) -> dict[str, float]:
    """``task.metrics`` of ``predictions`` (logits ``[N, C]`` or class ids ``[N]``; ``[N]``/``[N, 1]``
    scores for regression) against ``labels``, as fractions exactly as sklearn/scipy compute them."""
    predictions = np.asarray(predictions)
    labels = np.asarray(labels)
    if task.is_regression:
        predictions = predictions.reshape(len(predictions), -1)
        if predictions.shape[1] != 1:
            raise ValueError(f"{task.name} is a regression task: expected predictions [N] or [N, 1], "
                             f"got {tuple(np.shape(predictions))}")
        predictions = predictions[:, 0].astype(np.float64)
        labels = labels.astype(np.float64)
    elif predictions.ndim == 2:
        predictions = predictions.argmax(axis=-1)
    if predictions.shape != labels.shape:
        raise ValueError(f"{task.name}: {predictions.shape[0]} predictions for {labels.shape[0]} labels")
    funcs = {
        "accuracy": lambda: accuracy_score(labels, predictions),
        # zero_division=0.0: no positive prediction gives f1 0 without a warning
        "f1": lambda: f1_score(labels, predictions, zero_division=0.0),
        "macro_f1": lambda: f1_score(labels, predictions, average="macro", zero_division=0.0),
        "mcc": lambda: matthews_corrcoef(labels, predictions),
        "pearson": lambda: _correlation(pearsonr, predictions, labels),
        "spearmanr": lambda: _correlation(spearmanr, predictions, labels),
    }
    return {name: float(funcs[name]()) for name in task.metrics}


def _correlation(fn, predictions: np.ndarray, labels: np.ndarray) -> float:
    # A correlation is undefined (nan) when either side is constant, which happens early in training or
    # when a heavily quantized regressor collapses. Report 0.0 ("no linear relation") instead: nan would
    # compare False with everything and break best-checkpoint selection.
    if np.ptp(predictions) == 0 or np.ptp(labels) == 0:
        return 0.0
    return float(fn(predictions, labels)[0])


def pad_concat(arrays: Sequence[np.ndarray], pad) -> np.ndarray:
    """Concatenate ``[n_i, T_i, ...]`` arrays along the first axis, padding the second to the longest."""
    arrays = [np.asarray(a) for a in arrays]
    if len({a.shape[1:] for a in arrays}) <= 1:
        return np.concatenate(arrays)
    width = max(a.shape[1] for a in arrays)
    padded = [np.pad(a, [(0, 0), (0, width - a.shape[1])] + [(0, 0)] * (a.ndim - 2), constant_values=pad)
              for a in arrays]
    return np.concatenate(padded)
