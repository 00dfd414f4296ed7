"""The ``xtc`` command line: thin, it parses, calls the Python API and prints."""

from __future__ import annotations

import functools
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Optional

import typer

from .errors import ConfigError, XTCError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Extreme compression (1-2 bit weights) of pre-trained transformers, XTC-style.")


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


def _parse_layers(layers: Optional[str]) -> Optional[list[int]]:
    if not layers:
        return None
    try:
        return [int(x) for x in layers.split(",") if x.strip()]
    except ValueError:
        # ValueError: printed by _friendly_errors as one line, like every other bad input
        raise ConfigError(f"--layers must be comma-separated layer numbers such as 1,3,5, got {layers!r}") from None


def _parse_groups(groups: str) -> int | str:
    text = groups.strip().lower()
    if text == "row":
        return text
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"--groups must be a whole number (1 = one scale per matrix) or 'row', got {groups!r}") from None


def _train_overrides(cfg, epochs, lr, batch_size, max_steps, eval_steps, max_length, seed, warmup_epochs=None,
                     group_by_length=None):
    changes = dict(epochs=epochs, learning_rate=lr, batch_size=batch_size, max_steps=max_steps,
                   eval_steps=eval_steps, max_length=max_length, seed=seed, warmup_epochs=warmup_epochs,
                   group_by_length=group_by_length)
    return replace(cfg, **{k: v for k, v in changes.items() if v is not None})


Epochs = typer.Option(None, help="training epochs of each stage (default: recipe's)")
Warmup = typer.Option(None, help="linear warm-up length in epochs (fractions allowed)")
GroupByLength = typer.Option(None, "--group-by-length/--random-batches",
                             help="default: batch examples of similar length together (less padding, faster "
                                  "steps); --random-batches: draw batches at random")
LR = typer.Option(None, "--lr", help="peak learning rate")
BatchSize = typer.Option(None, help="training batch size")
MaxSteps = typer.Option(None, help="stop after this many steps (overrides epochs)")
EvalSteps = typer.Option(None, help="evaluate on dev every N steps (default: every epoch)")
MaxLength = typer.Option(None, help="maximum sequence length in tokens")
Seed = typer.Option(None, help="random seed")
GlueDir = typer.Option(None, help="folder with the GLUE TSV layout (MRPC/, CoLA/, ...); default: the hub")
WeightScheme = typer.Option(None, help="weight quantizer: binary (1 bit), ternary (2), absmean (BitNet b1.58, 2), "
                                       "lsq (learned step size, 1 or 2+), symmetric (3+)")
LatentLR = typer.Option(None, help="learning rate of the quantized latent weights as a multiple of --lr "
                                    "(default 10; 1 = the paper's single rate)")
Groups = typer.Option(None, help="weight scales per linear: 1 = one per matrix (the paper's), N = N equal groups, "
                                  "row = one per output row")
# your own data instead of a GLUE task (xtc.custom_data, xtc.token_classification)
TrainFile = typer.Option(None, help="your own training data instead of --task: .csv / .tsv / .jsonl with named "
                                    "columns; for token classification a CoNLL-style file or .jsonl")
DevFile = typer.Option(None, help="your own dev data (default: --dev-fraction of the training data)")
Dataset = typer.Option(None, help="a hub dataset instead of --task (needs `pip install datasets`); --train-file / "
                                  "--dev-file then name splits (default train / validation)")
DatasetConfig = typer.Option(None, help="the hub dataset's configuration name")
TaskType = typer.Option("classification", help="classification, regression or token-classification")
TextColumn = typer.Option("text", help="column of the text")
TextPairColumn = typer.Option(None, help="column of the second text of a pair")
LabelColumn = typer.Option("label", help="column of the label")
TokensColumn = typer.Option("tokens", help="token classification .jsonl / hub: the column of the token lists")
TagsColumn = typer.Option("tags", help="token classification .jsonl / hub: the column of the tag lists")
Labels = typer.Option(None, help="class names (or tags) in index order, comma-separated (default: those in the "
                                 "training data, sorted)")
DevFraction = typer.Option(0.1, help="without a dev file: this fraction of the training data, drawn with --seed")


def _own_data(task, train_file, dev_file, dataset, dataset_config, task_type, text_column, text_pair_column,
              label_column, tokens_column, tags_column, labels, dev_fraction, seed, need_task=True):
    """``(task, data)``: pre-loaded data when --train-file / --dataset is given (task None), else ``(task, None)``."""
    if train_file is None and dataset is None:
        if task is None and need_task:
            raise typer.BadParameter("pass --task (a GLUE task), or your own data with --train-file or --dataset")
        return task, None
    if task is not None:
        raise typer.BadParameter("--task names a GLUE task; with --train-file / --dataset leave it out")
    if dataset is not None:  # --train-file / --dev-file name the hub dataset's splits
        train_file, dev_file = (str(x) if x is not None else None for x in (train_file, dev_file))
    names = [x.strip() for x in labels.split(",") if x.strip()] if labels else None
    common = dict(dev_fraction=dev_fraction, seed=42 if seed is None else seed, labels=names, dataset=dataset,
                  dataset_config=dataset_config)
    if task_type in ("token-classification", "token_classification", "token"):
        from .token_classification import load_token_task

        return None, load_token_task(train_file, dev_file, tokens_column=tokens_column, tags_column=tags_column,
                                     **common)
    from .custom_data import load_custom_task

    return None, load_custom_task(train_file, dev_file, text_column=text_column, text_pair_column=text_pair_column,
                                  label_column=label_column, task_type=task_type, **common)


def _scheme_bits(scheme: Optional[str], bits: Optional[int]) -> Optional[int]:
    """The weight bits of ``--weight-scheme`` without ``--weight-bits``: those of the scheme's one width."""
    if bits is not None or scheme is None:
        return bits
    natural = {"binary": 1, "ternary": 2, "absmean": 2}
    if scheme not in natural:
        raise typer.BadParameter(f"--weight-scheme {scheme} needs --weight-bits (e.g. 1 or 2)")
    return natural[scheme]


@app.command()
@_friendly_errors
def compress(
    recipe: Optional[Path] = typer.Option(None, help="YAML recipe (see recipes/); options below override it"),
    model: Optional[str] = typer.Option(None, help="pre-trained model: local folder or hub name"),
    task: Optional[str] = typer.Option(None, help="GLUE task: cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte, wnli"),
    glue_dir: Optional[Path] = GlueDir,
    teacher: Optional[str] = typer.Option(None, help="an already fine-tuned teacher (skips fine-tuning)"),
    weight_bits: Optional[int] = typer.Option(None, help="1 = binary, 2 = ternary"),
    weight_scheme: Optional[str] = WeightScheme,
    groups: Optional[str] = Groups,
    latent_lr_scale: Optional[float] = LatentLR,
    activation_bits: Optional[int] = typer.Option(None, help="activation bits (0 = keep FP32)"),
    fp32: bool = typer.Option(False, "--fp32", help="no quantization: layer reduction + KD only"),
    layers: Optional[str] = typer.Option(None, help="teacher layers the student copies, e.g. 1,3,5"),
    augment: Optional[Path] = typer.Option(None, help="augmented train.tsv (from `xtc augment`)"),
    output: Path = typer.Option(..., help="run folder"),
    epochs: Optional[float] = Epochs, lr: Optional[float] = LR, batch_size: Optional[int] = BatchSize,
    max_steps: Optional[int] = MaxSteps, eval_steps: Optional[int] = EvalSteps,
    max_length: Optional[int] = MaxLength, seed: Optional[int] = Seed, warmup_epochs: Optional[float] = Warmup,
    group_by_length: Optional[bool] = GroupByLength,
    teacher_epochs: Optional[float] = typer.Option(None, help="fine-tuning epochs of the teacher"),
    resume: bool = typer.Option(False, help="continue an interrupted run from its last checkpoint"),
    overwrite: bool = typer.Option(False, help="replace a finished run in --output"),
    train_file: Optional[Path] = TrainFile, dev_file: Optional[Path] = DevFile, dataset: Optional[str] = Dataset,
    dataset_config: Optional[str] = DatasetConfig, task_type: str = TaskType, text_column: str = TextColumn,
    text_pair_column: Optional[str] = TextPairColumn, label_column: str = LabelColumn,
    tokens_column: str = TokensColumn, tags_column: str = TagsColumn, labels: Optional[str] = Labels,
    dev_fraction: float = DevFraction,
):
    """Fine-tune the teacher, optionally reduce layers, then quantize with distillation."""
    from .pipeline import compress as run_compress
    from .recipe import QuantConfig, Recipe, load_recipe

    task, data = _own_data(task, train_file, dev_file, dataset, dataset_config, task_type, text_column,
                           text_pair_column, label_column, tokens_column, tags_column, labels, dev_fraction, seed,
                           need_task=False)
    if data is not None:
        task = data[0].name  # recorded in config.yaml and results.json; the data itself is data[1:]
    r = load_recipe(recipe) if recipe else Recipe()
    r = replace(r, **{k: v for k, v in dict(
        model=model, task=task, glue_dir=str(glue_dir) if glue_dir else None, teacher=teacher,
        layers=_parse_layers(layers), train_file=str(augment) if augment else None, seed=seed).items()
        if v is not None})
    if fp32:
        r = replace(r, quant=None)
    elif weight_bits is not None or activation_bits is not None or weight_scheme is not None or groups is not None:
        q = r.quant or QuantConfig()
        weight_bits = _scheme_bits(weight_scheme, weight_bits)
        r = replace(r, quant=replace(q, weight_bits=weight_bits if weight_bits is not None else q.weight_bits,
                                     weight_scheme=weight_scheme if weight_scheme is not None else q.weight_scheme,
                                     groups=_parse_groups(groups) if groups is not None else q.groups,
                                     activation_bits=(q.activation_bits if activation_bits is None
                                                      else (activation_bits or None))))
    over = functools.partial(_train_overrides, epochs=epochs, lr=lr, batch_size=batch_size, max_steps=max_steps,
                             eval_steps=eval_steps, max_length=max_length, seed=None,
                             warmup_epochs=warmup_epochs, group_by_length=group_by_length)
    qat = over(r.qat) if latent_lr_scale is None else replace(over(r.qat), latent_lr_scale=latent_lr_scale)
    r = replace(r, reduce=over(r.reduce), qat=qat,
                finetune=over(r.finetune, epochs=teacher_epochs if teacher_epochs is not None else epochs))
    results = run_compress(r, output, resume=resume, overwrite=overwrite, data=data)
    _print_summary(results)


def _print_summary(results: dict) -> None:
    m = results["main_metric"]
    t, c = results["teacher"], results["compressed"]
    typer.echo(f"\n{results['task']} dev {m}: teacher {t.get(m, float('nan')):.4f} | "
               f"compressed (W{results['weight_bits']}A{results['activation_bits'] or 32}, "
               f"{results['num_layers'] or 'all'} layers) {c.get(m, float('nan')):.4f}")
    typer.echo(json.dumps({"teacher": t, "compressed": c}, indent=1))


@app.command()
@_friendly_errors
def finetune(
    model: str = typer.Option(..., help="pre-trained model: local folder or hub name"),
    task: Optional[str] = typer.Option(None, help="GLUE task (or your own data: --train-file / --dataset)"),
    output: Path = typer.Option(..., help="stage folder (the model goes to OUTPUT/model)"),
    glue_dir: Optional[Path] = GlueDir,
    epochs: Optional[float] = Epochs, lr: Optional[float] = LR, batch_size: Optional[int] = BatchSize,
    max_steps: Optional[int] = MaxSteps, eval_steps: Optional[int] = EvalSteps,
    max_length: Optional[int] = MaxLength, seed: Optional[int] = Seed, warmup_epochs: Optional[float] = Warmup,
    group_by_length: Optional[bool] = GroupByLength,
    resume: bool = typer.Option(False, help="continue from the last checkpoint"),
    train_file: Optional[Path] = TrainFile, dev_file: Optional[Path] = DevFile, dataset: Optional[str] = Dataset,
    dataset_config: Optional[str] = DatasetConfig, task_type: str = TaskType, text_column: str = TextColumn,
    text_pair_column: Optional[str] = TextPairColumn, label_column: str = LabelColumn,
    tokens_column: str = TokensColumn, tags_column: str = TagsColumn, labels: Optional[str] = Labels,
    dev_fraction: float = DevFraction,
):
    """Fine-tune a pre-trained model on a task (the teacher)."""
    from .pipeline import finetune as run
    from .recipe import Recipe

    task, data = _own_data(task, train_file, dev_file, dataset, dataset_config, task_type, text_column,
                           text_pair_column, label_column, tokens_column, tags_column, labels, dev_fraction, seed)
    cfg = _train_overrides(Recipe().finetune, epochs, lr, batch_size, max_steps, eval_steps, max_length, seed,
                           warmup_epochs, group_by_length)
    summary = run(model, task, output, str(glue_dir) if glue_dir else None, cfg, resume=resume, data=data)
    typer.echo(json.dumps(summary["dev"], indent=1))


@app.command()
@_friendly_errors
def distill(
    teacher: str = typer.Option(..., help="fine-tuned teacher folder"),
    task: Optional[str] = typer.Option(None, help="GLUE task (or your own data: --train-file / --dataset)"),
    output: Path = typer.Option(..., help="stage folder (the model goes to OUTPUT/model)"),
    glue_dir: Optional[Path] = GlueDir,
    student: Optional[str] = typer.Option(None, help="student to start from (default: a copy of the teacher)"),
    layers: Optional[str] = typer.Option(None, help="copy these teacher layers into the student, e.g. 1,3,5"),
    weight_bits: Optional[int] = typer.Option(None, help="quantize the student: 1 = binary, 2 = ternary"),
    weight_scheme: Optional[str] = WeightScheme,
    groups: Optional[str] = Groups,
    latent_lr_scale: Optional[float] = LatentLR,
    activation_bits: int = typer.Option(8, help="activation bits when quantizing (0 = FP32)"),
    augment: Optional[Path] = typer.Option(None, help="augmented train.tsv"),
    epochs: Optional[float] = Epochs, lr: Optional[float] = LR, batch_size: Optional[int] = BatchSize,
    max_steps: Optional[int] = MaxSteps, eval_steps: Optional[int] = EvalSteps,
    max_length: Optional[int] = MaxLength, seed: Optional[int] = Seed, warmup_epochs: Optional[float] = Warmup,
    group_by_length: Optional[bool] = GroupByLength,
    resume: bool = typer.Option(False, help="continue from the last checkpoint"),
    train_file: Optional[Path] = TrainFile, dev_file: Optional[Path] = DevFile, dataset: Optional[str] = Dataset,
    dataset_config: Optional[str] = DatasetConfig, task_type: str = TaskType, text_column: str = TextColumn,
    text_pair_column: Optional[str] = TextPairColumn, label_column: str = LabelColumn,
    tokens_column: str = TokensColumn, tags_column: str = TagsColumn, labels: Optional[str] = Labels,
    dev_fraction: float = DevFraction,
):
    """Distil a teacher into a (layer-reduced, optionally quantized) student with one-stage KD."""
    from .pipeline import distill as run
    from .recipe import QuantConfig, Recipe

    task, data = _own_data(task, train_file, dev_file, dataset, dataset_config, task_type, text_column,
                           text_pair_column, label_column, tokens_column, tags_column, labels, dev_fraction, seed)
    weight_bits = _scheme_bits(weight_scheme, weight_bits)
    quant = (QuantConfig(weight_bits=weight_bits, activation_bits=activation_bits or None, weight_scheme=weight_scheme,
                         **({"groups": _parse_groups(groups)} if groups is not None else {}))
             if weight_bits else None)
    cfg = _train_overrides(Recipe().qat, epochs, lr, batch_size, max_steps, eval_steps, max_length, seed,
                           warmup_epochs, group_by_length)
    if latent_lr_scale is not None:
        cfg = replace(cfg, latent_lr_scale=latent_lr_scale)
    summary = run(teacher, task, output, str(glue_dir) if glue_dir else None, student=student,
                  layers=_parse_layers(layers), quant=quant, config=cfg,
                  train_file=str(augment) if augment else None, resume=resume, data=data)
    typer.echo(json.dumps(summary["dev"], indent=1))


@app.command()
@_friendly_errors
def evaluate(
    model_dir: str = typer.Argument(..., help="a checkpoint folder (e.g. RUN/quantized/model)"),
    task: Optional[str] = typer.Option(None, help="GLUE task (or your own data: --train-file / --dataset)"),
    glue_dir: Optional[Path] = GlueDir,
    train_file: Optional[Path] = TrainFile, dev_file: Optional[Path] = DevFile, dataset: Optional[str] = Dataset,
    dataset_config: Optional[str] = DatasetConfig, task_type: str = TaskType, text_column: str = TextColumn,
    text_pair_column: Optional[str] = TextPairColumn, label_column: str = LabelColumn,
    tokens_column: str = TokensColumn, tags_column: str = TagsColumn, labels: Optional[str] = Labels,
    dev_fraction: float = DevFraction, seed: Optional[int] = Seed,
):
    """Dev metrics of a checkpoint (with your own data: the same data options and --seed as in training, so
    that the labels and a --dev-fraction split are the same)."""
    from .pipeline import evaluate as run

    task, data = _own_data(task, train_file, dev_file, dataset, dataset_config, task_type, text_column,
                           text_pair_column, label_column, tokens_column, tags_column, labels, dev_fraction, seed)
    typer.echo(json.dumps(run(model_dir, task, str(glue_dir) if glue_dir else None, data=data), indent=1))


@app.command()
@_friendly_errors
def augment(
    task: str = typer.Option(..., help="GLUE task whose train set is augmented"),
    output: Path = typer.Option(..., help="folder for the augmented data (then usable as --glue-dir)"),
    glue_dir: Optional[Path] = GlueDir,
    copies: Optional[int] = typer.Option(None, help="augmented copies per example (default 30; 20 for SST-2/QNLI)"),
    model: Optional[str] = typer.Option(None, help="teacher/model folder: tokenizer and embedding-neighbour fallback"),
    mlm: Optional[str] = typer.Option(None, help="a masked language model for single-piece words"),
    glove: Optional[Path] = typer.Option(None, help="GloVe-format word vectors for multi-piece words"),
    both: bool = typer.Option(False, help="augment both sentences of a pair (default: the first)"),
    seed: int = typer.Option(0, help="random seed (same seed, same file)"),
    top_k: int = typer.Option(15, help="candidates per word"),
    prob: float = typer.Option(0.4, help="replacement probability per word"),
):
    """TinyBERT-style data augmentation of a task's training set (works offline)."""
    from .augment import augment_cmd

    augment_cmd(task, glue_dir, output, copies=copies, model=model, mlm=mlm, glove=glove, both=both, seed=seed,
                top_k=top_k, prob=prob)


@app.command()
@_friendly_errors
def export(
    run_dir: Path = typer.Argument(..., help="a run folder (its final checkpoint) or a checkpoint folder"),
    out_dir: Path = typer.Argument(..., help="folder for the packed model"),
    fp_dtype: str = typer.Option("fp16", help="full-precision tensors: fp16 or fp32"),
    int8_extras: bool = typer.Option(False, help="position embeddings and pooler in 8 bits"),
    ternary_packing: str = typer.Option("base3", help="ternary weights: base3 (1.6 bits) or 2bit"),
):
    """Write the compressed model as it really is: one safetensors file at 1-2 bits per weight."""
    from .packed.cli import export_cmd

    export_cmd(run_dir, out_dir, fp_dtype=fp_dtype, int8_extras=int8_extras, ternary_packing=ternary_packing)


@app.command()
@_friendly_errors
def size(path: Path = typer.Argument(..., help="a packed model file or folder")):
    """Bytes per class of tensors and the ratio against FP32."""
    from .packed.cli import size_cmd

    size_cmd(path)


@app.command()
@_friendly_errors
def predict(
    model_dir: Path = typer.Argument(..., help="a packed model folder (from `xtc export`)"),
    input: Path = typer.Option(Path("-"), "--input", "-i", help="sentences, one per line (pairs: tab-separated); - = stdin"),
    output: Path = typer.Option(Path("-"), "--output", "-o", help="TSV of labels and scores; - = stdout"),
    batch_size: int = typer.Option(32, help="sentences per batch"),
    max_length: Optional[int] = typer.Option(None, help="maximum tokens per input, longer ones are cut "
                                                        "(default: 128, or the model's limit if lower)"),
):
    """Run a packed model on your sentences, without any training code."""
    from .packed.cli import predict_cmd

    predict_cmd(model_dir, input=input, output=output, batch_size=batch_size, max_length=max_length)


def main():
    try:
        app()
    finally:
        # under torchrun the Trainer leaves its process group open; closing it avoids gloo aborting at exit
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
