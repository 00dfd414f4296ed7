"""The reproduction table of issue 5, one unit (task, row, seed) at a time.

Each unit writes benchmarks/results/glue/TASK-ROW-SEED.json when it finishes; a unit whose file
exists is skipped, so the table fills up across sessions. Models go to runs/bench/ (not committed).

    python benchmarks/run_glue.py --tasks mrpc stsb --rows teacher 6l_w1a8 --seeds 42
    python benchmarks/make_table.py          # -> benchmarks/README.md table + plot

Rows (the proxy: all-MiniLM-L6-v2 as the pre-trained model, paraphrase-MiniLM-L3-v2 as the smaller
pre-distilled model):
  teacher               MiniLM-L6 fine-tuned, FP32
  6l_w2a8 / 6l_w1a8     ternary / binary weights, 8-bit activations, KD from the teacher
  3l_fp32_copy          layers [1,3,5] copied, one-stage KD, FP32
  3l_fp32_predistilled  paraphrase-MiniLM-L3 with the same one-stage KD from the same teacher
  3l_w1a8               the copied 3-layer student, binarized with KD from the teacher
  6l_w1a8_short         6l_w1a8 with 1/3 of the budget
  6l_w2a8_long / 6l_w1a8_long   6l_w2a8 / 6l_w1a8 with 3x the budget (the paper's long budget is 3x
                        its short one), the warm-up of the shorter row (one epoch), length-grouped
                        batches (xtc's default; the other rows pin random batches, ~1.4x the time)
  6l_w1a8_aug           6l_w1a8 on the augmented training set, same number of steps (needs --augmented-dir)
  6l_w2a8_paper_lr / 6l_w1a8_paper_lr   6l_w2a8 / 6l_w1a8 with the paper's single learning rate
                        (latent_lr_scale 1.0) instead of xtc's faster-learning latent weights
  6l_w1a8_long_row      6l_w1a8_long with one binary scale per output row of every linear weight
                        (XTC's row-wise option) instead of one per matrix: still 1-bit codes
  6l_w1a8_long_row_aug  6l_w1a8_long_row on the augmented training set, same number of steps
                        (needs --augmented-dir)
  6l_w1a8_xlong_row     6l_w1a8_long_row with 6x the budget instead of 3x: 18 epochs, the paper's
                        quantization budget on MNLI/QQP (SST-2: 3 epochs)

The paper's scale (issue 32): all-mpnet-base-v2 (12 layers, 768 wide; --mpnet-dir, fetched by
../shared/models/fetch_mpnet_base.sh) as the pre-trained model. Rows are a table (MPNET_ROWS):
  mpnet_teacher         MPNet-base fine-tuned, FP32, learning rate 2e-5 (BERT-base's usual rate)
  mpnet_12l_w2a8 / mpnet_12l_w1a8   all 12 layers, ternary / binary, KD from the teacher
  mpnet_6l_fp32_copy / mpnet_5l_fp32_copy   layers [1,3,5,7,9,11] / [2,4,6,8,10] copied, FP32 KD
  mpnet_6l_w2a8 / mpnet_6l_w1a8 / mpnet_5l_w1a8   the copied student above, quantized with KD
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SHARED = ROOT.parent / "shared"
RESULTS = HERE / "results" / "glue"
RUNS = ROOT / "runs" / "bench"

ROWS = ["teacher", "6l_w2a8", "6l_w1a8", "3l_fp32_copy", "3l_fp32_predistilled", "3l_w1a8", "6l_w1a8_short",
        "6l_w2a8_long", "6l_w1a8_long", "6l_w1a8_aug", "6l_w2a8_paper_lr", "6l_w1a8_paper_lr",
        "6l_w1a8_long_row", "6l_w1a8_long_row_aug", "6l_w1a8_xlong_row"]
# a word in the row's name that multiplies the budget: 6l_w1a8_long_row trains 3x as long, *_xlong_* 6x
BUDGET_SCALE = {"long": 3, "xlong": 6}
# The paper-scale rows: (weight bits, teacher layers copied, the row whose model the student starts from).
# Every student distils from mpnet_teacher of its task and seed.
MPNET_6L, MPNET_5L = [1, 3, 5, 7, 9, 11], [2, 4, 6, 8, 10]  # 0-based; XTC's choice: every other layer
MPNET_ROWS = {
    "mpnet_teacher": (32, None, None),
    "mpnet_12l_w2a8": (2, None, None),
    "mpnet_12l_w1a8": (1, None, None),
    "mpnet_6l_fp32_copy": (32, MPNET_6L, None),
    "mpnet_5l_fp32_copy": (32, MPNET_5L, None),
    "mpnet_6l_w2a8": (2, MPNET_6L, "mpnet_6l_fp32_copy"),
    "mpnet_6l_w1a8": (1, MPNET_6L, "mpnet_6l_fp32_copy"),
    "mpnet_5l_w1a8": (1, MPNET_5L, "mpnet_5l_fp32_copy"),
}
MPNET_TEACHER_LR = 2e-5
EPOCHS = {"sst2": 0.5}  # SST-2 (67k examples) gets a smaller budget here; everything else 3 epochs
DEFAULT_EPOCHS = 3.0


def commit() -> str:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          cwd=ROOT).stdout.strip()


def packed_size(model_dir: Path) -> int | None:
    """Bytes of the real packed file, when the packed format is available."""
    try:
        from xtc.packed import export
    except ImportError:
        return None
    out = model_dir.parent / "packed"
    if not out.exists():
        export(model_dir, out)
    return sum(f.stat().st_size for f in out.glob("*.safetensors"))


def final_dev(log: Path, spec) -> dict | None:
    """The dev metrics of the last evaluation inside the budget (no model selection), from the stage log."""
    if not log.exists():
        return None
    evals = [json.loads(x) for x in log.read_text().splitlines() if '"eval_runtime"' in x]
    inside = evals[:-1]  # the last record is the evaluation of the reloaded best checkpoint
    if not inside:
        return None
    return {m: inside[-1][f"eval_{m}"] for m in spec.metrics if f"eval_{m}" in inside[-1]}


def run_unit(task: str, row: str, seed: int, args) -> dict:
    import xtc
    from xtc.pipeline import distill, finetune
    from xtc.recipe import QuantConfig
    from xtc.train import TrainConfig

    # the code that trains is the code of this moment: later commits (results landing while the unit
    # runs) must not be recorded as its source
    started_at = commit()
    spec, glue = xtc.data.get_task(task), str(args.glue_dir)
    epochs = args.epochs or EPOCHS.get(task, DEFAULT_EPOCHS)
    # random batches (not xtc's length-grouped default): the rows in the table were trained that way
    base = TrainConfig(epochs=epochs, learning_rate=args.lr, seed=seed, group_by_length=False)
    teacher_cfg = replace(base, warmup_epochs=0.1)
    # students warm up for a third of the budget, at most one epoch (XTC's 1 of 3)
    student_cfg = replace(base, warmup_epochs=min(1.0, epochs / 3))
    if args.latent_lr_scale is not None:
        student_cfg = replace(student_cfg, latent_lr_scale=args.latent_lr_scale)

    def steps_per_epoch() -> int:  # of the original training set (read only by the rows that need it)
        return math.ceil(len(xtc.data.load_split(spec, "train", glue)) / student_cfg.batch_size)

    def on_augmented_set(cfg: TrainConfig) -> tuple[TrainConfig, str]:
        """cfg trained on the augmented file with the same budget: as many steps (and warm-up steps, and
        evaluations) as its epochs of the original training set take."""
        train_file = Path(args.augmented_dir) / spec.dir_name / "train.tsv"
        if not train_file.exists():
            raise SystemExit(f"no augmented data at {train_file}: run `xtc augment --task {task} "
                             f"--glue-dir {glue} --output {args.augmented_dir}` first")
        per_epoch = steps_per_epoch()
        per_aug_epoch = math.ceil(len(xtc.data.read_tsv(spec, train_file)) / cfg.batch_size)
        return replace(cfg, max_steps=round(per_epoch * cfg.epochs), eval_steps=cfg.eval_steps or per_epoch,
                       warmup_epochs=cfg.warmup_epochs * per_epoch / per_aug_epoch), str(train_file)

    if epochs < 1:  # a sub-epoch budget (SST-2) is evaluated three times, like the 3-epoch ones
        every = math.ceil(steps_per_epoch() * epochs / 3)
        student_cfg, teacher_cfg = replace(student_cfg, eval_steps=every), replace(teacher_cfg, eval_steps=every)
    out = RUNS / f"{task}-{row}-{seed}"
    if row in MPNET_ROWS:
        return run_mpnet_unit(task, row, seed, args, spec, teacher_cfg, student_cfg, out)
    teacher_dir = RUNS / f"{task}-teacher-{seed}" / "model"
    if row != "teacher" and not teacher_dir.exists():
        # The teacher's result file can outlive its model (runs/ is not committed): train it again
        # with the same seed and budget rather than refuse.
        print(f"[teacher] {task} seed {seed}: no model at {teacher_dir}, fine-tuning it", flush=True)
        finetune(str(args.model), task, teacher_dir.parent, glue, teacher_cfg, resume=True)
    w1, w2 = QuantConfig(weight_bits=1), QuantConfig(weight_bits=2)
    bits, layers, cfg, kwargs = 32, 6, student_cfg, {}
    if row == "teacher":
        cfg = teacher_cfg
        summary = finetune(str(args.model), task, out, glue, cfg, resume=True)
    else:
        scale = next((BUDGET_SCALE[word] for word in row.split("_") if word in BUDGET_SCALE), None)
        if scale:  # the warm-up keeps its length (one epoch at most); only the decay gets longer
            cfg = replace(cfg, epochs=scale * epochs, group_by_length=True)
        if row in ("6l_w2a8", "6l_w2a8_paper_lr", "6l_w2a8_long"):
            bits, kwargs = 2, dict(quant=w2)
            if row == "6l_w2a8_paper_lr":
                cfg = replace(cfg, latent_lr_scale=1.0)
        elif row == "6l_w1a8_paper_lr":
            bits, kwargs, cfg = 1, dict(quant=w1), replace(cfg, latent_lr_scale=1.0)
        elif row in ("6l_w1a8_long_row", "6l_w1a8_long_row_aug", "6l_w1a8_xlong_row"):
            bits, kwargs = 1, dict(quant=QuantConfig(weight_bits=1, groups="row"))
            if row == "6l_w1a8_long_row_aug":
                cfg, kwargs["train_file"] = on_augmented_set(cfg)
        elif row in ("6l_w1a8", "6l_w1a8_short", "6l_w1a8_aug", "6l_w1a8_long"):
            bits, kwargs = 1, dict(quant=w1)
            if row == "6l_w1a8_short":
                cfg = replace(cfg, epochs=epochs / 3, warmup_epochs=cfg.warmup_epochs / 3)
            if row == "6l_w1a8_aug":  # same budget as 6l_w1a8, drawn from the augmented training set
                cfg, kwargs["train_file"] = on_augmented_set(cfg)
        elif row == "3l_fp32_copy":
            layers, kwargs = 3, dict(layers=[1, 3, 5])
        elif row == "3l_fp32_predistilled":
            layers, kwargs = 3, dict(student=str(SHARED / "models" / "paraphrase-MiniLM-L3-v2"))
        elif row == "3l_w1a8":
            copy_dir = RUNS / f"{task}-3l_fp32_copy-{seed}" / "model"
            if not copy_dir.exists():
                raise SystemExit(f"run 3l_fp32_copy first: {task} 3l_fp32_copy {seed}")
            bits, layers, kwargs = 1, 3, dict(student=str(copy_dir), quant=w1)
        else:
            raise SystemExit(f"unknown row {row}; rows: {', '.join(ROWS + list(MPNET_ROWS))}")
        summary = distill(str(teacher_dir), task, out, glue, config=cfg, resume=True, **kwargs)
    return unit_result(task, row, seed, args, spec, summary, bits, layers, cfg, kwargs, out, started_at)


def run_mpnet_unit(task, row, seed, args, spec, teacher_cfg, student_cfg, out) -> dict:
    from xtc.pipeline import distill, finetune
    from xtc.recipe import QuantConfig

    started_at = commit()
    glue = str(args.glue_dir)
    bits, keep, start_row = MPNET_ROWS[row]
    # length-grouped batches (xtc's default; ~0.7x the step time of random ones): CPU time is scarce here
    teacher_cfg = replace(teacher_cfg, learning_rate=MPNET_TEACHER_LR, group_by_length=True)
    student_cfg = replace(student_cfg, group_by_length=True)
    teacher_dir = RUNS / f"{task}-mpnet_teacher-{seed}" / "model"
    if row == "mpnet_teacher":
        summary = finetune(str(args.mpnet_dir), task, out, glue, teacher_cfg, resume=True)
        return unit_result(task, row, seed, args, spec, summary, 32, 12, teacher_cfg, {}, out, started_at)
    if not teacher_dir.exists():
        print(f"[teacher] {task} seed {seed}: no model at {teacher_dir}, fine-tuning it", flush=True)
        finetune(str(args.mpnet_dir), task, teacher_dir.parent, glue, teacher_cfg, resume=True)
    kwargs = {"quant": QuantConfig(weight_bits=bits)} if bits < 32 else {}
    if start_row:
        start = RUNS / f"{task}-{start_row}-{seed}" / "model"
        if not start.exists():
            raise SystemExit(f"run {start_row} first: {task} {start_row} {seed}")
        kwargs["student"] = str(start)
    elif keep:
        kwargs["layers"] = keep
    summary = distill(str(teacher_dir), task, out, glue, config=student_cfg, resume=True, **kwargs)
    return unit_result(task, row, seed, args, spec, summary, bits, len(keep) if keep else 12, student_cfg,
                       kwargs, out, started_at)


def unit_result(task, row, seed, args, spec, summary, bits, layers, cfg, kwargs, out, started_at) -> dict:
    return {
        "task": task, "row": row, "seed": seed, "metric_names": list(spec.metrics),
        "main_metric": spec.main_metric, "metrics": summary["dev"], "weight_bits": bits,
        "activation_bits": 8 if bits < 32 else None, "layers": layers, "epochs": summary["epochs"],
        "steps": summary["steps"], "train_wall_s": summary["train_wall_s"],
        "dev_final": final_dev(out / "log.jsonl", spec),
        "learning_rate": cfg.learning_rate,
        "latent_lr_scale": cfg.latent_lr_scale if bits < 32 else None, "warmup_epochs": cfg.warmup_epochs,
        "weight_groups": kwargs["quant"].groups if "quant" in kwargs else None,
        "packed_bytes": packed_size(out / "model") if bits < 32 else None,
        "commit": started_at, "machine": f"{platform.machine()} {platform.processor()}".strip(),
        "command": f"python benchmarks/run_glue.py --tasks {task} --rows {row} --seeds {seed}"
                   + (f" --epochs {args.epochs:g}" if args.epochs else "")
                   + (f" --latent-lr-scale {args.latent_lr_scale:g}" if args.latent_lr_scale is not None else ""),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", nargs="+", default=["mrpc", "stsb", "rte", "cola", "sst2"])
    ap.add_argument("--rows", nargs="+", default=ROWS[:7])
    ap.add_argument("--seeds", nargs="+", type=int, default=[42])
    ap.add_argument("--model", default=str(SHARED / "models" / "all-MiniLM-L6-v2"))
    ap.add_argument("--mpnet-dir", default=str(Path.home() / ".cache" / "xtc-models" / "all-mpnet-base-v2"),
                    help="all-mpnet-base-v2 for the mpnet_* rows (../shared/models/fetch_mpnet_base.sh DEST)")
    ap.add_argument("--glue-dir", default=str(SHARED / "glue"))
    ap.add_argument("--augmented-dir", default=str(ROOT / "runs" / "augmented"))
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--epochs", type=float, default=None, help="override the per-task budget")
    ap.add_argument("--latent-lr-scale", type=float, default=None,
                    help="learning-rate multiple of the quantized students' latent weights (default: xtc's)")
    args = ap.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    from xtc.io import write_json_atomic

    for task in args.tasks:
        for seed in args.seeds:
            for row in args.rows:
                path = RESULTS / f"{task}-{row}-{seed}.json"
                if path.exists():
                    print(f"[skip] {path.name} exists", flush=True)
                    continue
                print(f"[run] {task} {row} seed {seed}", flush=True)
                start = time.time()
                result = run_unit(task, row, seed, args)
                result["wall_s"] = round(time.time() - start, 1)
                write_json_atomic(path, result)
                print(f"[done] {path.name}: {result['metrics']}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
