"""Side by side with the reference XTC (DeepSpeed 0.18.9 + its official example script).

Same teacher, data, budget and seed on both sides. Two parts:

1. accuracy (short budget: 3 epochs, batch 32, lr 5e-5, 1 warm-up epoch): the reference's 6L W1A8
   run (``run.sh TASK 6lw1a8 SEED short`` with TEACHER_DIR = our teacher) against our
   benchmarks/run_glue.py unit ``6l_w1a8`` (same teacher). Both JSONs must exist; this script only
   reads them unless --run-accuracy is given.
2. speed and memory (``--timing``): the two training processes one after the other on an otherwise
   idle machine, N steps each (the reference's ``smoke`` budget, 40 steps), with each whole
   process's peak resident memory; our step time is the median step, the reference's its
   ``s_per_step_10_30``.

    python benchmarks/compare_reference.py --task mrpc --seed 42 --timing
Writes benchmarks/results/reference/TASK-SEED.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
REF = ROOT.parent / "shared" / "reference" / "deepspeed-xtc"
TASK_DIRS = {"mrpc": "MRPC", "stsb": "STS-B", "rte": "RTE", "cola": "CoLA", "sst2": "SST-2"}


def run_measured(cmd: list[str], env: dict | None = None, cwd: Path | None = None) -> tuple[float, float]:
    """Run ``cmd`` in a child process; return (wall seconds, peak RSS in MB of that child).

    A small Python wrapper runs the command so that RUSAGE_CHILDREN covers exactly that tree.
    """
    wrapper = ("import resource, subprocess, sys, json, time; t = time.time(); "
               "r = subprocess.run(sys.argv[1:]); "
               "print('MEASURED', json.dumps([time.time() - t, "
               "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, r.returncode]))")
    out = subprocess.run([sys.executable, "-c", wrapper, *cmd], env={**os.environ, **(env or {})}, cwd=cwd,
                         capture_output=True, text=True)
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("MEASURED")]
    if not line:
        raise SystemExit(f"measurement failed for {cmd}:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    wall, rss, rc = json.loads(line[-1].split(" ", 1)[1])
    if rc != 0:
        raise SystemExit(f"{cmd[0]} exited with {rc}:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")
    return wall, rss


def timing(task: str, seed: int, teacher: Path, steps: int, work: Path) -> dict:
    td = TASK_DIRS[task]
    ref_out = work / "ref"
    env = {"OUT": str(ref_out), "TEACHER_DIR": str(teacher), "MAX_STEPS": str(steps)}
    ref_wall, ref_rss = run_measured(["bash", str(REF / "run.sh"), td, "6lw1a8", str(seed), "smoke"], env=env)
    ref = json.loads((ref_out / f"{td}-6lw1a8-{seed}.json").read_text())
    result = {"steps": steps,
              "reference": {"s_per_step_10_30": ref.get("s_per_step_10_30"), "train_wall_s": ref.get("train_wall_s"),
                            "process_wall_s": round(ref_wall, 1), "peak_rss_mb": round(ref_rss)}}
    # xtc with length-grouped batches (its default) and with random batches, both padded to their longest
    for name, extra in (("ours_length_grouped", ["--group-by-length"]), ("ours_random_batches", ["--random-batches"])):
        ours_dir = work / name
        shutil.rmtree(ours_dir, ignore_errors=True)
        ours_cmd = [str(ROOT / ".venv" / "bin" / "xtc"), "distill", "--teacher", str(teacher), "--task", task,
                    "--glue-dir", str(ROOT.parent / "shared" / "glue"), "--weight-bits", "1", "--max-steps",
                    str(steps), "--eval-steps", "100000", "--lr", "5e-5", "--seed", str(seed), "--output",
                    str(ours_dir), "--batch-size", "32", *extra]  # the reference's batch, step for step
        ours_wall, ours_rss = run_measured(ours_cmd)
        ours = json.loads((ours_dir / "stage.json").read_text())
        result[name] = {"s_per_step_median": ours["s_per_step_median"], "train_wall_s": ours["train_wall_s"],
                        "process_wall_s": round(ours_wall, 1), "peak_rss_mb": round(ours_rss),
                        "step_ratio_over_reference": round(ours["s_per_step_median"] / ref["s_per_step_10_30"], 3),
                        "train_wall_ratio_over_reference": round(ours["train_wall_s"] / ref["train_wall_s"], 3)}
    return result


# our run_glue.py rows compared with the reference's 6lw1a8: the default recipe and the paper's single rate
OUR_SIDES = {"ours": "6l_w1a8", "ours_paper_lr": "6l_w1a8_paper_lr"}


def accuracy(task: str, seed: int, ref_json: Path) -> dict:
    out = {}
    if ref_json.exists():
        ref = json.loads(ref_json.read_text())
        out["reference"] = {k: ref.get(k) for k in ("dev_final", "dev_best_before_clean", "dev_clean",
                                                    "teacher_dev_before_training", "train_wall_s", "epochs",
                                                    "train_forward_steps")}
    for side, row in OUR_SIDES.items():
        path = HERE / "results" / "glue" / f"{task}-{row}-{seed}.json"
        if path.exists():
            ours = json.loads(path.read_text())
            out[side] = {"dev_best": ours["metrics"], "dev_final": ours.get("dev_final"),
                         "train_wall_s": ours["train_wall_s"], "epochs": ours["epochs"], "steps": ours["steps"],
                         "latent_lr_scale": ours.get("latent_lr_scale"), "commit": ours.get("commit")}
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="mrpc")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--teacher", default=None, help="teacher folder (default: our run_glue.py teacher)")
    ap.add_argument("--ref-json", default=None, help="the reference's short-budget 6lw1a8 result JSON")
    ap.add_argument("--timing", action="store_true")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--work", default="/tmp/xtc-compare")
    args = ap.parse_args()
    teacher = Path(args.teacher or ROOT / "runs" / "bench" / f"{args.task}-teacher-{args.seed}" / "model")
    ref_json = Path(args.ref_json or f"/tmp/ds_ref_out/ours-teacher/{TASK_DIRS[args.task]}-6lw1a8-{args.seed}.json")
    path = HERE / "results" / "reference" / f"{args.task}-{args.seed}.json"
    result = json.loads(path.read_text()) if path.exists() else {}
    acc = accuracy(args.task, args.seed, ref_json)
    # what a side's files no longer give (a deleted /tmp result, a log gone with runs/) keeps its last reading
    for side, earlier in result.get("accuracy", {}).items():
        acc[side] = {**earlier, **{k: v for k, v in acc.get(side, {}).items() if v is not None}}
    result.update({"task": args.task, "seed": args.seed, "teacher": str(teacher), "accuracy": acc})
    if args.timing:
        result["timing"] = timing(args.task, args.seed, teacher, args.steps, Path(args.work))
        result["timing"]["measured_at"] = time.strftime("%Y-%m-%d %H:%M")
    result["command"] = "python benchmarks/compare_reference.py " + " ".join(sys.argv[1:])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    sys.exit(main())
