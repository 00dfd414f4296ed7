"""Sentence embeddings: how a sentence-transformers model turns token states into one vector, and
encoding sentences with any model xtc trains or loads (the training model or a packed one).

A sentence-transformers folder says how it pools in ``modules.json`` (the list of modules: the
transformer, a ``Pooling``, usually a ``Normalize``) and ``1_Pooling/config.json`` (mean, CLS or max
over the token states). :func:`read_pooling` reads them; a model xtc compresses for embeddings keeps
the result in its config (``xtc_pooling``), so the student folder, the packed file and ``xtc embed``
pool exactly as the teacher did without the sentence-transformers files.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, Sequence

from .errors import ConfigError, InputError

POOLING_MODES = ("mean", "cls", "max")
CONFIG_KEY = "xtc_pooling"  # where a model's config keeps its pooling


@dataclass(frozen=True)
class Pooling:
    """``mode``: mean (over real tokens), cls (the first token) or max; ``normalize``: unit length."""

    mode: str = "mean"
    normalize: bool = True

    def __post_init__(self):
        if self.mode not in POOLING_MODES:
            raise ConfigError(f"pooling mode must be one of {', '.join(POOLING_MODES)}, got {self.mode!r}")
        if not isinstance(self.normalize, bool):
            raise ConfigError(f"pooling normalize must be true or false, got {self.normalize!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Pooling:
        if not isinstance(d, dict) or set(d) - {"mode", "normalize"}:
            raise ConfigError(f"pooling must be a mapping with mode and normalize, got {d!r}")
        return cls(**d)


def _read_json(name_or_path: str, filename: str) -> Optional[object]:
    """A JSON file of a local folder or (for hub names) of the hub repository; None if absent."""
    path = Path(name_or_path).expanduser()
    file = path / filename
    if path.is_dir():
        if not file.is_file():
            return None
    else:
        try:
            from huggingface_hub import hf_hub_download

            file = Path(hf_hub_download(str(name_or_path), filename))
        except Exception:  # noqa: BLE001  (not on the hub, offline, no such file: no pooling files)
            return None
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise InputError(f"{file} is not valid JSON ({e}); repair or delete it") from None


def read_pooling(name_or_path: str) -> Pooling:
    """The pooling of a model: its config's ``xtc_pooling`` (a model xtc trained), else the
    sentence-transformers files (``modules.json``, ``1_Pooling/config.json``), else mean pooling and
    normalisation (what all-MiniLM-L6-v2 and all-mpnet-base-v2 use), with a warning."""
    config = _read_json(name_or_path, "config.json")
    if isinstance(config, dict) and isinstance(config.get(CONFIG_KEY), dict):
        return Pooling.from_dict(config[CONFIG_KEY])
    modules = _read_json(name_or_path, "modules.json")
    if not isinstance(modules, list):
        logging.getLogger("xtc").warning("%s has no sentence-transformers modules.json: pooling by the mean of the "
                                         "token states, then normalising (as all-MiniLM-L6-v2 does)", name_or_path)
        return Pooling()
    types = [str(m.get("type", "")) for m in modules if isinstance(m, dict)]
    normalize = any(t.endswith(".Normalize") for t in types)
    pooling_dir = next((m.get("path") for m in modules if isinstance(m, dict)
                        and str(m.get("type", "")).endswith(".Pooling")), None)
    if pooling_dir is None:
        raise InputError(f"{name_or_path}: modules.json has no Pooling module; xtc embeds with mean, CLS or max "
                         "pooling of the transformer's token states")
    settings = _read_json(name_or_path, f"{pooling_dir}/config.json") or {}
    chosen = [mode for mode, key in (("mean", "pooling_mode_mean_tokens"), ("cls", "pooling_mode_cls_token"),
                                     ("max", "pooling_mode_max_tokens")) if settings.get(key)]
    if len(chosen) != 1 or any(settings.get(k) for k in ("pooling_mode_mean_sqrt_len_tokens",
                                                         "pooling_mode_weightedmean_tokens",
                                                         "pooling_mode_lasttoken")):
        raise InputError(f"{name_or_path}: {pooling_dir}/config.json asks for pooling xtc does not do ({settings}); "
                         "xtc embeds with exactly one of mean, CLS or max pooling")
    return Pooling(chosen[0], normalize)


def model_pooling(model) -> Pooling:
    """The pooling recorded in ``model``'s config (a model loaded for the embedding task)."""
    stored = getattr(getattr(model, "config", None), CONFIG_KEY, None)
    if not stored:
        raise InputError("this model is not a sentence embedder (its config records no pooling): it was not "
                         "compressed with the embedding task; use xtc predict / the classifier's logits instead")
    return Pooling.from_dict(dict(stored))


def pool(token_states, attention_mask, pooling: Pooling):
    """``[B, T, H]`` token states to ``[B, H]`` sentence embeddings (padding excluded)."""
    import torch
    import torch.nn.functional as F

    mask = attention_mask.to(token_states.dtype)[..., None]
    if pooling.mode == "mean":
        out = (token_states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    elif pooling.mode == "cls":
        out = token_states[:, 0]
    else:
        out = torch.where(mask > 0, token_states, torch.finfo(token_states.dtype).min).amax(1)
    return F.normalize(out, p=2, dim=-1) if pooling.normalize else out


def encode(model, tokenizer, sentences: Sequence[str], batch_size: int = 32, max_length: int = 128,
           pooling: Optional[Pooling] = None):
    """Embeddings ``[N, H]`` (float32 numpy) of ``sentences``, pooled as ``model``'s config records.

    Sentences are batched with others of the same token length, so none is ever padded: a
    sentence's vector does not depend on the batch size or on its neighbours."""
    import numpy as np
    import torch

    pooling = pooling or model_pooling(model)
    if batch_size < 1:
        raise InputError(f"batch size must be at least 1, got {batch_size}")
    from .data.batches import same_length_batches

    enc = tokenizer(list(sentences), truncation=True, max_length=max_length, padding=False)
    hidden = getattr(model.config, "hidden_size", None) or model.config.dim
    out = np.zeros((len(sentences), hidden), dtype=np.float32)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for chunk in same_length_batches(enc["input_ids"], batch_size):
                batch = {key: torch.tensor([enc[key][k] for k in chunk]) for key in enc.keys()}
                states = model(**batch).last_hidden_state.float()
                out[chunk] = pool(states, batch["attention_mask"], pooling).numpy()
    finally:
        model.train(was_training)
    return out


class SentenceEncoder:
    """What the embedding task loads a model as: the transformers encoder (``AutoModel``) without
    its pooler layer (sentence embeddings pool the token states; the pooler would only add bytes
    to the file), with the pooling recorded in its config."""

    def __init__(self, pooling: Pooling):
        self.pooling = pooling

    def _finish(self, model):
        if getattr(model, "pooler", None) is not None:
            model.pooler = None
        setattr(model.config, CONFIG_KEY, self.pooling.to_dict())
        return model

    def from_pretrained(self, path, **kwargs):
        from transformers import AutoModel

        try:  # built without the pooler where the family has the switch (no "newly initialised" report)
            model = AutoModel.from_pretrained(path, add_pooling_layer=False, **kwargs)
        except TypeError:
            model = AutoModel.from_pretrained(path, **kwargs)
        return self._finish(model)

    def from_config(self, config, **kwargs):
        from transformers import AutoModel

        return self._finish(AutoModel.from_config(config, **kwargs))
