"""Progress of a training stage, named by its stage (teacher, reduce, qat, eval).

In a terminal: tqdm bars that redraw in place. Anywhere else (a log file, a pipe, CI): one plain
line every ``XTC_PROGRESS_SECONDS`` seconds (default 30) and one per evaluation, with no carriage
returns or escape codes, so that a redirected log reads as text.
"""

from __future__ import annotations

import os
import sys
import time

from transformers import TrainerCallback


def _interactive() -> bool:
    return sys.stderr.isatty() and os.environ.get("TERM") != "dumb"


def quiet_library_bars() -> None:
    """Outside a terminal, transformers' own bars (loading weights, writing shards) go too: in a log
    file they are carriage returns and escape codes."""
    if not _interactive():
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


class StageProgress(TrainerCallback):
    """Replaces transformers' ProgressCallback: the same events, named by ``stage``."""

    def __init__(self, stage: str, interactive: bool | None = None, every_s: float | None = None):
        self.stage = stage
        self.interactive = _interactive() if interactive is None else interactive
        self.every_s = float(os.environ.get("XTC_PROGRESS_SECONDS", 30)) if every_s is None else every_s
        self.bar = self.eval_bar = None
        self.start = self.last_line = 0.0
        self.first_step = self.done = 0
        self.last_loss = None

    def _line(self, text: str) -> None:
        print(f"[{self.stage}] {text}", file=sys.stderr, flush=True)

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        self.start = self.last_line = time.time()
        self.first_step = self.done = state.global_step
        if self.interactive:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc=self.stage, dynamic_ncols=True)
        else:
            resumed = f", resumed at step {state.global_step}" if state.global_step else ""
            self._line(f"training for {state.max_steps} steps{resumed}")

    def on_step_end(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        if self.bar is not None:
            self.bar.update(state.global_step - self.done)
        self.done = state.global_step
        now = time.time()
        if not self.interactive and now - self.last_line >= self.every_s:
            self.last_line = now
            per_step = (now - self.start) / max(1, state.global_step - self.first_step)
            left = per_step * (state.max_steps - state.global_step)
            loss = f", loss {self.last_loss:.4g}" if self.last_loss is not None else ""
            self._line(f"step {state.global_step}/{state.max_steps} ({100 * state.global_step / state.max_steps:.0f}%), "
                       f"{per_step:.2f} s/step, about {_minutes(left)} left{loss}")

    def on_prediction_step(self, args, state, control, eval_dataloader=None, **kwargs):
        if state.is_world_process_zero and self.interactive and eval_dataloader is not None:
            if self.eval_bar is None:
                from tqdm.auto import tqdm

                self.eval_bar = tqdm(total=len(eval_dataloader), desc="eval", leave=False, dynamic_ncols=True)
            self.eval_bar.update(1)

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if not state.is_world_process_zero:
            return
        if self.eval_bar is not None:
            self.eval_bar.close()
            self.eval_bar = None
        shown = {k[5:]: v for k, v in (metrics or {}).items() if k.startswith("eval_") and isinstance(v, float)
                 and not k.endswith(("runtime", "per_second"))}
        text = ", ".join(f"{k} {v:.4f}" for k, v in shown.items())
        message = f"eval at step {state.global_step}: {text}"
        if self.bar is not None:
            self.bar.write(f"[{self.stage}] {message}")
        else:
            self._line(message)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.last_loss = float(logs["loss"])

    def on_train_end(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        else:
            self._line(f"done: {state.global_step} steps in {_minutes(time.time() - self.start)}")
