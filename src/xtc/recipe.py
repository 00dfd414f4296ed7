"""A compression recipe: everything a run needs, as small dataclasses that load from YAML.

Unknown keys are refused with the list of known ones, so a typo never silently falls back to a
default.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import yaml

from .errors import RecipeError  # noqa: F401  (re-exported: raised here, defined there)
from .distill import DistillConfig
from .train import TrainConfig


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


@dataclass
class QuantConfig:
    """The quantization of the final stage (None in a recipe = no quantization)."""

    weight_bits: int = 1
    activation_bits: Optional[int] = 8
    groups: Union[int, str] = 1  # scales per linear weight: 1 per matrix (paper), or "row"
    quantize_embeddings: bool = True
    weight_scheme: Optional[str] = None


@dataclass
class Recipe:
    model: str = "sentence-transformers/all-MiniLM-L6-v2"
    task: str = "mrpc"
    glue_dir: Optional[str] = None  # None: the hub's GLUE dataset
    train_file: Optional[str] = None  # e.g. an augmented train.tsv (augmentation output)
    teacher: Optional[str] = None  # an already fine-tuned teacher; skips fine-tuning
    layers: Optional[list[int]] = None  # layer reduction: teacher layers the student copies
    quant: Optional[QuantConfig] = field(default_factory=QuantConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    finetune: TrainConfig = field(default_factory=lambda: TrainConfig(warmup_epochs=0.1))
    reduce: TrainConfig = field(default_factory=TrainConfig)  # FP32 layer-reduction KD stage
    qat: TrainConfig = field(default_factory=TrainConfig)  # quantization-aware KD stage
    seed: int = 42

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


_NESTED = {"quant": QuantConfig, "distill": DistillConfig, "finetune": TrainConfig, "reduce": TrainConfig,
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
            base = dataclasses.asdict(getattr(defaults, key))
            data[key] = _build(cls, {**base, **(data[key] or {})}, f"{where}: {key}")
    return _build(Recipe, data, where)


def load_recipe(path: str | Path) -> Recipe:
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe file {path} not found; pass a YAML file such as recipes/minilm-mrpc-w1a8.yaml")
    try:
        data = yaml.load(path.read_text(), Loader=_RecipeLoader) or {}
    except yaml.YAMLError as e:
        raise RecipeError(f"recipe {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    # paths inside a recipe are taken relative to the working directory, as on the command line
    return recipe_from_dict(data, where=f"recipe {path}")


def with_overrides(recipe: Recipe, **overrides) -> Recipe:
    """A copy with the given top-level fields replaced (None values are ignored)."""
    return dataclasses.replace(recipe, **{k: v for k, v in overrides.items() if v is not None})
