"""One-stage knowledge distillation of XTC (docs/method.md, "The loss").

    L = w_pred * L_pred + w_att * L_att + w_hid * L_hid   (+ optional w_label * task loss)

* L_pred: soft cross-entropy between teacher and student class distributions (temperature T),
  MSE for regression.
* L_att: per student layer i, MSE between the student's and teacher layer t_i's attention scores
  *before softmax* (masked positions count as 0 in both); summed over layers.
* L_hid: MSE between hidden states: embedding outputs, and student layer i vs teacher layer t_i;
  summed over the embedding and every layer.
* A sentence embedder (the embedding task) has no logits: L_emb takes L_pred's place and compares the
  pooled, normalised sentence embeddings, 1 - cosine by default (:func:`embedding_loss`), weighted by
  ``emb_weight``; optionally L_sim compares how the sentences of a batch relate, MSE between the two
  in-batch cosine-similarity matrices (:func:`similarity_loss`), weighted by ``sim_weight``.

transformers returns attention *probabilities*, so the scores are captured with an attention
function registered in transformers' attention interface (``xtc_kd``): it computes the same
attention as the eager path and hands the scaled ``QK^T`` to whoever is listening.

Averaging: ``"tokens"`` (default) averages each MSE over real positions only, so the loss does not
change with the amount of padding in a batch; ``"reference"`` averages over every position of the
padded batch, as DeepSpeed's reference does, for side-by-side runs.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, eager_mask

from .config import DistillConfig  # noqa: F401  (xtc.distill.DistillConfig)
from .data.batches import TEACHER_PREFIX
from .errors import ConfigError, UnsupportedModelError

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


def uses_attention_interface(model: nn.Module) -> bool:
    """Whether ``model`` computes attention through transformers' attention interface (in transformers
    5: BERT, RoBERTa, XLM-RoBERTa, ELECTRA, DistilBERT), so that ``xtc_kd`` sees its scores. MPNet and
    DeBERTa-v2 compute attention themselves; their scores are captured at the softmax instead
    (see :func:`_capture_at_softmax`)."""
    return bool(getattr(model, "_supports_attention_backend", False))


def enable_score_capture(model: nn.Module) -> None:
    """Route ``model``'s attention through the score-capturing function (same numbers as eager).

    A model that computes attention itself needs nothing: :func:`capture_attention_scores` hooks it."""
    if uses_attention_interface(model):
        model.set_attn_implementation(SCORE_CAPTURE_ATTENTION)


# --------------------------------------------------------------------------------------------------
# Families that compute attention themselves. MPNet adds its relative position bias inside its own
# attention module and DeBERTa-v2 computes disentangled (content<->position) attention; neither calls
# the attention interface, so xtc_kd never sees their scores, and no submodule sits between their
# score computation and the softmax where a forward hook could read them. What every such module does
# is call softmax once per forward, on the finished pre-softmax scores [batch, heads, q, k] (position
# terms and mask added). So for the duration of each attention module's forward (its forward hooks)
# a torch function mode is active that records the input of the first softmax: scoped to that
# forward and that thread, and nothing global is replaced. No per-family code: a new family that
# computes its scores and calls softmax works as is, and one that does not is reported (never silently
# left uncaptured). Masked positions hold the family's mask value (finfo.min) instead of the raw
# score; the attention loss excludes them either way.
# --------------------------------------------------------------------------------------------------
_SOFTMAXES = (F.softmax, torch.softmax, torch.Tensor.softmax)


class _FirstSoftmaxInput(TorchFunctionMode):
    """While active, appends the input of the first softmax call to ``sink``."""

    def __init__(self, sink: list):
        super().__init__()
        self.sink, self.done = sink, False

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if not self.done and func in _SOFTMAXES:
            self.done = True
            self.sink.append(args[0])
        return func(*args, **(kwargs or {}))


def _attention_modules(model: nn.Module) -> list[nn.Module]:
    """The innermost modules of each transformer block that know their head count (the self-attention)."""
    from .surgery import find_layers

    found = []
    for block in find_layers(model):
        heads = [m for m in block.modules() if hasattr(m, "num_attention_heads") or hasattr(m, "attention_head_size")]
        found += [m for m in heads if not any(c is not m and any(c is h for h in heads) for c in m.modules())]
    if not found:
        kind = getattr(getattr(model, "config", None), "model_type", type(model).__name__)
        raise UnsupportedModelError(f"cannot find the attention modules of a {kind!r} model to capture its attention "
                         "scores; distil it with att_weight=0 (no attention loss)")
    return found


@contextlib.contextmanager
def _capture_at_softmax(model: nn.Module, sink: list) -> Iterator[None]:
    def enter(module, args):
        mode = _FirstSoftmaxInput(sink)
        module.__dict__.setdefault("_xtc_modes", []).append(mode)
        mode.__enter__()

    def leave(module, args, output):
        mode = module.__dict__["_xtc_modes"].pop()
        mode.__exit__(None, None, None)
        if not mode.done:
            raise UnsupportedModelError(f"{type(module).__name__} ran without calling softmax, so its attention "
                                        "scores cannot be captured; distil with att_weight=0")

    handles = []
    for m in _attention_modules(model):
        handles.append(m.register_forward_pre_hook(enter))
        handles.append(m.register_forward_hook(leave, always_call=True))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def unwrap_model(model: nn.Module) -> nn.Module:
    """The transformers model inside DDP / FSDP / torch.compile wrappers (the model itself if unwrapped)."""
    while not hasattr(model, "config"):
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if inner is None:
            break
        model = inner
    return model


@contextlib.contextmanager
def capture_attention_scores(model: nn.Module) -> Iterator[list[torch.Tensor]]:
    """Within the block, every forward of ``model`` appends each layer's pre-softmax scores
    ``[batch, heads, q, k]`` (in layer order) to the yielded list.

    ``model`` may be wrapped (DistributedDataParallel, torch.compile, ...): the hooks go on the
    wrapped transformers model, found through ``.module`` / ``._orig_mod``."""
    model = unwrap_model(model)
    interface = uses_attention_interface(model)
    if interface and getattr(model.config, "_attn_implementation", None) != SCORE_CAPTURE_ATTENTION:
        enable_score_capture(model)
    sink: list[torch.Tensor] = []
    modules = [m for m in model.modules() if hasattr(m, "scaling") or hasattr(m, "attention_head_size")]
    for m in modules:
        m._xtc_sink = sink
    try:
        with contextlib.nullcontext() if interface else _capture_at_softmax(model, sink):
            yield sink
    finally:
        for m in modules:
            m._xtc_sink = None


def _masked_mse(s: torch.Tensor, t: torch.Tensor, weight: Optional[torch.Tensor]) -> torch.Tensor:
    """Mean of (s - t)^2 over the positions where ``weight`` (broadcastable, 0/1) is 1."""
    if weight is None:
        return F.mse_loss(s, t)
    # where, not a product: masked entries may hold a mask value (finfo.min) whose square overflows
    diff = torch.where(weight > 0, s - t, 0.0).pow(2)
    count = weight.expand_as(diff).sum()
    return diff.sum() / count.clamp(min=1)


def prediction_loss(student_logits, teacher_logits, temperature: float = 1.0, averaging: str = "tokens",
                    mask: Optional[torch.Tensor] = None):
    """Soft cross-entropy (classification, ``[B, C]``) or MSE (regression, ``[B, 1]``).

    Per-token logits ``[B, T, C]`` (token classification) with ``mask`` ``[B, T]`` (1 = a real token):
    the soft cross-entropy of every real token, averaged over the real tokens ("tokens"), or summed
    with padded tokens as zeros and divided by ``B x T x C`` ("reference").
    """
    if student_logits.shape[-1] == 1 and student_logits.dim() == 2:
        return F.mse_loss(student_logits.float(), teacher_logits.float())
    targets = F.softmax(teacher_logits / temperature, dim=-1)
    per_class = -targets * F.log_softmax(student_logits / temperature, dim=-1)
    if student_logits.dim() == 3 and mask is not None:
        real = mask.to(per_class.dtype)[..., None]  # [B, T, 1]
        total = torch.where(real > 0, per_class, 0.0).sum()
        return total / real.sum().clamp(min=1) if averaging == "tokens" else total / per_class.numel()
    # tokens: sum over classes, mean over batch (and positions); reference: mean over batch x classes
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
        elif pair is not None:  # reference: masked entries are zeros, averaged over the whole padded tensor
            total = total + F.mse_loss(torch.where(pair > 0, s, 0.0), torch.where(pair > 0, t, 0.0))
        else:
            total = total + F.mse_loss(s, t)
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


def label_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy (classes) or MSE (one output) against the gold labels, over labelled items only.

    Unlabelled items (augmented copies, whose targets come from the teacher alone) are marked -100
    for classes and NaN for regression by the collator; a batch with no label at all contributes 0."""
    if logits.dim() == 3:  # token classification: one label per token
        logits, labels = logits.flatten(0, 1), labels.flatten()
    if logits.shape[-1] == 1:
        logits, labels, loss = logits.squeeze(-1), labels.float(), F.mse_loss
        known = ~labels.isnan()
    else:
        known, loss = labels != -100, F.cross_entropy
    if not known.any():
        return logits.sum() * 0.0
    return loss(logits[known], labels[known])


def embedding_loss(student_embeddings: torch.Tensor, teacher_embeddings: torch.Tensor,
                   kind: str = "cosine") -> torch.Tensor:
    """``[B, H]`` sentence embeddings: mean of 1 - cosine similarity, or MSE ("mse")."""
    s, t = student_embeddings.float(), teacher_embeddings.float()
    if kind == "mse":
        return F.mse_loss(s, t)
    return (1 - F.cosine_similarity(s, t, dim=-1)).mean()


def similarity_loss(student_embeddings: torch.Tensor, teacher_embeddings: torch.Tensor) -> torch.Tensor:
    """``[B, H]`` sentence embeddings: MSE between the student's and the teacher's cosine similarities
    over the B*(B-1)/2 pairs of distinct sentences. STS and retrieval score these pairs, not how close
    each student vector lies to its teacher vector; 0 for a batch of one sentence."""
    s = F.normalize(student_embeddings.float(), dim=-1)
    t = F.normalize(teacher_embeddings.float(), dim=-1)
    i, j = torch.triu_indices(len(s), len(s), offset=1, device=s.device)
    if not len(i):
        return s.sum() * 0.0
    return F.mse_loss((s[i] * s[j]).sum(-1), (t[i] * t[j]).sum(-1))


def distillation_loss(student_out, teacher_out, student_scores, teacher_scores, attention_mask,
                      layer_map: Sequence[int], config: DistillConfig = DistillConfig(),
                      labels: Optional[torch.Tensor] = None, pooling=None) -> tuple[torch.Tensor, dict[str, float]]:
    """The total loss and its parts (as floats, for logging). ``pooling``: the models are sentence
    embedders (:class:`xtc.embedding.Pooling`); the prediction term compares their embeddings."""
    parts = {}
    total = student_out.last_hidden_state.new_zeros(()) if pooling else student_out.logits.new_zeros(())
    if pooling is not None:  # sentence embedders: their pooled embeddings (emb_weight) and their pairs (sim_weight)
        if config.emb_weight or config.sim_weight:
            from .embedding import pool

            mask = attention_mask if attention_mask is not None else torch.ones(student_out.last_hidden_state.shape[:2])
            student_emb = pool(student_out.last_hidden_state, mask, pooling)
            teacher_emb = pool(teacher_out.last_hidden_state, mask, pooling)
        if config.emb_weight:
            parts["emb"] = embedding_loss(student_emb, teacher_emb, config.embedding_loss)
            total = total + config.emb_weight * parts["emb"]
        if config.sim_weight:
            parts["sim"] = similarity_loss(student_emb, teacher_emb)
            total = total + config.sim_weight * parts["sim"]
    elif config.pred_weight:
        parts["pred"] = prediction_loss(student_out.logits, teacher_out.logits, config.temperature,
                                        config.averaging, mask=attention_mask)
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
        parts["label"] = label_loss(student_out.logits, labels)
        total = total + config.label_weight * parts["label"]
    return total, {k: float(v.detach()) for k, v in parts.items()}


class Distiller(nn.Module):
    """Runs the frozen teacher and the student on one batch and returns the KD loss.

    The teacher is put in eval mode, its parameters frozen, and it runs under ``torch.no_grad``.
    """

    def __init__(self, teacher: nn.Module, student: nn.Module, layer_map: Sequence[int],
                 config: DistillConfig = DistillConfig()):
        super().__init__()
        # a sentence embedder (the embedding task) records its pooling in its config: the prediction
        # term then compares pooled embeddings
        stored = getattr(unwrap_model(student).config, "xtc_pooling", None)
        if stored:
            from .embedding import Pooling

            self.pooling = Pooling.from_dict(dict(stored))
        else:
            self.pooling = None
        self.teacher, self.student = teacher.eval(), student
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        n_teacher = self.teacher.config.num_hidden_layers
        if max(layer_map) >= n_teacher:
            raise ConfigError(f"layer map {list(layer_map)} refers past the teacher's {n_teacher} layers")
        self.layer_map, self.config = list(layer_map), config
        self._n_teacher = n_teacher
        enable_score_capture(self.teacher)
        enable_score_capture(self.student)

    def forward(self, labels=None, **batch):
        # A teacher of another family brings its own tokenization (``teacher_*`` inputs): it and the
        # student see the same texts as different tokens, so only their predictions can be compared.
        n = len(TEACHER_PREFIX)
        teacher_batch = {k[n:]: v for k, v in batch.items() if k.startswith(TEACHER_PREFIX)}
        batch = {k: v for k, v in batch.items() if not k.startswith(TEACHER_PREFIX)}
        if teacher_batch and (self.config.att_weight or self.config.hid_weight):
            raise ConfigError("the teacher tokenizes differently from the student, so their attention scores and "
                              "hidden states do not pair up: distil with att_weight=0 and hid_weight=0")
        mask = batch.get("attention_mask")
        with torch.no_grad(), capture_attention_scores(self.teacher) as t_scores:
            t_out = self.teacher(**(teacher_batch or batch), output_hidden_states=True)
        with capture_attention_scores(self.student) as s_scores:
            s_out = self.student(**batch, output_hidden_states=True)
        if self.config.att_weight and (len(t_scores), len(s_scores)) != (self._n_teacher, len(self.layer_map)):
            raise UnsupportedModelError(f"captured attention scores of {len(t_scores)} teacher / {len(s_scores)} student "
                               f"layers, expected {self._n_teacher} / {len(self.layer_map)}: this model's "
                               "attention is not captured correctly; distil with att_weight=0")
        loss, parts = distillation_loss(s_out, t_out, s_scores, t_scores, mask, self.layer_map,
                                        self.config, labels, pooling=self.pooling)
        return loss, s_out, parts
