"""Quantizer ablation: XTC's binary and TWN ternary against BitNet b1.58 absmean ternary and learned step
size (LSQ), at one training budget, on MRPC and STS-B, with the proxy teacher (the local all-MiniLM-L6-v2
fine-tuned on the task; no layer reduction).

Every row is one quantization-aware KD run from the same fine-tuned teacher, same recipe (epochs, learning
rate, warm-up, batch, seed), only the weight scheme differs; activations are 8-bit in every row. One JSON
per run goes to ``benchmarks/results/ablation/<task>-<scheme>-w<bits>.json`` (and the teacher's to
``teacher-<task>.json``); a run whose JSON exists is skipped, so the script resumes where it stopped.
Models and checkpoints go to ``runs/ablation/`` (git-ignored); checkpoints are deleted after each run.

    python benchmarks/bench_ablation.py                       # all rows (hours on CPU; use the GPU)
    python benchmarks/bench_ablation.py --tasks mrpc --rows lsq:1,binary:1
    python benchmarks/bench_ablation.py --smoke               # 2 steps per stage, 64 examples: starts OK?

``--smoke`` (or any ``--max-steps``/``--limit``) writes everything under ``runs/ablation-smoke/`` (git-ignored,
results in its ``results/``), so that a smoke run never counts as a finished row nor lands in benchmarks/results.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SHARED = ROOT.parent / "shared"
# scheme:bits. 1 bit: XTC binary vs LSQ with sign levels; 2 bits (ternary levels): TWN vs absmean vs LSQ.
DEFAULT_ROWS = "binary:1,lsq:1,ternary:2,absmean:2,lsq:2"


def parse_rows(text: str) -> list[tuple[str, int]]:
    rows = []
    for item in text.split(","):
        scheme, _, bits = item.strip().partition(":")
        if not bits.isdigit():
            raise SystemExit(f"--rows: {item!r} is not scheme:bits (e.g. lsq:2)")
        rows.append((scheme, int(bits)))
    return rows


def environment() -> dict:
    import torch
    import transformers

    import xtc

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True,
                           cwd=ROOT)
    return {
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"cpu ({platform.machine()})",
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__, "transformers": transformers.__version__, "xtc": xtc.__version__,
        "commit": commit.stdout.strip() + ("+dirty" if dirty.stdout.strip() else ""),
        "python": platform.python_version(),
    }


def load_task_data(task_name: str, glue_dir: str, limit: int | None, seed: int):
    """``(task, train, {split: dev})`` of a GLUE task, optionally cut to ``limit`` examples (smoke runs)."""
    import random

    from xtc.data import get_task, load_split

    task = get_task(task_name)
    train = load_split(task, "train", glue_dir)
    dev = {split: load_split(task, split, glue_dir) for split in task.dev_splits}
    if limit:
        rng = random.Random(seed)
        train = rng.sample(train, min(limit, len(train)))
        dev = {k: rng.sample(v, min(limit, len(v))) for k, v in dev.items()}
    return task, train, dev


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(SHARED / "models" / "all-MiniLM-L6-v2"), help="the pre-trained model")
    ap.add_argument("--glue-dir", default=str(SHARED / "glue"))
    ap.add_argument("--tasks", default="mrpc,stsb")
    ap.add_argument("--rows", default=DEFAULT_ROWS, help=f"scheme:bits list (default {DEFAULT_ROWS})")
    ap.add_argument("--epochs", type=float, default=3.0, help="QAT budget of every row, in epochs")
    ap.add_argument("--teacher-epochs", type=float, default=3.0)
    ap.add_argument("--teacher", default=None,
                    help="an already fine-tuned teacher folder, {task} filled in (e.g. the GLUE table's "
                         "runs/bench/{task}-teacher-42/model); default: fine-tune one here")
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--warmup-epochs", type=float, default=None,
                    help="QAT warm-up (default: a third of the budget, 1 epoch of 3 as the reference's students)")
    ap.add_argument("--teacher-lr", type=float, default=5e-5)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--activation-bits", type=int, default=8)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--max-steps", type=int, default=None, help="cap every stage (smoke runs)")
    ap.add_argument("--limit", type=int, default=None, help="use this many train/dev examples (smoke runs)")
    ap.add_argument("--smoke", action="store_true", help="--max-steps 2 --limit 64: check that it starts")
    ap.add_argument("--out", default=None, help="results folder (default benchmarks/results/ablation)")
    ap.add_argument("--work-dir", default=None, help="models and checkpoints (default runs/ablation)")
    ap.add_argument("--keep-checkpoints", action="store_true")
    args = ap.parse_args(argv)
    if args.smoke:
        args.max_steps = args.max_steps or 2
        args.limit = args.limit or 64
    smoke = bool(args.max_steps or args.limit)
    suffix = "ablation-smoke" if smoke else "ablation"
    out = Path(args.out or (ROOT / "runs" / suffix / "results" if smoke else HERE / "results" / suffix))
    work = Path(args.work_dir or ROOT / "runs" / suffix)
    rows = parse_rows(args.rows)

    from xtc.io import write_json_atomic
    from xtc.pipeline import distill, finetune
    from xtc.recipe import QuantConfig
    from xtc.surgery import XTCConfig
    from xtc.train import TrainConfig

    if os.environ.get("XTC_NUM_THREADS"):  # share a busy machine fairly
        import torch

        torch.set_num_threads(int(os.environ["XTC_NUM_THREADS"]))
    for scheme, bits in rows:  # refuse a bad row before hours of training
        try:
            XTCConfig(weight_bits=bits, weight_scheme=scheme)
        except ValueError as e:
            raise SystemExit(f"--rows {scheme}:{bits}: {e}") from None
    env = environment()
    common = dict(batch_size=args.batch_size, max_length=args.max_length, seed=args.seed,
                  max_steps=args.max_steps or -1, eval_steps=args.max_steps or None)
    teacher_cfg = TrainConfig(epochs=args.teacher_epochs, learning_rate=args.teacher_lr, warmup_epochs=0.1, **common)
    warmup = args.warmup_epochs if args.warmup_epochs is not None else args.epochs / 3
    qat_cfg = TrainConfig(epochs=args.epochs, learning_rate=args.lr, warmup_epochs=warmup, **common)

    for task_name in [t.strip() for t in args.tasks.split(",") if t.strip()]:
        pending = [(s, b) for s, b in rows if not (out / f"{task_name}-{s}-w{b}.json").exists()]
        if not pending:
            print(f"{task_name}: all rows done", flush=True)
            continue
        data = load_task_data(task_name, args.glue_dir, args.limit, args.seed)
        task = data[0]
        teacher_dir = Path(args.teacher.format(task=task.name)).parent if args.teacher else work / task.name / "teacher"
        teacher_json = out / f"teacher-{task.name}.json"
        if args.teacher and not (teacher_dir / "stage.json").exists():
            raise SystemExit(f"--teacher {args.teacher}: no finished stage at {teacher_dir} (stage.json + model/)")
        if not (teacher_dir / "stage.json").exists():
            print(f"{task.name}: fine-tuning the teacher ({args.model})", flush=True)
            stage = finetune(args.model, None, teacher_dir, config=teacher_cfg, data=data)
            _drop_checkpoints(teacher_dir, args.keep_checkpoints)
        else:
            stage = json.loads((teacher_dir / "stage.json").read_text())
        write_json_atomic(teacher_json, {"task": task.name, "model": args.model, "dev": stage["dev"],
                                         "steps": stage["steps"], "train_wall_s": stage["train_wall_s"],
                                         "config": stage["config"], "smoke": smoke, **env})
        for scheme, bits in pending:
            name = f"{task.name}-{scheme}-w{bits}"
            print(f"{name}: quantization-aware KD", flush=True)
            run_dir = work / task.name / f"{scheme}-w{bits}"
            if run_dir.exists() and not (run_dir / "stage.json").exists():
                shutil.rmtree(run_dir)  # an interrupted run starts over (rows are independent)
            start = time.time()
            quant = QuantConfig(weight_bits=bits, activation_bits=args.activation_bits or None, weight_scheme=scheme)
            summary = distill(str(teacher_dir / "model"), None, run_dir, quant=quant, config=qat_cfg, data=data)
            _drop_checkpoints(run_dir, args.keep_checkpoints)
            result = {
                "task": task.name, "scheme": scheme, "weight_bits": bits, "activation_bits": args.activation_bits,
                "main_metric": task.main_metric, "dev": summary["dev"], "teacher_dev": stage["dev"],
                "best_step": summary["best_step"], "steps": summary["steps"], "epochs": summary["epochs"],
                "train_wall_s": summary["train_wall_s"], "wall_s": round(time.time() - start, 1),
                "model_dir": str(run_dir / "model"), "config": summary["config"], "smoke": smoke,
                "command": "python benchmarks/bench_ablation.py " + " ".join(sys.argv[1:] if argv is None else argv),
                **env,
            }
            write_json_atomic(out / f"{name}.json", result)
            m = task.main_metric
            print(f"{name}: dev {m} {summary['dev'].get(m, float('nan')):.4f} "
                  f"(teacher {stage['dev'].get(m, float('nan')):.4f})", flush=True)
    _table(out, rows, [t.strip() for t in args.tasks.split(",") if t.strip()])


def _drop_checkpoints(stage_dir: Path, keep: bool) -> None:
    if not keep:
        shutil.rmtree(stage_dir / "checkpoints", ignore_errors=True)


def _table(out: Path, rows, tasks) -> None:
    """A markdown table of the finished rows (main metric per task), printed and written next to the JSON."""
    from xtc.data import get_task

    lines = ["| scheme | bits | " + " | ".join(f"{t} ({get_task(t).main_metric})" for t in tasks) + " |",
             "|---|---|" + "---|" * len(tasks)]
    def cell(path: Path, task: str) -> str:
        """The task's main dev metric from one result file, or '-' while that run is missing."""
        if not path.exists():
            return "-"
        return f"{json.loads(path.read_text())['dev'].get(get_task(task).main_metric, float('nan')):.4f}"

    teacher = [cell(out / f"teacher-{t}.json", t) for t in tasks]
    lines.append("| teacher (FP32) | 32 | " + " | ".join(teacher) + " |")
    for scheme, bits in rows:
        cells = [cell(out / f"{t}-{scheme}-w{bits}.json", t) for t in tasks]
        lines.append(f"| {scheme} | {bits} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    if out.exists():
        (out / "table.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
