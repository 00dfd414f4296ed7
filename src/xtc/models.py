"""Loading models and tokenizers by name or folder, and checking them before a run starts.

Everything that reads a model's files lives here: :func:`check_model` (config and weight files
readable, family supported: no weights are loaded), :func:`load_model` (a classifier for a task,
re-applying xtc's quantization recorded in its config) and :func:`load_tokenizer`. Each failure is
a one-line :class:`~xtc.errors.ModelLoadError` or :class:`~xtc.errors.UnsupportedModelError`.
"""

from __future__ import annotations

import json
from pathlib import Path

from .errors import ModelLoadError, UnsupportedModelError

# Model types whose encoder xtc compresses end to end (quantization, layer reduction, the KD
# attention-score capture and the packed file), checked on tiny random configs
# (tests/test_families.py). Other families either compute attention in other ways (longformer, ...),
# are not plain encoders (gpt2, t5, bart, llama, ...) or need inputs GLUE does not have.
SUPPORTED_MODEL_TYPES = ("bert", "roberta", "xlm-roberta", "camembert", "electra", "distilbert", "mpnet",
                         "deberta-v2", "ernie", "data2vec-text", "roberta-prelayernorm")
_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
            "pytorch_model.bin.index.json")
_FIX = "pass a folder written by save_pretrained (config.json + weights, e.g. RUN/teacher/model) or a hub model name"


def looks_like_a_path(name: str) -> bool:
    """A name that can only mean a local folder: it starts with ``.``, ``/`` or ``~``, has more than
    one ``/`` (hub names are ``org/name``) or a backslash, or its first part is a local folder
    (``models/minilm`` beside a ``models/`` folder)."""
    first = name.split("/", 1)[0]
    return (name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name
            or ("/" in name and Path(first).is_dir()))


def _weight_files(path: Path, what: str) -> list[Path]:
    """The safetensors files of a model folder (from its index when sharded)."""
    index = path / "model.safetensors.index.json"
    if index.is_file():
        try:
            return sorted({path / f for f in json.loads(index.read_text())["weight_map"].values()})
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise ModelLoadError(f"{what} {index} is not a valid safetensors index ({e})") from None
    return [path / "model.safetensors"] if (path / "model.safetensors").is_file() else []


def _meta_shapes(path: Path, config, what: str) -> tuple[dict, str] | None:
    """``({name: shape}, prefix)`` of the base model the config describes, built on the meta device
    (nothing allocated); None if AutoModel cannot build this architecture (loading will say why)."""
    import torch
    from transformers import AutoModel

    try:
        with torch.device("meta"):
            base = AutoModel.from_config(config)
    except (ValueError, TypeError, KeyError) as e:  # the config's own checks (e.g. hidden size vs heads)
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ModelLoadError(f"{what} {path}: config.json does not describe a model that can be built ({first}); "
                             "the file is damaged or edited: save the model again") from None
    except Exception:  # noqa: BLE001 - anything else shows when the model is loaded for real
        return None
    return {k: tuple(v.shape) for k, v in base.state_dict().items()}, f"{getattr(base, 'base_model_prefix', '')}."


def _check_weights(path: Path, config, what: str) -> None:
    """Every safetensors file of the folder opens (a truncated or damaged file fails here, at once),
    and its tensors have the shapes the config describes (a config edited or damaged apart from its
    weights fails here, not after the run folder exists). Headers only: no weight is read."""
    from safetensors import safe_open

    shapes, built = None, False
    for file in _weight_files(path, what):
        try:
            handle = safe_open(str(file), framework="pt")
        except Exception as e:  # noqa: BLE001  (safetensors raises its own error type, or OSError)
            raise ModelLoadError(f"{what} weights {file} cannot be read ({str(e).splitlines()[0]}); the file is "
                                 "damaged or was cut short: save or copy the model again") from None
        with handle as f:
            if not built:  # after the first file opens: a damaged file is named before the config
                shapes, built = _meta_shapes(path, config, what), True
            if shapes is None:
                continue
            expected, prefix = shapes
            for key in f.keys():
                name = key[len(prefix):] if key.startswith(prefix) else key
                shape = tuple(f.get_slice(key).get_shape())
                if name in expected and expected[name] != shape:
                    raise ModelLoadError(f"{what} {path}: weight {key} has shape {list(shape)} but config.json "
                                         f"describes {list(expected[name])}: the config does not belong to these "
                                         "weights (damaged or edited); save the model again")


def check_model(name_or_path: str, what: str = "model", supported_only: bool = True):
    """The config of a loadable (and with ``supported_only``, compressible) model; its weight files
    are opened, not loaded. Raises ModelLoadError / UnsupportedModelError."""
    from transformers import AutoConfig

    name = str(name_or_path)
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelLoadError(f"{what} {name} is a file, not a model folder; {_FIX}")
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{what} folder {name} is not a transformers model (no config.json); {_FIX}")
        if not any((path / w).is_file() for w in _WEIGHTS):
            raise ModelLoadError(f"{what} folder {name} has no weights (model.safetensors or pytorch_model.bin); "
                                 f"{_FIX}")
    elif looks_like_a_path(name):
        raise ModelLoadError(f"{what} folder {name} does not exist; {_FIX}")
    try:
        config = AutoConfig.from_pretrained(name)
    except (OSError, ValueError, KeyError, TypeError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0].rstrip(".")
        where = "" if path.exists() else "no local folder of that name, and as a hub name: "
        raise ModelLoadError(f"cannot load {what} {name!r}: {where}{first}; {_FIX}") from None
    model_type = getattr(config, "model_type", None)
    if supported_only and model_type not in SUPPORTED_MODEL_TYPES:
        arch = ", ".join(getattr(config, "architectures", None) or []) or "no architecture named"
        raise UnsupportedModelError(
            f"{what} {name} is a {model_type!r} model ({arch}), which xtc cannot compress; "
            f"supported model types: {', '.join(SUPPORTED_MODEL_TYPES)}")
    if path.is_dir():
        _check_weights(path, config, what)
    return config


def load_tokenizer(name_or_path: str):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name_or_path)
    except Exception as e:  # noqa: BLE001  (the tokenizers library raises plain Exception on a damaged file)
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ModelLoadError(f"cannot load a tokenizer from {name_or_path!r}: {first}; the tokenizer files are "
                             "missing or damaged: save the tokenizer again (tokenizer.save_pretrained)") from None


def check_tokenizer_fits(tokenizer, config, what: str) -> None:
    """Every id the tokenizer can produce has a row in the model's word embedding (a tokenizer of
    another model fails here, not at the first rare token of a long run)."""
    vocab = getattr(config, "vocab_size", None)
    if vocab is not None and len(tokenizer) > vocab:
        raise ModelLoadError(f"the tokenizer of {what} has {len(tokenizer)} tokens but the model's vocabulary "
                             f"{vocab}: the tokenizer files belong to another model; copy the model's own "
                             "tokenizer into the folder")


def load_model(name_or_path: str, task):
    """A sequence (or token) classifier for ``task`` (re-applying xtc quantization stored in its config)."""
    from transformers.utils import logging as hf_logging

    from .surgery import load_quantized

    kwargs = {"num_labels": task.num_labels}
    if task.labels:
        kwargs["id2label"] = dict(enumerate(task.labels))
        kwargs["label2id"] = {lab: i for i, lab in enumerate(task.labels)}
    else:
        kwargs["problem_type"] = "regression"
    previous = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the "newly initialised classifier" report is expected here
    try:
        return load_quantized(name_or_path, model_class=task.model_class(), **kwargs)
    except (OSError, ValueError, KeyError, RuntimeError) as e:  # transformers: RuntimeError on mismatched sizes
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelLoadError(
            f"cannot load a transformers model from {name_or_path!r}: {first} "
            "(pass a folder with config.json and weights, or a hub model name)"
        ) from None
    finally:
        hf_logging.set_verbosity(previous)
