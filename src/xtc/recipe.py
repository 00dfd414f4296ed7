"""A compression recipe: everything a run needs, as small dataclasses that load from YAML, and the
one place where command-line options are merged into a recipe (:func:`apply_options`).

Unknown keys are refused with the list of known ones, and every value is checked by the config it
belongs to (``xtc.config``), so a typo or an out-of-range value never silently falls back to a
default or means something else. Imports neither torch nor transformers.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Optional

import yaml

from .config import DistillConfig, TrainConfig, XTCConfig
from .errors import ConfigError, RecipeError

# The quantization of a recipe is an XTCConfig; the old name stays importable.
QuantConfig = XTCConfig


class _RecipeLoader(yaml.SafeLoader):
    """YAML 1.1 reads ``5e-5`` (no dot) as a string; people write learning rates that way."""


_RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                   |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                   |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                   |[-+]?\.(?:inf|Inf|INF)
                   |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)


def parse_layers(value, what: str = "layers") -> Optional[list[int]]:
    """Teacher layers to copy, from a list of whole numbers or a comma-separated text ("1,3,5")."""
    if value is None or value == "":
        return None
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        raise ConfigError(f"{what} must be a list of layer numbers such as [1, 3, 5], got {value!r}")
    out = []
    for item in items:
        if isinstance(item, str) and re.fullmatch(r"\s*-?\d+\s*", item):
            item = int(item)
        if isinstance(item, bool) or not isinstance(item, int):
            raise ConfigError(f"{what} must be comma-separated layer numbers such as 1,3,5, got {value!r}")
        out.append(item)
    return out


@dataclass
class Recipe:
    model: str = "sentence-transformers/all-MiniLM-L6-v2"
    task: str = "mrpc"
    glue_dir: Optional[str] = None  # None: the hub's GLUE dataset
    train_file: Optional[str] = None  # e.g. an augmented train.tsv (augmentation output)
    teacher: Optional[str] = None  # an already fine-tuned teacher; skips fine-tuning
    layers: Optional[list[int]] = None  # layer reduction: teacher layers the student copies
    student: Optional[str] = None  # or: a smaller pre-trained model as the student (instead of a copy)
    quant: Optional[XTCConfig] = field(default_factory=XTCConfig)  # None = no quantization
    distill: DistillConfig = field(default_factory=DistillConfig)
    finetune: TrainConfig = field(default_factory=lambda: TrainConfig(warmup_epochs=0.1))
    reduce: TrainConfig = field(default_factory=TrainConfig)  # FP32 layer-reduction KD stage
    # quantization-aware KD stage; its warm-up is at most a tenth of its steps (TrainConfig.max_warmup_fraction)
    # and the student trains without dropout (benchmarks/README.md, issue 33's screen: ahead at the end on MRPC,
    # STS-B and CoLA over three seeds); `dropout: null` keeps the model's own 0.1, as the paper trains.
    # Batches of 16: a binary or ternary weight moves only step by step, and twice the steps in the same
    # epochs end closer to the teacher (issue 33's screen, five tasks); `batch_size: 32` is the paper's
    qat: TrainConfig = field(
        default_factory=lambda: TrainConfig(max_warmup_fraction=0.1, dropout=0.0, batch_size=16))
    seed: int = 42

    def __post_init__(self):
        for name in ("model", "task"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ConfigError(f"{name} must be a name or a path, got {getattr(self, name)!r}")
        for name in ("model", "glue_dir", "train_file", "teacher", "student"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                value = str(value)
            if isinstance(value, str) and value.startswith("~"):  # recipes name ~/.cache/... folders
                value = os.path.expanduser(value)
            setattr(self, name, value)
        self.layers = parse_layers(self.layers)
        if self.layers and self.student:
            raise ConfigError("give either layers (a student copied from the teacher) or student (a smaller "
                              "pre-trained model), not both")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"seed must be a whole number >= 0, got {self.seed!r}")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        if self.quant is not None:
            d["quant"] = self.quant.to_dict()
        return d

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


_NESTED = {"quant": XTCConfig, "distill": DistillConfig, "finetune": TrainConfig, "reduce": TrainConfig,
           "qat": TrainConfig}


def _build(cls, data: Any, where: str):
    if not isinstance(data, dict):
        raise RecipeError(f"{where} must be a mapping of keys to values, got {type(data).__name__}")
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise RecipeError(f"unknown key(s) {', '.join(unknown)} in {where}; known keys: {', '.join(known)}")
    for f in dataclasses.fields(cls):  # numbers must be numbers: a quoted "5e-5" would fail deep in torch
        value = data.get(f.name)
        wants = str(f.type)
        if isinstance(value, str) and wants.replace("Optional[", "").startswith(("float", "int")):
            raise RecipeError(f"{where}: {f.name} must be a number, got the text {value!r}")
        if isinstance(value, int) and not isinstance(value, bool) and wants.replace("Optional[", "").startswith("float"):
            data[f.name] = float(value)
    try:
        return cls(**data)
    except (TypeError, ValueError) as e:
        raise RecipeError(f"{where}: {e}") from None


def recipe_from_dict(data: dict, where: str = "recipe") -> Recipe:
    data = dict(data or {})
    defaults = Recipe()
    for key, cls in _NESTED.items():
        if key in data:
            if data[key] is None and key == "quant":
                continue
            if data[key] is not None and not isinstance(data[key], dict):
                raise RecipeError(f"{where}: {key} must be a mapping of keys to values, got {data[key]!r}")
            base = dataclasses.asdict(getattr(defaults, key))
            data[key] = _build(cls, {**base, **(data[key] or {})}, f"{where}: {key}")
    return _build(Recipe, data, where)


def load_recipe(path: str | Path) -> Recipe:
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe file {path} not found; pass a YAML file such as recipes/minilm-6l-w1a8.yaml")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_RecipeLoader) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise RecipeError(f"recipe {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise RecipeError(f"recipe {path} must be a mapping of keys to values, got {type(data).__name__}")
    # paths inside a recipe are taken relative to the working directory, as on the command line
    return recipe_from_dict(data, where=f"recipe {path}")


# ------------------------------------------------------------------------------------------------
# Command-line options -> recipe. The CLI defines each option once (xtc.cli) and hands the values
# here; None means "not given": the recipe's value stays.
# ------------------------------------------------------------------------------------------------
# option name -> TrainConfig field, for the options that set every training stage alike
TRAIN_OPTIONS = {"epochs": "epochs", "lr": "learning_rate", "batch_size": "batch_size", "max_steps": "max_steps",
                 "eval_steps": "eval_steps", "max_length": "max_length", "seed": "seed",
                 "warmup_epochs": "warmup_epochs", "max_warmup_fraction": "max_warmup_fraction",
                 "group_by_length": "group_by_length", "select_on": "select_on",
                 "average_last": "average_last", "bf16": "bf16", "ternary_first": "ternary_first",
                 "dropout": "dropout"}
QUANT_OPTIONS = {"weight_bits": "weight_bits", "weight_scheme": "weight_scheme", "groups": "groups",
                 "activation_bits": "activation_bits", "embedding_bits": "embedding_bits",
                 "module_bits": "module_bits"}
HUB = "hub"  # --glue-dir hub: read GLUE from the hub even where a recipe names a local folder
# the natural width of the schemes that have one: --weight-scheme absmean needs no --weight-bits
_SCHEME_BITS = {"binary": 1, "ternary": 2, "absmean": 2}


def parse_groups(groups) -> int | str:
    if isinstance(groups, int) and not isinstance(groups, bool):
        return groups
    text = str(groups).strip().lower()
    if text == "row":
        return text
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"--groups must be a whole number (1 = one scale per matrix) or 'row', "
                          f"got {groups!r}") from None


def parse_module_bits(text) -> dict:
    """``"attention=2,1.intermediate=2"`` -> ``{"attention": 2, "1.intermediate": 2}`` (a mapping passes as is)."""
    if isinstance(text, dict):
        return text
    out = {}
    for item in filter(None, (part.strip() for part in str(text).split(","))):
        name, sep, bits = item.partition("=")
        if not sep or not name.strip() or not bits.strip().isdigit():
            raise ConfigError(f"--module-bits takes NAME=BITS pairs separated by commas, e.g. attention=2 or "
                              f"attention=2,1.intermediate=2; got {item!r}")
        out[name.strip()] = int(bits)
    return out


def train_config(base: TrainConfig, options: dict, **extra) -> TrainConfig:
    """``base`` with the training options that were given (and ``extra`` fields) replaced."""
    changes = {field_name: options.get(opt) for opt, field_name in TRAIN_OPTIONS.items()}
    changes.update(extra)
    return replace(base, **{k: v for k, v in changes.items() if v is not None})


def quant_config(base: Optional[XTCConfig], options: dict) -> Optional[XTCConfig]:
    """The quantization after the options: ``base`` with what was given replaced; None if nothing
    asks for quantization (and ``base`` is None). ``activation_bits`` 0 means full precision."""
    given = {opt: options.get(opt) for opt in QUANT_OPTIONS if options.get(opt) is not None}
    if not given:
        return base
    if "groups" in given:
        given["groups"] = parse_groups(given["groups"])
    if "module_bits" in given:
        given["module_bits"] = parse_module_bits(given["module_bits"])
    if "activation_bits" in given and given["activation_bits"] == 0:
        given["activation_bits"] = None
    if "weight_scheme" in given and "weight_bits" not in given:
        scheme = given["weight_scheme"]
        if scheme not in _SCHEME_BITS:
            raise ConfigError(f"--weight-scheme {scheme} needs --weight-bits (e.g. 1 or 2)")
        given["weight_bits"] = _SCHEME_BITS[scheme]
    elif "weight_bits" in given and "weight_scheme" not in given:
        given["weight_scheme"] = None  # new bits, XTC's scheme for them (not the recipe's old one)
    return replace(base or XTCConfig(), **given)


def apply_options(recipe: Recipe, options: dict) -> Recipe:
    """The recipe after the command line: top-level fields, quantization, and the training options
    of every stage (``teacher_epochs`` for the teacher's fine-tuning, ``latent_lr_scale`` for QAT)."""
    top = {"model": options.get("model"), "task": options.get("task"), "teacher": options.get("teacher"),
           "student": options.get("student"),
           "glue_dir": options.get("glue_dir"), "train_file": options.get("augment"), "seed": options.get("seed"),
           "layers": parse_layers(options.get("layers"), "--layers")}
    if top["glue_dir"] is not None and str(top["glue_dir"]) == HUB:  # --glue-dir hub: the hub's dataset
        recipe, top["glue_dir"] = replace(recipe, glue_dir=None), None
    recipe = replace(recipe, **{k: (str(v) if isinstance(v, Path) else v) for k, v in top.items() if v is not None})
    quant = None if options.get("fp32") else quant_config(recipe.quant, options)
    stage_options = {**options, "seed": None}  # the recipe's seed is applied to each stage by compress
    teacher_epochs = options.get("teacher_epochs")
    return replace(
        recipe, quant=quant,
        finetune=train_config(recipe.finetune, stage_options, **({"epochs": teacher_epochs} if teacher_epochs else {})),
        reduce=train_config(recipe.reduce, stage_options),
        qat=train_config(recipe.qat, stage_options, latent_lr_scale=options.get("latent_lr_scale")))


def with_overrides(recipe: Recipe, **overrides) -> Recipe:
    """A copy with the given top-level fields replaced (None values are ignored)."""
    return dataclasses.replace(recipe, **{k: v for k, v in overrides.items() if v is not None})
