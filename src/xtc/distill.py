"""One-stage knowledge distillation of XTC (XTC-METHOD.md section 4).

    L = w_pred * L_pred + w_att * L_att + w_hid * L_hid   (+ optional w_label * task loss)

* L_pred: soft cross-entropy between teacher and student class distributions (temperature T),
  MSE for regression.
* L_att: per student layer i, MSE between the student's and teacher layer t_i's attention scores
  *before softmax* (masked positions count as 0 in both); summed over layers.
* L_hid: MSE between hidden states: embedding outputs, and student layer i vs teacher layer t_i;
  summed over the embedding and every layer.

transformers returns attention *probabilities*, so the scores are captured with an attention
function registered in transformers' attention interface (``xtc_kd``): it computes the same
attention as the eager path and hands the scaled ``QK^T`` to whoever is listening.

Averaging: ``"tokens"`` (default) averages each MSE over real positions only, so the loss does not
change with the amount of padding in a batch; ``"reference"`` averages over every position of the
padded batch, as DeepSpeed's reference does, for side-by-side runs.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, eager_mask

SCORE_CAPTURE_ATTENTION = "xtc_kd"


def _score_capturing_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Eager attention that also records the pre-softmax scores on ``module._xtc_sink``."""
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    if key.shape[1] != query.shape[1]:  # grouped-query attention: repeat key/value heads
        rep = query.shape[1] // key.shape[1]
        key, value = key.repeat_interleave(rep, dim=1), value.repeat_interleave(rep, dim=1)
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    sink = getattr(module, "_xtc_sink", None)
    if sink is not None:
        sink.append(scores)
    weights = scores
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            weights = weights.masked_fill(~attention_mask, torch.finfo(weights.dtype).min)
        else:
            weights = weights + attention_mask[..., : key.shape[-2]]
    weights = F.softmax(weights, dim=-1)
    weights = F.dropout(weights, p=dropout, training=module.training)
    out = torch.matmul(weights, value).transpose(1, 2).contiguous()
    return out, weights


AttentionInterface.register(SCORE_CAPTURE_ATTENTION, _score_capturing_attention)
ALL_MASK_ATTENTION_FUNCTIONS.register(SCORE_CAPTURE_ATTENTION, eager_mask)


def enable_score_capture(model: nn.Module) -> None:
    """Route ``model``'s attention through the score-capturing function (same numbers as eager)."""
    model.set_attn_implementation(SCORE_CAPTURE_ATTENTION)


@contextlib.contextmanager
def capture_attention_scores(model: nn.Module) -> Iterator[list[torch.Tensor]]:
    """Within the block, every forward of ``model`` appends each layer's pre-softmax scores
    ``[batch, heads, q, k]`` (in layer order) to the yielded list."""
    if getattr(model.config, "_attn_implementation", None) != SCORE_CAPTURE_ATTENTION:
        enable_score_capture(model)
    sink: list[torch.Tensor] = []
    modules = [m for m in model.modules() if hasattr(m, "scaling") or hasattr(m, "attention_head_size")]
    for m in modules:
        m._xtc_sink = sink
    try:
        yield sink
    finally:
        for m in modules:
            m._xtc_sink = None


@dataclass(frozen=True)
class DistillConfig:
    """Weights and options of the KD loss; defaults are XTC's."""

    pred_weight: float = 1.0
    att_weight: float = 1.0
    hid_weight: float = 1.0
    label_weight: float = 0.0  # training on labels (cross-entropy / MSE): off by default
    temperature: float = 1.0
    averaging: str = "tokens"  # or "reference"

    def __post_init__(self):
        if self.averaging not in ("tokens", "reference"):
            raise ValueError(f"averaging must be 'tokens' or 'reference', got {self.averaging!r}")


def _masked_mse(s: torch.Tensor, t: torch.Tensor, weight: Optional[torch.Tensor]) -> torch.Tensor:
    """Mean of (s - t)^2 over the positions where ``weight`` (broadcastable, 0/1) is 1."""
    if weight is None:
        return F.mse_loss(s, t)
    diff = (s - t).pow(2) * weight
    count = weight.expand_as(diff).sum()
    return diff.sum() / count.clamp(min=1)


def prediction_loss(student_logits, teacher_logits, temperature: float = 1.0, averaging: str = "tokens"):
    """Soft cross-entropy (classification, ``[B, C]``) or MSE (regression, ``[B, 1]``)."""
    if student_logits.shape[-1] == 1:
        return F.mse_loss(student_logits.float(), teacher_logits.float())
    targets = F.softmax(teacher_logits / temperature, dim=-1)
    per_class = -targets * F.log_softmax(student_logits / temperature, dim=-1)
    # tokens: sum over classes, mean over batch; reference: mean over batch x classes
    return per_class.sum(-1).mean() if averaging == "tokens" else per_class.mean()


def attention_loss(student_scores: Sequence[torch.Tensor], teacher_scores: Sequence[torch.Tensor],
                   layer_map: Sequence[int], attention_mask: Optional[torch.Tensor],
                   averaging: str = "tokens") -> torch.Tensor:
    """Sum over student layers of MSE(pre-softmax scores), masked positions 0 in both."""
    pair = None
    if attention_mask is not None:
        m = attention_mask.to(student_scores[0].dtype)
        pair = m[:, None, :, None] * m[:, None, None, :]  # [B, 1, q, k]
    total = student_scores[0].new_zeros(())
    for i, t_i in enumerate(layer_map):
        s, t = student_scores[i], teacher_scores[t_i]
        if averaging == "tokens":
            total = total + _masked_mse(s, t, pair)
        else:  # reference: masked entries are zeros, averaged over the whole padded tensor
            total = total + (F.mse_loss(s * pair, t * pair) if pair is not None else F.mse_loss(s, t))
    return total


def hidden_loss(student_hidden: Sequence[torch.Tensor], teacher_hidden: Sequence[torch.Tensor],
                layer_map: Sequence[int], attention_mask: Optional[torch.Tensor],
                averaging: str = "tokens") -> torch.Tensor:
    """Sum of MSE(hidden) over the embedding output and each student layer vs teacher layer t_i.

    ``*_hidden`` are transformers' ``hidden_states``: index 0 the embeddings, index i+1 layer i.
    """
    weight = None
    if attention_mask is not None and averaging == "tokens":
        weight = attention_mask.to(student_hidden[0].dtype)[:, :, None]
    pairs = [(0, 0)] + [(i + 1, t_i + 1) for i, t_i in enumerate(layer_map)]
    total = student_hidden[0].new_zeros(())
    for s_i, t_i in pairs:
        total = total + _masked_mse(student_hidden[s_i], teacher_hidden[t_i], weight)
    return total


def distillation_loss(student_out, teacher_out, student_scores, teacher_scores, attention_mask,
                      layer_map: Sequence[int], config: DistillConfig = DistillConfig(),
                      labels: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, dict[str, float]]:
    """The total loss and its parts (as floats, for logging)."""
    parts = {}
    total = student_out.logits.new_zeros(())
    if config.pred_weight:
        parts["pred"] = prediction_loss(student_out.logits, teacher_out.logits, config.temperature,
                                        config.averaging)
        total = total + config.pred_weight * parts["pred"]
    if config.att_weight:
        parts["att"] = attention_loss(student_scores, teacher_scores, layer_map, attention_mask,
                                      config.averaging)
        total = total + config.att_weight * parts["att"]
    if config.hid_weight:
        parts["hid"] = hidden_loss(student_out.hidden_states, teacher_out.hidden_states, layer_map,
                                   attention_mask, config.averaging)
        total = total + config.hid_weight * parts["hid"]
    if config.label_weight and labels is not None:
        logits = student_out.logits
        parts["label"] = (F.mse_loss(logits.squeeze(-1), labels.float()) if logits.shape[-1] == 1
                          else F.cross_entropy(logits, labels))
        total = total + config.label_weight * parts["label"]
    return total, {k: float(v.detach()) for k, v in parts.items()}


class Distiller(nn.Module):
    """Runs the frozen teacher and the student on one batch and returns the KD loss.

    The teacher is put in eval mode, its parameters frozen, and it runs under ``torch.no_grad``.
    """

    def __init__(self, teacher: nn.Module, student: nn.Module, layer_map: Sequence[int],
                 config: DistillConfig = DistillConfig()):
        super().__init__()
        self.teacher, self.student = teacher.eval(), student
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        n_teacher = self.teacher.config.num_hidden_layers
        if max(layer_map) >= n_teacher:
            raise ValueError(f"layer map {list(layer_map)} refers past the teacher's {n_teacher} layers")
        self.layer_map, self.config = list(layer_map), config
        enable_score_capture(self.teacher)
        enable_score_capture(self.student)

    def forward(self, labels=None, **batch):
        mask = batch.get("attention_mask")
        with torch.no_grad(), capture_attention_scores(self.teacher) as t_scores:
            t_out = self.teacher(**batch, output_hidden_states=True)
        with capture_attention_scores(self.student) as s_scores:
            s_out = self.student(**batch, output_hidden_states=True)
        loss, parts = distillation_loss(s_out, t_out, s_scores, t_scores, mask, self.layer_map,
                                        self.config, labels)
        return loss, s_out, parts
