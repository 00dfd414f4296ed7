"""In-process A/B of the packed kernels: this tree's C++ source against another git revision's.

Both builds run the same packed model (random BERT-base or MiniLM-L6 weights, W1A8 or W2A8) on the same
inputs in one process, alternating, so that the clock drift of a shared VM hits both alike; the Python
side is this tree's (the other revision's extension must offer the functions it calls). Prints the
median milliseconds per forward of each and their ratio, and whether the logits are identical.

    python benchmarks/ab_kernels.py --against HEAD~1 --model bert --threads 1 --batch 1
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = "src/xtc/packed/csrc/xtc_kernels.cpp"
MINILM = ROOT.parent / "shared" / "models" / "all-MiniLM-L6-v2"


def build_revision(rev: str):
    from torch.utils.cpp_extension import load

    text = subprocess.run(["git", "show", f"{rev}:{SOURCE}"], cwd=ROOT, capture_output=True, check=True).stdout
    folder = Path(tempfile.mkdtemp())
    src = folder / "xtc_kernels.cpp"
    src.write_bytes(text)
    return load(name="xtc_ab_" + hashlib.sha256(text).hexdigest()[:10], sources=[str(src)],
                extra_cflags=["-O3", "-fopenmp", "-ffp-contract=off"], extra_ldflags=["-fopenmp"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--against", default="HEAD", help="git revision whose kernels are the baseline")
    ap.add_argument("--model", choices=["bert", "minilm"], default="bert")
    ap.add_argument("--bits", type=int, choices=[1, 2], default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()

    import torch
    from transformers import AutoModelForSequenceClassification, BertConfig, BertForSequenceClassification

    import xtc
    from xtc.packed import kernels, load_packed, save_packed

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    builds = {"this tree": kernels.extension(), args.against: build_revision(args.against)}
    if args.model == "bert":
        model = BertForSequenceClassification(BertConfig(num_labels=2)).eval()
    else:
        model = AutoModelForSequenceClassification.from_pretrained(MINILM, num_labels=2).eval()
    xtc.quantize_(model, xtc.XTCConfig(weight_bits=args.bits))
    folder = tempfile.mkdtemp()
    save_packed(model, folder)
    packed = load_packed(folder)
    ids = torch.randint(1000, 20000, (args.batch, args.seq))
    repeats = max(2, round((30 if args.batch == 1 else 4) * (1 if args.model == "bert" else 3)))
    times: dict = {name: [] for name in builds}
    logits = {}
    with torch.inference_mode():
        for name, ext in builds.items():
            kernels._ext = ext
            logits[name] = packed(input_ids=ids).logits
        for _ in range(args.rounds):
            for name, ext in builds.items():
                kernels._ext = ext
                start = time.perf_counter()
                for _ in range(repeats):
                    packed(input_ids=ids)
                times[name].append((time.perf_counter() - start) / repeats * 1e3)
    kernels._ext = builds["this tree"]
    new, old = (statistics.median(times[n]) for n in builds)
    same = torch.equal(*logits.values())
    print(f"{args.model} W{args.bits}A8, {args.threads} thread(s), batch {args.batch}: this tree {new:.3f} ms, "
          f"{args.against} {old:.3f} ms, ratio {new / old:.3f}; identical logits: {same}")


if __name__ == "__main__":
    main()
