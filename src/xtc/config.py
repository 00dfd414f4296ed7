"""The three configurations of a compression, as small dataclasses: what to quantize
(:class:`XTCConfig`), how a stage trains (:class:`TrainConfig`) and the distillation loss
(:class:`DistillConfig`). A recipe (``xtc.recipe``) is these plus the model, task and layers.

Every value is checked when the config is made, so that a bad one fails before anything runs or
is written, with a :class:`~xtc.errors.ConfigError` that names the value and its range. This module
imports neither torch nor transformers (the command line's help comes back at once).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

from .errors import ConfigError

XTC_CONFIG_NAME = "xtc_config.json"
ROW_GROUPS = "row"  # XTCConfig.groups: one scale per output row of every linear
# The weight widths the packed format stores (xtc export, load_packed): binary and ternary codes.
PACKABLE_WEIGHT_BITS = (1, 2)
_XTC_SCHEMES = {1: "binary", 2: "ternary"}  # XTC's quantizer for 1 and 2 bits; "symmetric" above


def _xtc_scheme(bits: int) -> str:
    """XTC's weight quantizer for ``bits`` (without importing torch, unlike quantizers.default_scheme)."""
    return _XTC_SCHEMES.get(bits, "symmetric")


def _packs(bits: int, scheme: str) -> bool:
    """Whether the packed format holds weights of ``scheme`` at ``bits``."""
    from .quantizers import scheme_codes  # imports torch: only when asked

    return bits in PACKABLE_WEIGHT_BITS and scheme_codes(scheme) is not None


def module_path_matches(pattern: str, block_index: int, path: str) -> bool:
    """Whether a ``module_bits`` pattern names the linear at ``path`` inside block ``block_index``: the path
    itself or a prefix of it ending at a dot, either one optionally after the block index."""
    return any(q == pattern or q.startswith(pattern + ".") for q in (path, f"{block_index}.{path}"))


def _number(owner: str, name: str, value, *, low=None, high=None, low_open=False, integer=False,
            fix: str = "") -> None:
    """Refuse a value that is not a number in [low, high] (``low_open``: low itself excluded)."""
    kind = "a whole number" if integer else "a number"
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type or (not integer and not math.isfinite(value)):
        raise ConfigError(f"{owner}: {name} must be {kind}, got {value!r}{fix}")
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and value > high
    if too_low or too_high:
        if low is not None and high is not None and not low_open:
            bound = f"{low}..{high}"
        elif too_low:
            bound = f"greater than {low}" if low_open else f"at least {low}"
        else:
            bound = f"at most {high}"
        raise ConfigError(f"{owner}: {name} must be {bound}, got {value!r}{fix}")


def _flag(owner: str, name: str, value) -> None:
    if not isinstance(value, bool):
        raise ConfigError(f"{owner}: {name} must be true or false, got {value!r}")


@dataclass(frozen=True)
class XTCConfig:
    """What to quantize and how (one config for ``quantize_``, recipes and the command line).

    weight_bits: 1 (binary), 2 (ternary) or k >= 3 (symmetric); ``weight_scheme`` overrides the
        scheme picked from the bits (any name in the quantizer registry).
    activation_bits: bits of the inputs of quantized linears (per-token, dynamic), None = FP32.
    groups: scales per linear weight matrix: 1 = one per matrix (the paper's default), an integer
        that divides the matrix, or ``"row"`` = one per output row (whatever each matrix's width).
    quantize_embeddings: quantize the word embedding, one scale per row.
    embedding_bits: the word embedding's bits when they differ from ``weight_bits`` (e.g. 2 beside
        binary linears: the embedding is a lookup table, so its bits cost file size, not speed);
        None = ``weight_bits`` (the paper's). Its scheme is XTC's for those bits.
    modules: names of linears (last name component, e.g. "query") to quantize; empty = every
        linear inside the transformer blocks.
    module_bits: other bits for some linears (mixed precision), ``{pattern: bits}``. A pattern names a
        linear by its path inside its transformer block, or a prefix of that path ending at a dot:
        ``"attention"`` matches every attention projection (BERT's ``attention.self.query``, MPNet's
        ``attention.attn.q``), ``"intermediate"`` the FFN's up-projection; a leading block index
        narrows it to one block (``"0.intermediate"``). The most specific pattern (the longest)
        wins. Those linears use XTC's scheme for their bits and the same groups; e.g. ``{"attention":
        2}`` keeps attention ternary beside binary FFNs. Empty = every linear at ``weight_bits``.
    """

    weight_bits: int = 1
    activation_bits: Optional[int] = 8
    groups: Union[int, str] = 1
    quantize_embeddings: bool = True
    embedding_bits: Optional[int] = None
    weight_scheme: Optional[str] = None
    modules: tuple[str, ...] = field(default_factory=tuple)
    module_bits: dict = field(default_factory=dict)

    def __post_init__(self):
        owner = "quantization"
        _number(owner, "weight_bits", self.weight_bits, low=1, high=16, integer=True,
                fix=" (1 = binary, 2 = ternary)")
        if self.activation_bits is not None:
            # below 4 bits a per-token symmetric grid keeps 7 levels or fewer: no longer an 8-bit-style
            # activation quantizer but a different method, which xtc neither tests nor packs
            _number(owner, "activation_bits", self.activation_bits, low=4, high=16, integer=True,
                    fix=" (8 = XTC's; None = full precision)")
        if self.groups != ROW_GROUPS and (isinstance(self.groups, bool) or not isinstance(self.groups, int)
                                          or self.groups < 1):
            raise ConfigError(f"groups must be an integer >= 1 or {ROW_GROUPS!r} (one scale per output row), "
                              f"got {self.groups!r}")
        _flag(owner, "quantize_embeddings", self.quantize_embeddings)
        if self.embedding_bits is not None:
            _number(owner, "embedding_bits", self.embedding_bits, low=1, high=16, integer=True,
                    fix=" (1 = binary, 2 = ternary; None = weight_bits)")
            if not self.quantize_embeddings:
                raise ConfigError(f"quantization: embedding_bits={self.embedding_bits} asks for a quantized word "
                                  "embedding, but quantize_embeddings is false; drop one of the two")
        object.__setattr__(self, "modules", tuple(self.modules))
        if not isinstance(self.module_bits, dict):
            raise ConfigError(f"quantization: module_bits must map linear names to bits, e.g. {{'attention': 2}}, "
                              f"got {self.module_bits!r}")
        for pattern, bits in self.module_bits.items():
            if not isinstance(pattern, str) or not pattern.strip(". ") or pattern != pattern.strip():
                raise ConfigError(f"quantization: module_bits has the name {pattern!r}; name linears by their path "
                                  "inside a block, e.g. 'attention' or '0.intermediate.dense'")
            _number(owner, f"module_bits[{pattern!r}]", bits, low=1, high=16, integer=True,
                    fix=" (1 = binary, 2 = ternary)")
        object.__setattr__(self, "module_bits", dict(self.module_bits))
        if self.weight_scheme is not None:  # XTC's own scheme for the bits always fits them
            from .quantizers import check_scheme_bits  # imports torch: only for a named scheme

            check_scheme_bits(self.scheme, self.weight_bits)  # an unknown name or unfit bits fail now

    @property
    def scheme(self) -> str:
        """The weight quantizer's name: ``weight_scheme``, or XTC's scheme for ``weight_bits``."""
        if self.weight_scheme:
            return self.weight_scheme
        return _xtc_scheme(self.weight_bits)

    @property
    def word_embedding_bits(self) -> Optional[int]:
        """The bits of the quantized word embedding: ``embedding_bits``, else ``weight_bits``; None when the
        word embedding stays full precision (``quantize_embeddings`` false)."""
        if not self.quantize_embeddings:
            return None
        return self.weight_bits if self.embedding_bits is None else self.embedding_bits

    @property
    def embedding_scheme(self) -> str:
        """The word embedding's quantizer: the linears' when it has their bits, else XTC's for its own."""
        if self.embedding_bits is None or self.embedding_bits == self.weight_bits:
            return self.scheme
        return _xtc_scheme(self.embedding_bits)

    @property
    def packable(self) -> bool:
        """Whether ``xtc export`` can write this model as a packed file."""
        return self.linears_packable and (not self.quantize_embeddings
                                          or _packs(self.word_embedding_bits, self.embedding_scheme))

    @property
    def linears_packable(self) -> bool:
        """Whether the packed format holds the linears' weights (the word embedding aside)."""
        return _packs(self.weight_bits, self.scheme) and all(
            _packs(bits, _xtc_scheme(bits)) for bits in self.module_bits.values())

    def bits_for(self, block_index: int, name: str) -> tuple[int, str]:
        """(bits, scheme) of the linear at path ``name`` inside transformer block ``block_index``:
        the longest ``module_bits`` pattern that matches it, else ``weight_bits`` and ``scheme``."""
        hits = [p for p in self.module_bits if module_path_matches(p, block_index, name)]
        if not hits:
            return self.weight_bits, self.scheme
        bits = self.module_bits[max(hits, key=len)]
        if bits == self.weight_bits:
            return bits, self.scheme
        return bits, _xtc_scheme(bits)

    def __hash__(self) -> int:  # module_bits is a dict: hash the config by its JSON form
        return hash(json.dumps(self.to_dict(), sort_keys=True))

    def groups_for(self, linear) -> int:
        """The number of scale groups of ``linear``'s weight under this config."""
        return linear.out_features if self.groups == ROW_GROUPS else self.groups

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["modules"] = list(self.modules)
        d["module_bits"] = dict(self.module_bits)
        return d

    def canonical(self) -> dict:
        """``to_dict`` with the scheme spelled out: equal for configs that quantize alike."""
        return {**self.to_dict(), "weight_scheme": self.scheme, "embedding_bits": self.word_embedding_bits}

    @classmethod
    def from_dict(cls, d: dict) -> "XTCConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown XTCConfig keys {unknown}; known: {sorted(known)}")
        return cls(**d)

    def save(self, directory: str | Path) -> None:
        Path(directory, XTC_CONFIG_NAME).write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, directory: str | Path) -> Optional["XTCConfig"]:
        path = Path(directory, XTC_CONFIG_NAME)
        return cls.from_dict(json.loads(path.read_text())) if path.exists() else None


@dataclass
class TrainConfig:
    """Hyper-parameters of one training stage (docs/method.md, "Budgets")."""

    epochs: float = 3.0
    max_steps: int = -1  # >= 1 overrides epochs; -1 = train for ``epochs``
    learning_rate: float = 2e-5
    batch_size: int = 32
    eval_batch_size: int = 128
    warmup_epochs: float = 1.0  # linear warm-up length, in epochs (fractions allowed)
    # ... but at most this fraction of the stage's steps (1.0 = no cap). The quantization stage's default
    # is 0.1 (Recipe.qat): at 3 epochs a binary student then warms up for 0.3 epoch instead of one and
    # ends better on two of three screened tasks (benchmarks/README.md, issue 33's screen); at the
    # paper's 18 epochs the one-epoch warm-up is under the cap and unchanged.
    max_warmup_fraction: float = 1.0
    weight_decay: float = 0.01
    adam_epsilon: float = 1e-6
    max_grad_norm: float = 1.0
    eval_steps: Optional[int] = None  # None: evaluate at the end of every epoch
    logging_steps: int = 10
    max_length: int = 128
    pad_to_max_length: bool = False  # True pads every batch to max_length, as the reference does
    # Batches of similar lengths (Trainer's length-grouped sampler, with dynamic padding) carry fewer
    # padded tokens and take less time per step at the same dev metric (benchmarks/README.md).
    # False: random batches.
    group_by_length: bool = True
    # The learning rate of the latent weights of quantized linears and embeddings, as a multiple of
    # learning_rate (1.0 = the paper's single rate; stages without quantized modules are unaffected).
    # A binary or ternary weight changes only when its latent value crosses a threshold (0 or the
    # ternary delta); at fine-tuning rates few do within a short budget and the student stalls
    # (docs/method.md, "Where xtc departs from the paper").
    latent_lr_scale: float = 10.0
    seed: int = 42
    # Which evaluation picks the checkpoint that is kept: "dev" (the best dev score, the usual GLUE
    # practice), "train:F" (a held-out fraction F of the training set, drawn with the seed and not
    # trained on: dev is then only reported, never used to choose), or "last" (the end of the budget).
    select_on: str = "dev"
    # Average the trainable weights (the latent weights of quantized layers included) uniformly over the
    # last fraction of the steps (stochastic weight averaging) and put the average in place at the last
    # step, before its evaluation and checkpoint: the end-of-budget model is then the average rather
    # than the last iterate. 0 = off. After a resume the average starts again at the resume point.
    average_last: float = 0.0
    # Run the training forward and backward under bfloat16 autocast (matrix products in bf16, the
    # weights, the optimizer and every evaluation in FP32). On CPUs with AMX (Xeon 4th gen on) a KD step
    # took 0.65x the time (MiniLM, MRPC); elsewhere it may be slower. benchmarks/README.md has what it
    # does to the end-of-budget metric.
    bf16: bool = False
    # Progressive bit reduction: the binary linears of a quantized student train with ternary weights for
    # this first fraction of the steps, then binary (the latent weights carry over; the binary scale is
    # computed from them on the fly, so nothing is re-initialised). Evaluations before the switch are
    # skipped, so every reported or kept checkpoint is binary. 0 = binary throughout. Stages without
    # binary linears (an FP32 teacher or layer-reduction stage) ignore it.
    ternary_first: float = 0.0
    # The student's dropout probability during this stage (every dropout of the model: embeddings,
    # attention probabilities, hidden states); None keeps the model's own (0.1 for the BERT family).
    # Dropout guards a model fitted to few labels against overfitting; a binary student distilled from
    # a deterministic teacher is held back by its 1-bit weights rather than by overfitting, so dropout
    # may only blur its fit (benchmarks/README.md has what 0 measured). The saved model keeps its own.
    dropout: Optional[float] = None

    def __post_init__(self):
        self.check()

    @property
    def select_fraction(self) -> Optional[float]:
        """F of ``select_on = "train:F"``, else None."""
        return float(self.select_on.split(":", 1)[1]) if self.select_on.startswith("train:") else None

    def check(self) -> None:
        """Refuse values that would mean something other than what they say (also after ``replace``)."""
        owner = "training"
        _number(owner, "epochs", self.epochs, low=0, low_open=True)
        _number(owner, "max_steps", self.max_steps, integer=True, low=-1)
        if self.max_steps == 0:
            raise ConfigError(f"{owner}: max_steps must be at least 1 (or -1 to train for the epochs), got 0")
        _number(owner, "learning_rate", self.learning_rate, low=0, low_open=True)
        _number(owner, "batch_size", self.batch_size, low=1, integer=True)
        _number(owner, "eval_batch_size", self.eval_batch_size, low=1, integer=True)
        _number(owner, "warmup_epochs", self.warmup_epochs, low=0)
        _number(owner, "max_warmup_fraction", self.max_warmup_fraction, low=0, high=1)
        _number(owner, "weight_decay", self.weight_decay, low=0)
        _number(owner, "adam_epsilon", self.adam_epsilon, low=0, low_open=True)
        _number(owner, "max_grad_norm", self.max_grad_norm, low=0)
        if self.eval_steps is not None:
            _number(owner, "eval_steps", self.eval_steps, low=1, integer=True)
        _number(owner, "logging_steps", self.logging_steps, low=1, integer=True)
        _number(owner, "max_length", self.max_length, low=2, high=8192, integer=True)
        _flag(owner, "pad_to_max_length", self.pad_to_max_length)
        _flag(owner, "group_by_length", self.group_by_length)
        _number(owner, "latent_lr_scale", self.latent_lr_scale, low=0, low_open=True)
        _number(owner, "average_last", self.average_last, low=0, high=1)
        _number(owner, "ternary_first", self.ternary_first, low=0, high=1)
        if self.ternary_first == 1:
            raise ConfigError(f"{owner}: ternary_first is the fraction of the steps trained ternary before the "
                              f"binary part; 1 leaves no binary part (use weight_bits=2 for a ternary model)")
        _flag(owner, "bf16", self.bf16)
        if self.dropout is not None:
            _number(owner, "dropout", self.dropout, low=0, high=1)
            if self.dropout == 1:
                raise ConfigError(f"{owner}: dropout is a probability below 1 (1 would drop everything); "
                                  f"0 turns dropout off, None keeps the model's own")
        _number(owner, "seed", self.seed, integer=True, low=0)
        ok = self.select_on in ("dev", "last")
        if isinstance(self.select_on, str) and self.select_on.startswith("train:"):
            try:
                ok = 0 < float(self.select_on.split(":", 1)[1]) < 1
            except ValueError:
                ok = False
        if not ok:
            raise ConfigError(f"{owner}: select_on must be 'dev', 'last' or 'train:FRACTION' with 0 < FRACTION < 1 "
                              f"(e.g. train:0.1), got {self.select_on!r}")


@dataclass(frozen=True)
class DistillConfig:
    """Weights and options of the KD loss (docs/method.md, "The loss"); defaults are XTC's."""

    pred_weight: float = 1.0
    att_weight: float = 1.0
    hid_weight: float = 1.0
    label_weight: float = 0.0  # training on labels (cross-entropy / MSE): off by default
    temperature: float = 1.0
    averaging: str = "tokens"  # or "reference"
    # Sentence embedders (the embedding task) have no classes: their prediction term compares the pooled
    # embeddings (1 - cosine, or "mse"), with its own weight. At 1 the attention term is ~90% of the loss
    # and the student's embeddings stay ~0.6 cosine from the teacher's (benchmarks/README.md).
    embedding_loss: str = "cosine"
    emb_weight: float = 10.0
    # and, optionally, how the sentences of a batch relate: MSE between the student's and the teacher's
    # in-batch cosine-similarity matrices (what STS and retrieval score); off by default
    sim_weight: float = 0.0

    def __post_init__(self):
        owner = "distillation"
        for name in ("pred_weight", "att_weight", "hid_weight", "label_weight", "emb_weight", "sim_weight"):
            _number(owner, name, getattr(self, name), low=0)
        _number(owner, "temperature", self.temperature, low=0, low_open=True)
        if self.averaging not in ("tokens", "reference"):
            raise ConfigError(f"averaging must be 'tokens' or 'reference', got {self.averaging!r}")
        if self.embedding_loss not in ("cosine", "mse"):
            raise ConfigError(f"embedding_loss must be 'cosine' or 'mse', got {self.embedding_loss!r}")
