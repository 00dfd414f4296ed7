"""Time one training step of QAT + KD against one step of plain FP32 fine-tuning, same batches.

The two kinds of step alternate (A B A B ...) so that whatever else runs on the machine weighs on
both alike; the ratio of medians is reported. Writes benchmarks/results/step_time.json.

    python benchmarks/step_time.py --task mrpc --steps 12

With --bf16, the pair is instead the same QAT + KD step in FP32 and under bfloat16 autocast (two
students from the same start, each with its own optimizer); writes benchmarks/results/step_time_bf16.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer

import xtc
from xtc.data import TokenizedDataset, get_task, load_split, make_collator
from xtc.distillation import Distiller
from xtc.models import load_model
from bench_inference import _isa  # the host's int8/bf16-relevant extensions, as the speed results record them

HERE = Path(__file__).resolve().parent


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(HERE.parent.parent / "shared/models/all-MiniLM-L6-v2"))
    ap.add_argument("--glue-dir", default=str(HERE.parent.parent / "shared/glue"))
    ap.add_argument("--task", default="mrpc")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--weight-bits", type=int, default=1)
    ap.add_argument("--layers", default=None, help="e.g. 1,3,5")
    ap.add_argument("--pad-to-max", action="store_true", help="pad every batch to 128 (reference style)")
    ap.add_argument("--bf16", action="store_true", help="time QAT + KD in FP32 against bf16 autocast")
    ap.add_argument("--out", default=None, help="default: results/step_time.json (--bf16: step_time_bf16.json)")
    args = ap.parse_args()
    args.out = args.out or str(HERE / "results" / ("step_time_bf16.json" if args.bf16 else "step_time.json"))

    task = get_task(args.task)
    tok = AutoTokenizer.from_pretrained(args.model)
    data = TokenizedDataset(load_split(task, "train", args.glue_dir), tok, 128)
    collate = make_collator(tok, max_length=128 if args.pad_to_max else None)
    g = torch.Generator().manual_seed(0)
    order = torch.randperm(len(data), generator=g).tolist()
    batches = [collate([data[i] for i in order[k * args.batch_size:(k + 1) * args.batch_size]])
               for k in range(args.steps + 2)]

    fp32 = load_model(args.model, task).train()
    teacher = load_model(args.model, task)
    student = load_model(args.model, task)
    if args.layers:
        student = xtc.reduce_layers(student, [int(x) for x in args.layers.split(",")])
    xtc.quantize_(student, xtc.XTCConfig(weight_bits=args.weight_bits))
    student.train()
    opt_a = torch.optim.AdamW(fp32.parameters(), lr=1e-5)

    def fp32_step(batch):
        loss = fp32(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(fp32.parameters(), 1.0)
        opt_a.step()
        opt_a.zero_grad()

    def kd_stepper(model, bf16: bool = False):
        """One QAT + KD step of ``model`` (its own distiller and optimizer), optionally under bf16 autocast."""
        distiller = Distiller(teacher, model, xtc.layer_map(model))
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)

        def step(batch):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss, _, _ = distiller(**batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad()

        return step

    kinds = (("fp32", fp32_step), ("qat_kd", kd_stepper(student)))
    if args.bf16:  # the same KD step on a twin student (same start), under bf16 autocast
        import copy

        kinds = (("qat_kd", kinds[1][1]), ("qat_kd_bf16", kd_stepper(copy.deepcopy(student), bf16=True)))
    times = {name: [] for name, _ in kinds}
    for i, batch in enumerate(batches):
        for name, step in kinds:
            t = time.perf_counter()
            step(dict(batch))
            if i >= 2:  # the first two steps warm up allocators and caches
                times[name].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "task": task.name, "batch_size": args.batch_size, "steps": args.steps, "weight_bits": args.weight_bits,
        "layers": args.layers, "padding": "max_length 128" if args.pad_to_max else "longest in batch",
        "median_s": med,
        **({"ratio_bf16_over_fp32": med["qat_kd_bf16"] / med["qat_kd"]} if args.bf16 else
           {"ratio_qat_kd_over_fp32": med["qat_kd"] / med["fp32"]}),
        "isa": " ".join(_isa()),
        "torch_threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine(),
        "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                 cwd=HERE).stdout.strip(),
        "command": "python benchmarks/step_time.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()
            if k in ("task", "steps", "weight_bits", "layers") and v is not None) + (" --bf16" if args.bf16 else ""),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
