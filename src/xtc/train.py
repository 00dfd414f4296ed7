"""Training: transformers' Trainer wired to XTC's distillation. No algorithm lives here.

``train_stage`` runs one stage (plain fine-tuning when ``teacher`` is None, knowledge
distillation otherwise) with AdamW, linear warm-up and decay, gradient clipping, dev evaluation
every N steps with the best checkpoint kept, resumable checkpoints, progress bars and a JSON-lines
log of losses and metrics.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import time
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path
from typing import Optional, Sequence

import torch
from transformers import ProgressCallback, Trainer, TrainerCallback, TrainingArguments

from .checkpoints import resume_point, truncate_log
from .config import TrainConfig  # noqa: F401  (xtc.train.TrainConfig, as before)
from .data import TaskSpec, TokenizedDataset, compute_metrics, make_collator
from .distillation import DistillConfig, Distiller
from .errors import NonFiniteLossError
from .io import write_json_atomic
from .modules import QuantEmbedding, QuantLinear
from .progress import StageProgress
from .quantizers import get_weight_quantizer

SELECT_SPLIT = "select"  # the held-out part of the training set that picks the checkpoint (select_on=train:F)


class WeightAverage(TrainerCallback):
    """Uniform average of the trainable parameters over the last ``fraction`` of the steps, written
    into the model at the last step (``TrainConfig.average_last``)."""

    def __init__(self, fraction: float):
        self.fraction, self.sums, self.count = fraction, None, 0

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if model is None or state.global_step <= round(state.max_steps * (1 - self.fraction)):
            return
        params = [p for p in model.parameters() if p.requires_grad]
        with torch.no_grad():
            if self.sums is None:
                self.sums = [p.detach().float().clone() for p in params]
            else:
                for total, p in zip(self.sums, params):
                    total.add_(p.detach().float())
            self.count += 1
            if state.global_step >= state.max_steps:  # before this step's evaluation and checkpoint
                for total, p in zip(self.sums, params):
                    p.copy_((total / self.count).to(p.dtype))


def _binary_linears(model) -> list:
    """The quantized linears with XTC's binary weights (what ``TrainConfig.ternary_first`` switches)."""
    return [m for m in model.modules()
            if isinstance(m, QuantLinear) and m.weight_bits == 1 and m.weight_scheme == "binary"]


class TernaryFirst(TrainerCallback):
    """Progressive bit reduction (``TrainConfig.ternary_first``): the binary linears quantize their latent
    weights ternary for the first ``fraction`` of the steps and binary after; the evaluations before the
    switch are skipped (each would score a ternary model that is never kept). Set from the step count, so
    a resumed run is in the right part."""

    def __init__(self, linears: list, fraction: float):
        self.linears, self.fraction = linears, fraction

    def _ternary(self, state) -> bool:
        return state.global_step < round(state.max_steps * self.fraction)

    def _switch(self, state) -> bool:
        ternary = self._ternary(state)
        bits, scheme = (2, "ternary") if ternary else (1, "binary")
        for m in self.linears:
            if m.weight_bits != bits:
                m.weight_bits, m.weight_scheme, m._quantize_weight = bits, scheme, get_weight_quantizer(scheme)
        return ternary

    def on_train_begin(self, args, state, control, **kwargs):
        self._switch(state)

    def on_step_end(self, args, state, control, **kwargs):
        if self._switch(state):
            control.should_evaluate = False

    def on_epoch_end(self, args, state, control, **kwargs):
        if self._ternary(state):
            control.should_evaluate = False


class JsonLinesLog(TrainerCallback):
    """Appends every log record (losses, learning rate, dev metrics) to ``log.jsonl``."""

    def __init__(self, path: Path):
        self.path = path

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            with open(self.path, "a") as f:
                f.write(json.dumps({"step": state.global_step, "epoch": state.epoch, **logs}) + "\n")


class StepTimer(TrainerCallback):
    """Wall time of each optimizer step (forward, backward, clipping, update; evaluations excluded)."""

    def __init__(self):
        self.times: list[float] = []
        self._start = None

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if self._start is not None:
            self.times.append(time.perf_counter() - self._start)

    def median(self) -> Optional[float]:
        return round(statistics.median(self.times), 4) if self.times else None


class XTCTrainer(Trainer):
    """Trainer whose training loss is XTC's KD loss when a teacher is given.

    Evaluation never runs the teacher: in eval mode the student's own outputs are returned.
    """

    def __init__(self, *args, teacher=None, layer_map: Sequence[int] = (), distill_config=None,
                 latent_lr_scale: float = 1.0, evaluator=None, bf16: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.bf16 = bf16  # autocast the training forward (the teacher's too); evaluation stays FP32
        self.latent_lr_scale = latent_lr_scale
        self.evaluator = evaluator  # a task scored without logits (embeddings): fn(model, dev_set) -> metrics
        self.distiller = None
        if teacher is not None:
            teacher.to(self.args.device)
            self.distiller = Distiller(teacher, self.model, layer_map, distill_config or DistillConfig())
        self._parts = defaultdict(float)
        self._parts_count = 0

    def create_optimizer(self, model=None):
        """Trainer's AdamW, with the latent weights of quantized modules in groups of their own at
        ``latent_lr_scale`` x the learning rate (the scheduler, built next, scales every group alike)."""
        fresh = self.optimizer is None
        optimizer = super().create_optimizer(model)
        if not fresh or self.latent_lr_scale == 1.0:
            return optimizer
        latent = {id(m.weight) for m in (model or self.model).modules() if isinstance(m, (QuantLinear, QuantEmbedding))}
        groups = []
        for group in optimizer.param_groups:
            inside = [p for p in group["params"] if id(p) in latent]
            rest = [p for p in group["params"] if id(p) not in latent]
            if rest:
                groups.append({**group, "params": rest})
            if inside:
                groups.append({**group, "params": inside, "lr": group["lr"] * self.latent_lr_scale})
        optimizer.param_groups.clear()
        for group in groups:
            optimizer.add_param_group(group)
        return optimizer

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        autocast = torch.autocast(self.args.device.type, dtype=torch.bfloat16, enabled=self.bf16 and model.training)
        if self.distiller is None or not model.training:
            with autocast:
                outputs = model(**inputs)
            loss = outputs.loss
        else:
            self.distiller.student = model  # the (possibly wrapped) model being trained
            with autocast:
                loss, outputs, parts = self.distiller(**inputs)
            for k, v in parts.items():
                self._parts[k] += v
            self._parts_count += 1
        if model.training and not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"loss became {float(loss.detach())} at step {self.state.global_step + 1}; stopped, the last good "
                f"checkpoint is kept in {self.args.output_dir} (try a lower learning rate)"
            )
        return (loss, outputs) if return_outputs else loss

    def evaluate(self, *args, **kwargs):
        metrics = super().evaluate(*args, **kwargs) if self.evaluator is None else self._evaluate_with_task()
        # weights blown up by a step whose own loss was still finite show here first; raising before
        # the checkpoint of this step is saved keeps the previous (good) one as the last
        bad = {k: v for k, v in metrics.items()
               if k.endswith("_loss") and isinstance(v, float) and not math.isfinite(v)}
        if bad and self.state.global_step > 0:
            name, value = next(iter(bad.items()))
            raise NonFiniteLossError(
                f"dev loss ({name}) became {value} at step {self.state.global_step}; stopped, the last good "
                f"checkpoint is kept in {self.args.output_dir} (try a lower learning rate)"
            )
        return metrics

    def _evaluate_with_task(self) -> dict[str, float]:
        """The task's own evaluation, logged and handed to the callbacks as Trainer.evaluate does."""
        start = time.time()
        scores = self.evaluator(self.model, self.eval_dataset)
        metrics = {f"eval_{k}": v for k, v in scores.items()}
        metrics["eval_runtime"] = round(time.time() - start, 4)
        metrics["epoch"] = self.state.epoch
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    def log(self, logs, *args, **kwargs):
        if self._parts_count and "loss" in logs:  # add the mean of each KD term since the last log
            for k, v in self._parts.items():
                logs[f"loss_{k}"] = round(v / self._parts_count, 6)
            self._parts.clear()
            self._parts_count = 0
        super().log(logs, *args, **kwargs)


SELECTION_KEY = "selection"  # the logged dev value that picks the best checkpoint


def _with_selection(task: TaskSpec, metrics: dict[str, float]) -> dict[str, float]:
    """``metrics`` plus the mean of the task's selection metrics (logged as ``eval_selection``)."""
    return {**metrics, SELECTION_KEY: sum(metrics[m] for m in task.selection_metrics) / len(task.selection_metrics)}


def _task_evaluator(task: TaskSpec, tokenizer):
    """The task's own evaluation (with the selection value added), or None for logits + compute."""
    evaluate = task.evaluator(tokenizer)
    return None if evaluate is None else (lambda model, dev: _with_selection(task, evaluate(model, dev)))


def _dev_sets(task: TaskSpec, dev: dict[str, TokenizedDataset]):
    return dev if len(dev) > 1 else next(iter(dev.values()))


def warmup_steps(config: TrainConfig, steps_per_epoch: int, total_steps: int) -> int:
    """The linear warm-up's length: ``warmup_epochs``, at most ``max_warmup_fraction`` of the stage's steps."""
    return min(round(config.warmup_epochs * steps_per_epoch), round(config.max_warmup_fraction * total_steps))


def train_stage(model, tokenizer, task: TaskSpec, train_set: TokenizedDataset,
                dev_sets: dict[str, TokenizedDataset], output_dir: Path, config: TrainConfig,
                teacher=None, layer_map: Sequence[int] = (), distill_config: DistillConfig | None = None,
                resume: bool = False, stage: str | None = None, teacher_tokenizer=None) -> dict:
    """Train ``model`` and leave its best dev checkpoint in ``output_dir/model``.

    Returns a summary: best dev metrics, steps, epochs, wall time. ``stage`` names the progress
    lines (teacher, reduce, qat; default: the folder's name). ``teacher_tokenizer``: the teacher's own,
    when it differs from the student's (``train_set`` then carries ``teacher_*`` inputs).
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    # batch_size is per process: under torchrun / accelerate launch one step takes
    # batch_size x WORLD_SIZE examples, so an epoch has fewer steps
    world = int(os.environ.get("WORLD_SIZE", "1"))
    steps_per_epoch = math.ceil(len(train_set) / (config.batch_size * world))
    total_steps = config.max_steps if config.max_steps > 0 else math.ceil(steps_per_epoch * config.epochs)
    warmup = warmup_steps(config, steps_per_epoch, total_steps)
    eval_steps = config.eval_steps or steps_per_epoch
    # the selection metric of a task with two dev sets (MNLI) is the first one's; with select_on=train:F
    # the first set is the held-out part of the training set; with select_on=last no set chooses
    prefix = f"{next(iter(dev_sets))}_" if len(dev_sets) > 1 else ""
    select_last = config.select_on == "last"
    args = TrainingArguments(
        output_dir=str(output_dir / "checkpoints"),
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.eval_batch_size,
        learning_rate=config.learning_rate,
        weight_decay=config.weight_decay,
        adam_epsilon=config.adam_epsilon,
        max_grad_norm=config.max_grad_norm,
        max_steps=total_steps,
        lr_scheduler_type="linear",
        warmup_steps=warmup,
        eval_strategy="steps",
        eval_steps=eval_steps,
        save_strategy="steps",
        save_steps=eval_steps,
        save_total_limit=1,  # with load_best_model_at_end this keeps the best and the latest
        load_best_model_at_end=not select_last,
        metric_for_best_model=prefix + SELECTION_KEY,
        greater_is_better=True,
        logging_steps=config.logging_steps,
        seed=config.seed,
        data_seed=config.seed,
        train_sampling_strategy="group_by_length" if config.group_by_length else "random",
        report_to=[],
        dataloader_num_workers=0,
        use_cpu=not torch.cuda.is_available(),
    )
    log_path = output_dir / "log.jsonl"
    timer = StepTimer()
    trainer = XTCTrainer(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=_dev_sets(task, dev_sets),
        data_collator=make_collator(tokenizer, max_length=config.max_length if config.pad_to_max_length else None,
                                    teacher_tokenizer=teacher_tokenizer),
        processing_class=tokenizer,
        compute_metrics=lambda p: _with_selection(task, compute_metrics(task, p.predictions, p.label_ids)),
        evaluator=_task_evaluator(task, tokenizer),
        callbacks=[JsonLinesLog(log_path), timer],
        teacher=teacher,
        layer_map=layer_map,
        distill_config=distill_config,
        latent_lr_scale=config.latent_lr_scale,
        bf16=config.bf16,
    )
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(StageProgress(stage or output_dir.name))
    if config.dropout is not None:
        set_dropout(model, config.dropout)
    if config.average_last > 0:
        trainer.add_callback(WeightAverage(config.average_last))
    # (stages without binary linears, e.g. the FP32 teacher of a recipe whose options set every stage, ignore it)
    binary = _binary_linears(model) if config.ternary_first > 0 else []
    if binary:
        trainer.add_callback(TernaryFirst(binary, config.ternary_first))
    resume_from = None
    if resume:
        # the newest *complete* checkpoint (one cut short by a kill is deleted, on the main
        # process first); the log keeps only the records up to it, as they are logged again
        with args.main_process_first(local=False, desc="finding the last complete checkpoint"):
            main = trainer.is_world_process_zero()
            resume_from = resume_point(output_dir / "checkpoints", cleanup=main)
            if main:
                truncate_log(log_path, int(resume_from.name.rsplit("-", 1)[-1]) if resume_from else 0)
    start = time.time()
    trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    wall = time.time() - start
    final = trainer.evaluate()  # the kept checkpoint (the best one, reloaded by load_best_model_at_end)
    model_dir = output_dir / "model"
    trainer.save_model(str(model_dir))
    scores = {k[len("eval_"):]: v for k, v in final.items()
              if k.startswith("eval_") and not k.endswith(("_runtime", "_per_second", "loss", "epoch", SELECTION_KEY))}
    held_out = f"{SELECT_SPLIT}_"
    summary = {
        # dev metrics of the kept checkpoint (named as without a held-out set: "f1", or "dev_matched_..." for MNLI)
        "dev": _unprefixed({k: v for k, v in scores.items() if not k.startswith(held_out)},
                           [s for s in dev_sets if s != SELECT_SPLIT]) if SELECT_SPLIT in dev_sets else scores,
        "select": {k[len(held_out):]: v for k, v in scores.items() if k.startswith(held_out)} or None,
        "selected_on": config.select_on,
        "best_step": trainer.state.global_step if select_last else _best_step(trainer),
        "steps": trainer.state.global_step,
        "epochs": round(trainer.state.global_step / steps_per_epoch, 3),
        "train_wall_s": round(wall, 1),
        "s_per_step_median": timer.median(),
        "peak_rss_mb": _peak_rss_mb(),
        "config": asdict(config),
    }
    if trainer.is_world_process_zero():
        write_json_atomic(output_dir / "stage.json", summary)
    trainer.accelerator.wait_for_everyone()  # the next stage (every process) reads what was saved
    return summary


def set_dropout(model: torch.nn.Module, p: float) -> int:
    """Set the probability of every dropout module of ``model`` to ``p`` (``TrainConfig.dropout``);
    returns how many there were. The families xtc supports apply all their dropout (attention
    probabilities included) through ``nn.Dropout`` modules, so this reaches every one; the model's
    config keeps its own value, so a saved model trains with it again unless told otherwise."""
    found = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    for m in found:
        m.p = p
    return len(found)


def _unprefixed(scores: dict, dev_splits: list[str]) -> dict:
    """With one dev set beside the held-out one, its metrics carry its split name ("dev_f1"): drop it
    (two dev sets, MNLI's, keep their names, as they do without a held-out set)."""
    if len(dev_splits) != 1:
        return scores
    split = f"{dev_splits[0]}_"
    return {k[len(split):] if k.startswith(split) else k: v for k, v in scores.items()}


def _peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports ru_maxrss in KiB)."""
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _best_step(trainer) -> Optional[int]:
    ckpt = trainer.state.best_model_checkpoint
    return int(ckpt.rsplit("-", 1)[-1]) if ckpt else None
