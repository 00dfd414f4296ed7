"""Where a binary embedder loses its STS-B points: the 8-bit activations or the 1-bit weights?

Loads a trained embedding run's QAT model (latent weights + its quantization config), scores it on the
embedding dev sets as trained (W1A8), then again with every quantized linear's activations left in full
precision (the weights stay binary). Equal scores: the gap to FP32 is the binary weights'.

    python benchmarks/run_embedding.py --rows minilm_w1a8_4ep_bf16_emb30 --seeds 42   # the run folder
    python benchmarks/embedding_activations.py runs/bench/embedding-minilm_w1a8_4ep_bf16_emb30-42

Writes benchmarks/results/embedding_activations.json (one entry per run folder).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "results" / "embedding_activations.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="an embedding run folder (with quantized/model)")
    parser.add_argument("--glue-dir", type=Path, default=ROOT.parent / "shared" / "glue")
    args = parser.parse_args()

    import torch
    from bench_inference import _isa  # benchmarks/ is on the path: this script runs from it
    from transformers import AutoTokenizer

    from xtc.data.embedding import dev_set, embedding_metrics
    from xtc.modules import QuantLinear
    from xtc.surgery import load_quantized

    path = args.run / "quantized" / "model"
    model, tokenizer = load_quantized(path).eval(), AutoTokenizer.from_pretrained(path)
    dev = dev_set(str(args.glue_dir))
    linears = [m for m in model.modules() if isinstance(m, QuantLinear)]
    readings = {}
    with torch.no_grad():
        readings["as trained"] = embedding_metrics(model, tokenizer, dev)
        bits = {m.activation_bits for m in linears}
        for m in linears:
            m.activation_bits = None
        readings["activations in full precision"] = embedding_metrics(model, tokenizer, dev)
    entry = {"run": str(args.run), "activation_bits_trained": sorted(b for b in bits if b),
             "quantized_linears": len(linears), "isa": " ".join(_isa()), "threads": torch.get_num_threads(),
             "command": f"python benchmarks/embedding_activations.py {args.run}", "metrics": readings}
    results = json.loads(OUT.read_text()) if OUT.exists() else {}
    results[args.run.name] = entry
    OUT.write_text(json.dumps(results, indent=1) + "\n")
    for name, m in readings.items():
        print(f"{name}: " + ", ".join(f"{k} {100 * v:.2f}" for k, v in m.items()))


if __name__ == "__main__":
    main()
