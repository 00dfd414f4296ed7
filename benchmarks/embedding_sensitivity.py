"""Which linears of a sentence embedder lose the most when they go to 1 bit, and how much 2 bits give back?

Takes a full-precision embedder (e.g. the FP32 6-layer copy at the end of an embedding run's layer-reduction
stage) and quantizes one group of linears at a time, with no training, one scale per output row, the
activations left in full precision: a group is a ``module_bits`` pattern (a path inside the transformer
block or a prefix of one: ``attention``, ``intermediate`` = the FFN's up-projection, ``output`` = its
down-projection). Each reading is the STS-B dev Spearman and MRPC retrieval of the embedder after that one
change. What it tells: where the bits of a mixed-precision model (``XTCConfig.module_bits``) buy the most
per byte; untrained, it is a proxy, not the trained student's loss.

    python benchmarks/run_embedding.py --rows mpnet_6l_w1a8_4ep_bf16_emb30_we2_att01_row --seeds 42
    python benchmarks/embedding_sensitivity.py runs/bench/embedding-mpnet_6l_w1a8_4ep_bf16_emb30_we2_att01_row-42/reduced/model

Writes benchmarks/results/embedding_sensitivity.json (one entry per model folder; a later call on the same
folder, e.g. with ``--groups attention.attn.q attention.attn.k``, adds its readings to that entry).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "results" / "embedding_sensitivity.json"


def quantize_group(model, pattern: str | None, bits: int) -> int:
    """Swap the linears that ``pattern`` names (every block linear when None) for row-scaled ``bits``-bit
    quantization-aware ones with full-precision activations; returns how many weights that covers."""
    from xtc import XTCConfig
    from xtc.config import module_path_matches
    from xtc.modules import QuantLinear
    from xtc.quantizers import default_scheme
    from xtc.surgery import block_linears, find_layers

    weights = 0
    for parent, name, child, index, path in block_linears(find_layers(model), XTCConfig()):
        if pattern is None or module_path_matches(pattern, index, path):
            setattr(parent, name, QuantLinear(child, bits, default_scheme(bits), child.out_features, None))
            weights += child.weight.numel()
    return weights


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path, help="a full-precision embedder folder (a run's reduced/model)")
    parser.add_argument("--groups", nargs="+", default=["attention", "intermediate", "output", "all"],
                        help="module_bits patterns to quantize one at a time; 'all' = every block linear")
    parser.add_argument("--bits", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--glue-dir", type=Path, default=ROOT.parent / "shared" / "glue")
    args = parser.parse_args()

    import torch
    from bench_inference import _cpu_name, _isa
    from transformers import AutoTokenizer

    from xtc.data.embedding import dev_set, embedding_metrics
    from xtc.surgery import load_quantized

    tokenizer, dev = AutoTokenizer.from_pretrained(args.model), dev_set(str(args.glue_dir))
    readings = []
    for group in [None] + args.groups:
        for bits in ([None] if group is None else args.bits):
            model = load_quantized(args.model).eval()
            weights = 0 if group is None else quantize_group(model, None if group == "all" else group, bits)
            started = time.time()
            with torch.no_grad():
                metrics = embedding_metrics(model, tokenizer, dev)
            readings.append({"group": group or "none (full precision)", "bits": bits, "weights": weights,
                             "metrics": metrics})
            print(f"{group or 'full precision'} {bits or ''}: STS-B {100 * metrics['stsb_spearman']:.2f} "
                  f"({time.time() - started:.0f} s)", flush=True)
    results = json.loads(OUT.read_text()) if OUT.exists() else {}
    try:
        shown = str(args.model.resolve().relative_to(ROOT))
    except ValueError:
        shown = str(args.model)
    command = f"python benchmarks/embedding_sensitivity.py {shown}"
    if args.groups != parser.get_default("groups") or args.bits != parser.get_default("bits"):
        command += f" --groups {' '.join(args.groups)} --bits {' '.join(map(str, args.bits))}"
    # a later call on the same model adds its readings (a reading of the same group and bits is replaced)
    entry = results.get(shown, {})
    measured = {(r["group"], r["bits"]) for r in readings}
    kept = [r for r in entry.get("readings", []) if (r["group"], r["bits"]) not in measured]
    earlier = entry.get("commands", [entry["command"]] if "command" in entry else [])  # older files had one
    commands = [c for c in earlier if c != command]
    results[shown] = {"model": shown, "cpu": _cpu_name(), "isa": " ".join(_isa()), "threads": torch.get_num_threads(),
                      "commands": commands + [command],
                      "weight_scales": "row", "activations": "full precision", "readings": kept + readings}
    OUT.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
