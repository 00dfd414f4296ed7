"""Where a binary embedder loses its STS-B points: the 8-bit activations or the 1-bit weights?

Loads a trained embedding run's QAT model (latent weights + its quantization config), scores it on the
embedding dev sets as trained (W1A8), then again with every quantized linear's activations left in full
precision (the weights stay binary). Equal scores: the gap to FP32 is the binary weights'.

    python benchmarks/run_embedding.py --rows minilm_w1a8_4ep_bf16_emb30 --seeds 42   # the run folder
    python benchmarks/embedding_activations.py runs/bench/embedding-minilm_w1a8_4ep_bf16_emb30-42

With ``--word-embedding-only MODEL`` it reads the other side instead: the FP32 sentence-transformers
model with nothing but its word embedding quantized (1 and 2 bits, one scale per row, no training), what
the binary word embedding alone costs before the student learns around it.

    python benchmarks/embedding_activations.py --word-embedding-only ../shared/models/all-MiniLM-L6-v2

Writes benchmarks/results/embedding_activations.json (one entry per run folder or model).
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
    parser.add_argument("run", type=Path, nargs="?", help="an embedding run folder (with quantized/model)")
    parser.add_argument("--word-embedding-only", type=Path, metavar="MODEL",
                        help="instead: this FP32 model with only its word embedding quantized, untrained")
    parser.add_argument("--glue-dir", type=Path, default=ROOT.parent / "shared" / "glue")
    args = parser.parse_args()
    if (args.run is None) == (args.word_embedding_only is None):
        parser.error("give a run folder or --word-embedding-only MODEL")
    if args.word_embedding_only is not None:
        return word_embedding_only(args.word_embedding_only, args.glue_dir)

    import torch
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
             "quantized_linears": len(linears), "command": f"python benchmarks/embedding_activations.py {args.run}",
             "metrics": readings}
    save(args.run.name, entry)


def word_embedding_only(model_dir: Path, glue_dir: Path) -> None:
    import torch
    from transformers import AutoModel, AutoTokenizer

    import xtc
    from xtc.data.embedding import dev_set, embedding_metrics
    from xtc.embedding import read_pooling

    tokenizer, pooling, dev = AutoTokenizer.from_pretrained(model_dir), read_pooling(str(model_dir)), dev_set(str(glue_dir))
    readings = {}
    with torch.no_grad():
        for bits in (32, 2, 1):
            model = AutoModel.from_pretrained(model_dir).eval()
            if bits < 32:  # a module name that matches no linear: the word embedding alone is quantized
                xtc.quantize_(model, xtc.XTCConfig(weight_bits=bits, activation_bits=None, modules=("no-linear",)))
            readings["FP32" if bits == 32 else f"word embedding at {bits} bit"] = embedding_metrics(
                model, tokenizer, dev, pooling=pooling)
    command = f"python benchmarks/embedding_activations.py --word-embedding-only {model_dir}"
    save(f"word-embedding-only:{model_dir.name}", {"model": model_dir.name, "command": command, "metrics": readings})


def save(key: str, entry: dict) -> None:
    """Record ``entry`` (with the host's ISA and thread count) under ``key`` and print its readings."""
    import torch
    from bench_inference import _isa  # benchmarks/ is on the path: this script runs from it

    entry = {**entry, "isa": " ".join(_isa()), "threads": torch.get_num_threads()}
    results = json.loads(OUT.read_text()) if OUT.exists() else {}
    results[key] = entry
    OUT.write_text(json.dumps(results, indent=1) + "\n")
    for name, m in entry["metrics"].items():
        print(f"{name}: " + ", ".join(f"{k} {100 * v:.2f}" for k, v in m.items()))


if __name__ == "__main__":
    main()
