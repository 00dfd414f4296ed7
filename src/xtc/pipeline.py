"""The XTC pipeline as stages: fine-tune the teacher, reduce layers + distil in FP32, quantize +
distil from the original teacher. Each stage reads and writes a folder of the run, so any stage
runs alone (``finetune``, ``distill``, ``evaluate``) or as part of ``compress``.

Run folder::

    RUN/config.yaml          the resolved recipe
    RUN/teacher/             fine-tuned teacher (skipped when a teacher is given)
    RUN/reduced/             FP32 layer-reduced student (only with layers)
    RUN/quantized/           the compressed student
    RUN/<stage>/model/       best dev checkpoint (transformers folder: from_pretrained loads it)
    RUN/<stage>/log.jsonl    losses, learning rate and dev metrics
    RUN/<stage>/stage.json   the stage's summary (written last: its presence means "done")
    RUN/results.json         see README ("results.json")
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Optional, Sequence

import torch

from . import __version__
from .data import TaskSpec, get_task, load_split, make_collator, pad_concat, read_tsv
from .data.embedding import EMBEDDING
from .distillation import DistillConfig
from .errors import ConfigError, ModelLoadError, RunFolderError  # noqa: F401  (re-exported: raised here, defined there)
from .io import check_run_folder, prepare_run_folder, write_json_atomic, write_text_atomic
from .models import check_model, load_model, load_tokenizer
from .progress import quiet_library_bars
from .recipe import Recipe
from .surgery import XTCConfig, is_quantized, layer_map, quantize_, reduce_layers
from .train import SELECT_SPLIT, TrainConfig, train_stage


def load_data(task: TaskSpec, tokenizer, glue_dir: Optional[str], max_length: int,
              train_file: Optional[str] = None, with_train: bool = True, examples=None,
              select_fraction: Optional[float] = None, seed: int = 42):
    """Tokenized train set (from ``train_file`` if given, e.g. augmented) and dev set(s).

    ``examples``: pre-loaded ``(train_examples, {split: dev_examples})`` (your own data, see
    :func:`xtc.data.load_custom_task`) instead of the GLUE files. ``select_fraction``: that part of
    the training set (drawn with ``seed``) is held out, not trained on, and comes first among the
    evaluation sets as ``"select"``, so that it picks the checkpoint."""
    if examples is not None:
        if train_file:
            raise ConfigError("a train file (augmented data) and pre-loaded data were both given; pass one")
        train_examples, dev_examples = examples[0], dict(examples[1])
    else:
        train_examples = None
        if with_train:
            train_examples = read_tsv(task, train_file) if train_file else load_split(task, "train", glue_dir)
        dev_examples = {split: load_split(task, split, glue_dir) for split in task.dev_splits}
    if with_train and select_fraction:
        from .data import split_dev

        if not task.can_hold_out:
            raise ConfigError(f"select_on train:FRACTION needs labelled training data; the {task.name} task has none: "
                              "choose the checkpoint with select_on dev or last")

        train_examples, held_out = split_dev(train_examples, select_fraction, seed, where="the training set")
        dev_examples = {SELECT_SPLIT: held_out, **dev_examples}
    train = task.dataset(train_examples, tokenizer, max_length) if with_train else None
    return train, {split: task.dataset(ex, tokenizer, max_length) for split, ex in dev_examples.items()}


def _with_data(task, data):
    """``(task, examples)``: the task and examples of pre-loaded ``data = (task, train, {split: dev})``,
    or the GLUE task named by ``task`` and None (its files are read later)."""
    if data is not None:
        return data[0], (data[1], data[2])
    return (get_task(task) if isinstance(task, str) else task), None


def _has_checkpoint(folder: Path) -> bool:
    return any(folder.glob("**/checkpoints/checkpoint-*")) or any(folder.glob("**/stage.json"))


@contextlib.contextmanager
def _removed_if_failed_early(folder: Path, new: bool):
    """A run that fails before its first checkpoint leaves no folder behind (so that the corrected
    rerun is not refused as "an unfinished run"); once a checkpoint exists, the folder stays for
    ``--resume``."""
    try:
        yield
    except BaseException:
        if new and folder.exists() and not _has_checkpoint(folder):
            shutil.rmtree(folder, ignore_errors=True)
        raise


def _stage_folder(output_dir: Path, resume: bool, overwrite: bool) -> bool:
    """Prepare a stage's folder (first process only under torchrun); True if it is new."""
    if int(os.environ.get("RANK", "0")) != 0:
        return False
    return prepare_run_folder(output_dir, resume, overwrite, done_marker="stage.json")


def finetune(model: str, task: str | TaskSpec | None, output_dir: str | Path, glue_dir: Optional[str] = None,
             config: TrainConfig = TrainConfig(warmup_epochs=0.1), train_file: Optional[str] = None,
             resume: bool = False, data=None, overwrite: bool = False) -> dict:
    """Stage 1: fine-tune ``model`` on the task (cross-entropy / MSE on labels). FP32.

    ``data``: ``(task, train_examples, {split: dev_examples})`` of your own data (from
    :func:`xtc.data.load_custom_task` or :func:`xtc.data.load_token_task`);
    ``task`` is then ignored (pass None) and no GLUE file is read. Same for the other stages.
    ``output_dir`` holding a finished stage is replaced only with ``overwrite``, an unfinished one
    continued only with ``resume``; every input is checked before anything is written. ``resume`` on a
    finished stage returns its summary and leaves the folder as it is (restarted at its last checkpoint,
    the Trainer would evaluate and save again, and step once past the end when the budget ends inside
    an epoch)."""
    task, examples = _with_data(task, data)
    output_dir = Path(output_dir)
    quiet_library_bars()
    from .validate import check_stage_inputs

    # any classifier fine-tunes; it must exist and be readable
    check_stage_inputs(model, "model", task, glue_dir, train_file, data, supported_only=False)
    check_run_folder(output_dir, resume, overwrite, done_marker="stage.json")
    if resume and not overwrite and (done := _stage_done(output_dir)):
        return done
    torch.manual_seed(config.seed)
    tokenizer = load_tokenizer(model)
    net = load_model(model, task)
    train, dev = load_data(task, tokenizer, glue_dir, config.max_length, train_file, examples=examples,
                           select_fraction=config.select_fraction, seed=config.seed)
    new = _stage_folder(output_dir, resume, overwrite)
    with _removed_if_failed_early(output_dir, new):
        return train_stage(net, tokenizer, task, train, dev, output_dir, config, resume=resume, stage="teacher")


def distill(teacher: str, task: str | TaskSpec | None, output_dir: str | Path, glue_dir: Optional[str] = None,
            student: Optional[str] = None, layers: Optional[Sequence[int]] = None,
            quant: Optional[XTCConfig] = None, config: TrainConfig = TrainConfig(),
            distill_config: DistillConfig = DistillConfig(), train_file: Optional[str] = None,
            resume: bool = False, data=None, overwrite: bool = False) -> dict:
    """Distil ``teacher`` into a student: the teacher itself (default), a given ``student``
    folder, or (with ``layers``) a copy of the chosen layers; quantized when ``quant`` is given.

    The student is trained with one-stage KD (no labels unless ``distill_config.label_weight``).
    The output folder follows :func:`finetune`'s rule.
    """
    task, examples = _with_data(task, data)
    output_dir = Path(output_dir)
    quiet_library_bars()
    from .validate import check_stage_inputs

    check_stage_inputs(teacher, "teacher", task, glue_dir, train_file, data, layers=layers, quant=quant,
                       student=student)
    check_run_folder(output_dir, resume, overwrite, done_marker="stage.json")
    if resume and not overwrite and (done := _stage_done(output_dir)):
        return done
    torch.manual_seed(config.seed)
    tokenizer = teacher_tokenizer = load_tokenizer(teacher)
    student_tokenizer = load_tokenizer(student) if student is not None else None
    if student_tokenizer is not None and not same_tokenizer(student_tokenizer, tokenizer):
        # a student of another family (MiniLM under an MPNet teacher): each reads its own tokens, and
        # only the predictions pair up, so the attention and hidden-state terms are switched off
        tokenizer = student_tokenizer
        distill_config = dataclasses.replace(distill_config, att_weight=0.0, hid_weight=0.0)
        logging.getLogger("xtc").warning("the student %s tokenizes differently from the teacher %s: distilling "
                                         "the predictions only (att_weight=0, hid_weight=0)", student, teacher)
    else:
        teacher_tokenizer = None
    teacher_model = load_model(teacher, task)
    if student is not None:
        net = load_model(student, task)
    else:
        net = load_model(teacher, task)  # a fresh copy; the teacher object stays untouched
    if layers:
        net = reduce_layers(net, layers)
    if quant is not None:
        quantize_(net, quant)
    train, dev = load_data(task, tokenizer, glue_dir, config.max_length, train_file, examples=examples,
                           select_fraction=config.select_fraction, seed=config.seed)
    if teacher_tokenizer is not None:  # the same examples, as the teacher tokenizes them
        from .data.batches import WithTeacherInputs

        teacher_view, _ = load_data(task, teacher_tokenizer, glue_dir, config.max_length, train_file,
                                    examples=examples, select_fraction=config.select_fraction, seed=config.seed)
        train = WithTeacherInputs(train, teacher_view)
    new = _stage_folder(output_dir, resume, overwrite)
    with _removed_if_failed_early(output_dir, new):
        return train_stage(net, tokenizer, task, train, dev, output_dir, config, teacher=teacher_model,
                           layer_map=layer_map(net, teacher_model), distill_config=distill_config, resume=resume,
                           stage="qat" if quant is not None or is_quantized(net) else "reduce",
                           teacher_tokenizer=teacher_tokenizer)


def same_tokenizer(a, b) -> bool:
    """Whether two tokenizers turn text into the same ids (same vocabulary and special tokens)."""
    return (type(a).__name__ == type(b).__name__ and a.get_vocab() == b.get_vocab()
            and a.all_special_ids == b.all_special_ids)


@torch.no_grad()
def evaluate(model_dir: str, task: str | TaskSpec | None, glue_dir: Optional[str] = None, batch_size: int = 128,
             max_length: int = 128, data=None) -> dict[str, dict[str, float]]:
    """Dev metrics of a checkpoint (quantized or not), per dev split."""
    task, examples = _with_data(task, data)
    tokenizer = load_tokenizer(model_dir)
    net = load_model(model_dir, task).eval()
    _, dev = load_data(task, tokenizer, glue_dir, max_length, with_train=False, examples=examples)
    evaluator = task.evaluator(tokenizer)
    if evaluator is not None:  # scored without logits (sentence embeddings)
        return {split: evaluator(net, dataset) for split, dataset in dev.items()}
    collate = make_collator(tokenizer)
    results = {}
    for split, dataset in dev.items():
        logits, labels = [], []
        for start in range(0, len(dataset), batch_size):
            batch = collate([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
            labels.append(batch.pop("labels"))
            logits.append(net(**batch).logits)
        # token classification: batches differ in length, padded (labels with -100, never scored)
        results[split] = task.compute(pad_concat([x.numpy() for x in logits], -100.0),
                                      pad_concat([y.numpy() for y in labels], -100))
    return results


def _stage_done(stage_dir: Path) -> Optional[dict]:
    marker = stage_dir / "stage.json"
    if not marker.exists():
        return None
    try:
        summary = json.loads(marker.read_text())
        if isinstance(summary, dict) and isinstance(summary.get("dev"), dict):
            return summary
    except (OSError, ValueError):
        pass
    raise RunFolderError(f"{marker} is damaged (not the stage summary xtc writes); delete it to train that stage "
                         "again with --resume, or start over with --overwrite")


def compress(recipe: Recipe, output_dir: str | Path, resume: bool = False, overwrite: bool = False,
             data=None) -> dict:
    """The whole pipeline; returns (and writes) ``results.json``.

    ``data``: ``(task, train_examples, {split: dev_examples})`` of your own data; the recipe's task,
    glue_dir and train_file are then not used."""
    output_dir = Path(output_dir)
    if data is None and recipe.task == EMBEDDING:  # the embedder's own pooling; sentences, not labels
        from .data.embedding import load_embedding_task

        check_model(recipe.teacher or recipe.model, "teacher" if recipe.teacher else "model")
        data = load_embedding_task(recipe.teacher or recipe.model, recipe.train_file, recipe.glue_dir)
        stages_recipe = dataclasses.replace(recipe, train_file=None)  # its sentences are in data now
    else:
        stages_recipe = recipe
    task = data[0] if data is not None else get_task(recipe.task)
    from .validate import check_compress_inputs

    check_compress_inputs(recipe, task, data=data)
    check_run_folder(output_dir, resume, overwrite, done_marker="results.json")
    # under torchrun / accelerate launch only the first process prepares the folder and writes
    # files (the others would see its config.yaml and call the run "unfinished")
    main = int(os.environ.get("RANK", "0")) == 0
    new = False
    if main:
        new = prepare_run_folder(output_dir, resume, overwrite, done_marker="results.json")
        write_text_atomic(output_dir / "config.yaml", recipe.to_yaml())
    with _removed_if_failed_early(output_dir, new):
        return _compress_stages(stages_recipe, output_dir, task, resume, data, main)


def _compress_stages(recipe: Recipe, output_dir: Path, task, resume: bool, data, main: bool) -> dict:
    start = time.time()
    stages: dict[str, dict] = {}

    def run(name: str, fn, **kwargs) -> dict:
        stage_dir = output_dir / name
        done = _stage_done(stage_dir) if resume else None
        stages[name] = done or fn(output_dir=stage_dir, resume=resume, **kwargs)
        return stages[name]

    common = dict(task=task, glue_dir=recipe.glue_dir, train_file=recipe.train_file, data=data)
    with_seed = lambda cfg: TrainConfig(**{**cfg.__dict__, "seed": recipe.seed})  # noqa: E731
    if recipe.teacher or not task.fine_tunes_teacher:  # given, or the pre-trained model is the teacher
        teacher_dir = recipe.teacher or recipe.model
        stages["teacher"] = {"dev": evaluate(teacher_dir, task, recipe.glue_dir, data=data)[task.dev_splits[0]],
                             "given": teacher_dir}
    else:
        run("teacher", finetune, model=recipe.model, config=with_seed(recipe.finetune), **common)
        teacher_dir = str(output_dir / "teacher" / "model")
    student = None
    if recipe.layers or recipe.student:  # a smaller FP32 student first: copied layers or a smaller model
        run("reduced", distill, teacher=teacher_dir, layers=recipe.layers, student=recipe.student, quant=None,
            config=with_seed(recipe.reduce), distill_config=recipe.distill, **common)
        student = str(output_dir / "reduced" / "model")
    final_stage = "reduced" if recipe.quant is None else "quantized"
    if recipe.quant is not None:
        run("quantized", distill, teacher=teacher_dir, student=student, quant=recipe.quant,
            config=with_seed(recipe.qat), distill_config=recipe.distill, **common)
    final = stages.get(final_stage) or stages["teacher"]
    results = {
        "task": task.name,
        "metric_names": list(task.metrics),
        "main_metric": task.main_metric,
        "teacher": _flat_dev(stages["teacher"]),
        "compressed": _flat_dev(final),
        "weight_bits": recipe.quant.weight_bits if recipe.quant else 32,
        "activation_bits": (recipe.quant.activation_bits if recipe.quant else None),
        "embedding_bits": recipe.quant.word_embedding_bits if recipe.quant else None,
        "layers": recipe.layers,
        "num_layers": len(recipe.layers) if recipe.layers else None,
        "student": recipe.student,
        "steps": {k: v.get("steps") for k, v in stages.items() if "steps" in v},
        "epochs": {k: v.get("epochs") for k, v in stages.items() if "epochs" in v},
        "train_wall_s": {k: v.get("train_wall_s") for k, v in stages.items() if "train_wall_s" in v},
        "wall_s": round(time.time() - start, 1),
        "selected_on": {k: v.get("selected_on", "dev") for k, v in stages.items() if "steps" in v},
        "model_dir": str(output_dir / final_stage / "model") if final is not stages["teacher"] else teacher_dir,
        "xtc_version": __version__,
    }
    if main:
        write_json_atomic(output_dir / "results.json", results)
    return results


def _flat_dev(stage: dict) -> dict[str, float]:
    return {k: round(float(v), 6) for k, v in stage["dev"].items()}
