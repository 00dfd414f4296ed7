"""The ``xtc`` command line: thin, it parses, calls the Python API and prints.

Every option is defined once, in :data:`OPTIONS`; a command names the groups it takes
(``@command(TRAINING, DATA)``) and receives their values as one dict, ``options``, which
``xtc.recipe.apply_options`` merges into a recipe. Nothing here imports torch, so ``xtc --help``
and argument errors come back at once.
"""

from __future__ import annotations

import functools
import inspect
import json
import sys
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import typer

from .config import PACKABLE_WEIGHT_BITS, TrainConfig
from .errors import ConfigError, XTCError
from .recipe import HUB, Recipe

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Extreme compression (1-2 bit weights) of pre-trained transformers, XTC-style.")


@dataclass(frozen=True)
class Opt:
    """One command-line option: its type, default, help and (optionally) its flag spellings."""

    type: Any
    default: Any
    help: str
    decls: tuple = ()
    show_default: Any = True


_RECIPE, _FINETUNE, _QAT = Recipe(), Recipe().finetune, Recipe().qat
OPTIONS: dict[str, Opt] = {
    # what to compress
    "model": Opt(Optional[str], None, "pre-trained model: a local folder or a hub name", show_default=_RECIPE.model),
    "task": Opt(Optional[str], None, "GLUE task: cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte, wnli; embedding (a "
                                     "sentence embedder, taught on unlabeled sentences: --train-file, one per "
                                     "line); or your own data: --train-file / --dataset"),
    "glue_dir": Opt(Optional[Path], None, "folder in the GLUE TSV layout (MRPC/, CoLA/, ...), or hub",
                    show_default="the hub's glue dataset"),
    "teacher": Opt(Optional[str], None, "an already fine-tuned teacher folder (skips fine-tuning)"),
    "layers": Opt(Optional[str], None, "teacher layers the student copies, 0-based, e.g. 1,3,5",
                  show_default="all"),
    "student": Opt(Optional[str], None, "a smaller pre-trained model to distil into instead of a copy of the "
                                        "teacher (another family too: then only the predictions are distilled)"),
    "augment": Opt(Optional[Path], None, "augmented train.tsv (from `xtc augment`)"),
    # quantization
    "weight_bits": Opt(Optional[int], None, "1 = binary, 2 = ternary (what the packed file holds)",
                       show_default=str(_RECIPE.quant.weight_bits)),
    "weight_scheme": Opt(Optional[str], None, "weight quantizer: binary (1 bit), ternary (2), absmean (BitNet b1.58, "
                                              "2), lsq (learned step size, 1 or 2)", show_default="by the bits"),
    "groups": Opt(Optional[str], None, "weight scales per linear: 1 = one per matrix (the paper's), N = N equal "
                                       "groups, row = one per output row", show_default="1"),
    "activation_bits": Opt(Optional[int], None, "activation bits (0 = full precision)",
                           show_default=str(_RECIPE.quant.activation_bits)),
    "embedding_bits": Opt(Optional[int], None, "bits of the word embedding when they differ from --weight-bits "
                                               "(e.g. 2 beside binary linears: a bigger file, no slower)",
                          show_default="--weight-bits"),
    "module_bits": Opt(Optional[str], None, "other bits for some linears, NAME=BITS,...: a path inside a block "
                                            "or its prefix, optionally after a block index (attention=2 keeps "
                                            "attention ternary; 1.intermediate=2 block 1's FFN up-projection)",
                       show_default="none"),
    "latent_lr_scale": Opt(Optional[float], None, "learning rate of the quantized latent weights as a multiple of "
                                                  "--lr (1 = the paper's single rate)",
                           show_default=f"{_QAT.latent_lr_scale:g}"),
    "fp32": Opt(bool, False, "no quantization: layer reduction + KD only", ("--fp32",)),
    # training (every stage alike; the defaults shown are those of the quantization stage)
    "epochs": Opt(Optional[float], None, "training epochs of each stage", show_default=f"{_QAT.epochs:g}"),
    "teacher_epochs": Opt(Optional[float], None, "fine-tuning epochs of the teacher",
                          show_default="--epochs, else the recipe's"),
    "lr": Opt(Optional[float], None, "peak learning rate", ("--lr",), show_default=f"{_QAT.learning_rate:g}"),
    "batch_size": Opt(Optional[int], None, "training batch size",
                      show_default=f"{_QAT.batch_size} for quantization, {_FINETUNE.batch_size} for the others"),
    "max_steps": Opt(Optional[int], None, "stop after this many steps (overrides epochs)",
                     show_default="the epochs'"),
    "eval_steps": Opt(Optional[int], None, "evaluate on dev every N steps", show_default="every epoch"),
    "max_length": Opt(Optional[int], None, "maximum sequence length in tokens", show_default=str(_QAT.max_length)),
    "seed": Opt(Optional[int], None, "random seed", show_default=str(_RECIPE.seed)),
    "warmup_epochs": Opt(Optional[float], None, "linear warm-up length in epochs (fractions allowed)",
                         show_default=f"{_QAT.warmup_epochs:g}"),
    "max_warmup_fraction": Opt(Optional[float], None, "cap the warm-up at this fraction of each stage's steps "
                                                      "(1 = no cap: the paper's one-epoch warm-up at any budget)",
                               show_default=f"{_QAT.max_warmup_fraction:g} for quantization, 1 for the others"),
    "group_by_length": Opt(Optional[bool], None, "batch examples of similar length together (less padding, faster "
                                                 "steps), or draw batches at random",
                           ("--group-by-length/--random-batches",), show_default="--group-by-length"),
    "select_on": Opt(Optional[str], None, "which evaluation picks the kept checkpoint: dev (best dev score), "
                                          "train:FRACTION (a held-out part of the training set; dev only "
                                          "reported) or last (the end of the budget)", show_default="dev"),
    "average_last": Opt(Optional[float], None, "average the weights over this last fraction of the steps "
                                               "(stochastic weight averaging) for the end-of-budget model",
                        show_default="0 = off"),
    "ternary_first": Opt(Optional[float], None, "binary students: train with ternary weights for this first "
                                                "fraction of the steps, then binary (progressive bit reduction; "
                                                "other stages ignore it)",
                         show_default="0 = off"),
    "dropout": Opt(Optional[float], None, "dropout probability of the model being trained, in every stage "
                                          "(0 = off); the saved model keeps its own",
                   show_default=f"{_QAT.dropout:g} for quantization, the model's own for the others"),
    "bf16": Opt(Optional[bool], None, "train under bfloat16 autocast (about 1.5x faster steps on CPUs with AMX; "
                                      "weights and evaluation stay FP32)", ("--bf16/--fp32-training",),
                show_default="--fp32-training"),
    # your own data instead of a GLUE task (xtc.data.own, xtc.data.token)
    "train_file": Opt(Optional[Path], None, "your own training data instead of --task: .csv / .tsv / .jsonl with "
                                            "named columns; for token classification a CoNLL-style file or .jsonl"),
    "dev_file": Opt(Optional[Path], None, "your own dev data", show_default="--dev-fraction of the training data"),
    "dataset": Opt(Optional[str], None, "a hub dataset instead of --task (needs `pip install datasets`); "
                                        "--train-file / --dev-file then name splits (default train / validation)"),
    "dataset_config": Opt(Optional[str], None, "the hub dataset's configuration name"),
    "task_type": Opt(str, "classification", "classification, regression or token-classification"),
    "text_column": Opt(str, "text", "column of the text"),
    "text_pair_column": Opt(Optional[str], None, "column of the second text of a pair"),
    "label_column": Opt(str, "label", "column of the label"),
    "tokens_column": Opt(str, "tokens", "token classification .jsonl / hub: the column of the token lists"),
    "tags_column": Opt(str, "tags", "token classification .jsonl / hub: the column of the tag lists"),
    "labels": Opt(Optional[str], None, "class names (or tags) in index order, comma-separated",
                  show_default="those in the training data, sorted"),
    "dev_fraction": Opt(float, 0.1, "without a dev file: this fraction of the training data, drawn with --seed"),
    # writing
    "resume": Opt(bool, False, "continue an interrupted run from its last checkpoint"),
    "overwrite": Opt(bool, False, "replace what is already in the output folder"),
}
WHAT = ("model", "task", "glue_dir", "teacher", "layers", "student", "augment")
QUANT = ("weight_bits", "weight_scheme", "groups", "activation_bits", "embedding_bits", "module_bits",
         "latent_lr_scale")
TRAINING = ("epochs", "lr", "batch_size", "max_steps", "eval_steps", "max_length", "seed", "warmup_epochs",
            "max_warmup_fraction",
            "group_by_length", "select_on", "average_last", "ternary_first", "dropout", "bf16")
DATA = ("train_file", "dev_file", "dataset", "dataset_config", "task_type", "text_column", "text_pair_column",
        "label_column", "tokens_column", "tags_column", "labels", "dev_fraction")
WRITING = ("resume", "overwrite")


def _typer_option(name: str, opt: Opt, default_text: Optional[str] = None):
    show = default_text if default_text is not None else opt.show_default
    return typer.Option(opt.default, *opt.decls, help=opt.help, show_default=show)


def _friendly_errors(fn):
    """A mistake the user can fix ends in one ``error:`` line on stderr and exit code 2, never a
    traceback: every ``XTCError`` (bad options, data, models, files, run folders) and every
    operating-system refusal (a read-only or full disk, a missing permission). Anything else is a bug
    in xtc: its traceback stays, followed by a line that says so."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except XTCError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from None
        except OSError as e:
            if e.errno is None:  # raised by code, not by the operating system: not a user's mistake
                raise
            where = f"{e.filename}: " if e.filename else ""
            typer.echo(f"error: {where}{e.strerror or e}", err=True)
            raise typer.Exit(2) from None
        except (typer.Exit, typer.Abort, KeyboardInterrupt, SystemExit):
            raise
        except Exception:
            import traceback

            traceback.print_exc()
            typer.echo(f"xtc {fn.__name__}: the error above is a bug in xtc, not in your input; please report it "
                       "with the traceback (a run's own log stays in RUN/<stage>/log.jsonl)", err=True)
            raise typer.Exit(1) from None

    return wrapper


def command(*groups: tuple, defaults: Optional[TrainConfig] = None):
    """Register ``fn`` as a command taking its own parameters plus the options named in ``groups``,
    which reach it as one dict ``options``. ``defaults``: the training config whose values the help
    shows for the training options (each command shows the defaults it really uses)."""

    def decorate(fn):
        hints = typing.get_type_hints(fn, include_extras=True)
        own = [p.replace(annotation=hints.get(p.name, p.annotation))
               for p in inspect.signature(fn).parameters.values() if p.name != "options"]
        names = [n for group in groups for n in group]
        shown = {}
        if defaults is not None:
            from .recipe import TRAIN_OPTIONS

            shown = {opt: f"{getattr(defaults, f):g}" if isinstance(getattr(defaults, f), float)
                     else str(getattr(defaults, f)) for opt, f in TRAIN_OPTIONS.items()
                     if getattr(defaults, f) is not None
                     and opt not in ("group_by_length", "seed", "select_on", "max_steps", "average_last",
                                     "ternary_first", "max_warmup_fraction", "dropout")}
        added = [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, annotation=OPTIONS[n].type,
                                   default=_typer_option(n, OPTIONS[n], shown.get(n))) for n in names]

        @functools.wraps(fn)
        def run(**kwargs):
            options = {n: kwargs.pop(n) for n in names}
            return fn(**kwargs, options=options) if "options" in inspect.signature(fn).parameters else fn(**kwargs)

        params = own + added
        run.__signature__ = inspect.Signature(params)
        run.__annotations__ = {p.name: p.annotation for p in params}
        return app.command(name=fn.__name__.rstrip("_"))(_friendly_errors(run))

    return decorate


def _own_data(options: dict, need_task: bool = True):
    """``(task, data)``: pre-loaded data when --train-file / --dataset is given (task None), else ``(task, None)``."""
    task, train_file, dev_file, dataset = (options.get(k) for k in ("task", "train_file", "dev_file", "dataset"))
    if task == "embedding":
        if dataset is not None or dev_file is not None:
            raise ConfigError("--task embedding reads sentences from --train-file (one per line; default: the GLUE "
                              "training sentences) and is scored on STS-B and MRPC dev: --dataset and --dev-file "
                              "do not apply")
        return task, None
    if train_file is None and dataset is None:
        if task is None and need_task:
            raise ConfigError("pass --task (a GLUE task), or your own data with --train-file or --dataset")
        return task, None
    if task is not None:
        raise ConfigError("--task names a GLUE task; with --train-file / --dataset leave it out")
    if dataset is not None:  # --train-file / --dev-file name the hub dataset's splits
        train_file, dev_file = (str(x) if x is not None else None for x in (train_file, dev_file))
    labels = options.get("labels")
    names = [x.strip() for x in labels.split(",") if x.strip()] if labels else None
    seed = options.get("seed")
    common = dict(dev_fraction=options["dev_fraction"], seed=42 if seed is None else seed, labels=names,
                  dataset=dataset, dataset_config=options.get("dataset_config"))
    if options["task_type"] in ("token-classification", "token_classification", "token"):
        from .data.token import load_token_task

        return None, load_token_task(train_file, dev_file, tokens_column=options["tokens_column"],
                                     tags_column=options["tags_column"], **common)
    from .data.own import load_custom_task

    return None, load_custom_task(train_file, dev_file, text_column=options["text_column"],
                                  text_pair_column=options.get("text_pair_column"),
                                  label_column=options["label_column"], task_type=options["task_type"], **common)


def _embedding_data(model: str, options: dict):
    """``data`` of the embedding task for the stage commands (compress builds its own from the recipe)."""
    from .data.embedding import load_embedding_task

    return load_embedding_task(model, _str(options.get("train_file") or options.get("augment")),
                               _str(options.get("glue_dir")))


def _exportable(quant) -> None:
    """Refuse up front what ``xtc export`` could not write after hours of training."""
    if quant is not None and not quant.packable:
        from .quantizers import packable_schemes

        unpackable = {p: b for p, b in quant.module_bits.items() if b not in PACKABLE_WEIGHT_BITS}
        if unpackable:
            raise ConfigError(f"module_bits {unpackable} cannot be exported to the packed format, which holds "
                              f"{' and '.join(map(str, PACKABLE_WEIGHT_BITS))}-bit weights; use 1 or 2 there")
        if quant.linears_packable:
            raise ConfigError(f"a {quant.word_embedding_bits}-bit word embedding cannot be exported to the packed "
                              f"format, which holds {' and '.join(map(str, PACKABLE_WEIGHT_BITS))}-bit ones; use "
                              "--embedding-bits 1 or 2")
        raise ConfigError(f"{quant.weight_bits}-bit weights of the {quant.scheme!r} scheme cannot be exported to the "
                          f"packed format, which holds {' and '.join(map(str, PACKABLE_WEIGHT_BITS))}-bit weights "
                          f"(schemes {', '.join(packable_schemes())}); use --weight-bits 1 or 2, or xtc.quantize_ "
                          "from Python for other widths")


@command(WHAT, QUANT, ("fp32",), TRAINING, ("teacher_epochs",), WRITING, DATA)
def compress(recipe: Optional[Path] = typer.Option(None, help="YAML recipe (see recipes/); options override it"),
             output: Path = typer.Option(..., help="run folder"), options: dict = None):
    """Fine-tune the teacher, optionally reduce layers, then quantize with distillation."""
    from .recipe import apply_options, load_recipe

    task, data = _own_data(options, need_task=False)
    if data is not None:
        options = {**options, "task": data[0].name}  # recorded in config.yaml and results.json
    if task == "embedding" and options.get("train_file") is not None:  # the sentences: the recipe's train_file
        options = {**options, "augment": options["train_file"]}
    r = apply_options(load_recipe(recipe) if recipe else Recipe(), options)
    _exportable(r.quant)
    from .pipeline import compress as run_compress

    results = run_compress(r, output, resume=options["resume"], overwrite=options["overwrite"], data=data)
    _print_summary(results)


def _print_summary(results: dict) -> None:
    m = results["main_metric"]
    t, c = results["teacher"], results["compressed"]
    typer.echo(f"\n{results['task']} dev {m}: teacher {t.get(m, float('nan')):.4f} | "
               f"compressed (W{results['weight_bits']}A{results['activation_bits'] or 32}, "
               f"{results['num_layers'] or 'all'} layers) {c.get(m, float('nan')):.4f}")
    typer.echo(json.dumps({"teacher": t, "compressed": c}, indent=1))


@command(("model", "task", "glue_dir"), TRAINING, WRITING, DATA, defaults=_FINETUNE)
def finetune(output: Path = typer.Option(..., help="stage folder (the model goes to OUTPUT/model)"),
             options: dict = None):
    """Fine-tune a pre-trained model on a task (the teacher)."""
    from .pipeline import finetune as run
    from .recipe import train_config

    if not options.get("model"):
        raise ConfigError("pass --model: the pre-trained model to fine-tune (a folder or a hub name)")
    task, data = _own_data(options)
    summary = run(options["model"], task, output, _str(options.get("glue_dir")), train_config(_FINETUNE, options),
                  resume=options["resume"], overwrite=options["overwrite"], data=data)
    typer.echo(json.dumps(summary["dev"], indent=1))


@command(("teacher", "task", "glue_dir", "layers", "student", "augment"), QUANT, TRAINING, WRITING, DATA,
         defaults=_QAT)
def distill(output: Path = typer.Option(..., help="stage folder (the model goes to OUTPUT/model)"),
            options: dict = None):
    """Distil a teacher into a (layer-reduced, optionally quantized) student with one-stage KD."""
    from .recipe import parse_layers, quant_config, train_config

    if not options.get("teacher"):
        raise ConfigError("pass --teacher: the fine-tuned teacher folder")
    task, data = _own_data(options)
    if task == "embedding":
        task, data = None, _embedding_data(options["teacher"], options)
        options = {**options, "augment": None}
    quant = quant_config(None, options) if options.get("weight_bits") or options.get("weight_scheme") else None
    _exportable(quant)
    # the stage compress would run: quantization-aware KD, or FP32 layer reduction (its own warm-up cap)
    cfg = train_config(_QAT if quant is not None else _RECIPE.reduce, options,
                       latent_lr_scale=options.get("latent_lr_scale"))
    from .pipeline import distill as run

    summary = run(options["teacher"], task, output, _str(options.get("glue_dir")), student=options.get("student"),
                  layers=parse_layers(options.get("layers"), "--layers"), quant=quant, config=cfg,
                  train_file=_str(options.get("augment")), resume=options["resume"], overwrite=options["overwrite"],
                  data=data)
    typer.echo(json.dumps(summary["dev"], indent=1))


@command(("task", "glue_dir", "seed"), DATA)
def evaluate(model_dir: str = typer.Argument(..., help="a checkpoint folder (e.g. RUN/quantized/model)"),
             options: dict = None):
    """Dev metrics of a checkpoint (with your own data: the same data options and --seed as in training, so
    that the labels and a --dev-fraction split are the same)."""
    from .pipeline import evaluate as run

    task, data = _own_data(options)
    if task == "embedding":
        task, data = None, _embedding_data(model_dir, options)
    typer.echo(json.dumps(run(model_dir, task, _str(options.get("glue_dir")), data=data), indent=1))


@command(("overwrite",))
def augment(
    task: str = typer.Option(..., help="GLUE task whose train set is augmented"),
    output: Path = typer.Option(..., help="folder for the augmented data (then usable as --glue-dir)"),
    glue_dir: Optional[Path] = typer.Option(None, help=OPTIONS["glue_dir"].help, show_default="the hub's glue"),
    copies: Optional[int] = typer.Option(None, help="augmented copies per example", show_default="30; 20 for SST-2/QNLI"),
    model: Optional[str] = typer.Option(None, help="teacher/model folder: tokenizer and embedding-neighbour fallback"),
    mlm: Optional[str] = typer.Option(None, help="a masked language model for single-piece words"),
    glove: Optional[Path] = typer.Option(None, help="GloVe-format word vectors for multi-piece words"),
    both: bool = typer.Option(False, help="augment both sentences of a pair (default: the first)"),
    seed: int = typer.Option(0, help="random seed (same seed, same file)"),
    top_k: int = typer.Option(15, help="candidates per word"),
    prob: float = typer.Option(0.4, help="replacement probability per word"),
    options: dict = None,
):
    """TinyBERT-style data augmentation of a task's training set (works offline)."""
    from .data import get_task
    from .data.augment import augment_cmd
    from .io import check_output

    check_output(Path(output) / get_task(task).dir_name / "train.tsv", overwrite=options["overwrite"])
    augment_cmd(task, glue_dir, output, copies=copies, model=model, mlm=mlm, glove=glove, both=both, seed=seed,
                top_k=top_k, prob=prob)


@command(("overwrite",))
def export(
    run_dir: Path = typer.Argument(..., help="a run folder (its final checkpoint) or a checkpoint folder"),
    out_dir: Path = typer.Argument(..., help="folder for the packed model"),
    fp_dtype: str = typer.Option("fp16", help="full-precision tensors: fp16 or fp32"),
    int8_extras: bool = typer.Option(False, help="position embeddings and pooler in 8 bits"),
    ternary_packing: str = typer.Option("base3", help="ternary weights: base3 (1.6 bits) or 2bit"),
    options: dict = None,
):
    """Write the compressed model as it really is: one safetensors file at 1-2 bits per weight."""
    from .io import check_output
    from .packed.cli import export_cmd

    if fp_dtype not in ("fp16", "fp32"):
        raise ConfigError(f"--fp-dtype must be fp16 or fp32, got {fp_dtype!r}")
    if ternary_packing not in ("base3", "2bit"):
        raise ConfigError(f"--ternary-packing must be base3 or 2bit, got {ternary_packing!r}")
    check_output(out_dir, overwrite=options["overwrite"], folder=True)
    export_cmd(run_dir, out_dir, fp_dtype=fp_dtype, int8_extras=int8_extras, ternary_packing=ternary_packing)


@command()
def size(path: Path = typer.Argument(..., help="a packed model file or folder")):
    """Bytes per class of tensors and the ratio against FP32."""
    from .packed.cli import size_cmd

    size_cmd(path)


@command(("overwrite",))
def predict(
    model_dir: Path = typer.Argument(..., help="a packed model folder (from `xtc export`)"),
    input: Path = typer.Option(Path("-"), "--input", "-i", help="sentences, one per line (pairs: tab-separated); "
                                                                "- = stdin"),
    output: Path = typer.Option(Path("-"), "--output", "-o", help="TSV of labels and scores; - = stdout"),
    batch_size: int = typer.Option(32, help="sentences per batch"),
    max_length: Optional[int] = typer.Option(None, help="maximum tokens per input, longer ones are cut",
                                             show_default="128, or the model's limit if lower"),
    options: dict = None,
):
    """Run a packed model on your sentences, without any training code."""
    from .io import check_output
    from .packed.cli import predict_cmd

    if str(output) != "-":
        check_output(output, overwrite=options["overwrite"])
    if str(input) != "-" and not Path(input).is_file():
        raise ConfigError(f"--input {input}: no such file (give a text file, or - for stdin)")
    predict_cmd(model_dir, input=input, output=output, batch_size=batch_size, max_length=max_length)


@command(("overwrite",))
def embed(
    model_dir: Path = typer.Argument(..., help="a packed sentence embedder (from `xtc compress --task embedding` "
                                               "and `xtc export`)"),
    input: Path = typer.Option(Path("-"), "--input", "-i", help="sentences, one per line; - = stdin"),
    output: Path = typer.Option(Path("-"), "--output", "-o", help="vectors: a .npy file (float32, one row per "
                                                                  "sentence), else JSON lines; - = stdout"),
    batch_size: int = typer.Option(32, help="sentences per batch"),
    max_length: int = typer.Option(128, help="maximum tokens per sentence, longer ones are cut"),
    options: dict = None,
):
    """Sentence embeddings from a packed model: pooled and normalised as the teacher did."""
    from .io import check_output
    from .packed.cli import embed_cmd

    if str(output) != "-":
        check_output(output, overwrite=options["overwrite"])
    if str(input) != "-" and not Path(input).is_file():
        raise ConfigError(f"--input {input}: no such file (give a text file, or - for stdin)")
    if batch_size < 1 or max_length < 2:
        raise ConfigError(f"--batch-size must be at least 1 and --max-length at least 2, got {batch_size} and "
                          f"{max_length}")
    embed_cmd(model_dir, input=input, output=output, batch_size=batch_size, max_length=max_length)


def _str(value) -> Optional[str]:
    return str(value) if value is not None and str(value) != HUB else None


def main():
    try:
        app()
    finally:
        # under torchrun the Trainer leaves its process group open; closing it avoids gloo aborting at exit
        dist = sys.modules.get("torch.distributed")
        if dist is not None and dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
