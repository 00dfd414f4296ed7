"""CPU inference: FP32 PyTorch vs dynamic int8 (PyTorch and ONNX Runtime) vs packed W1A8 / W2A8, side by side.

For MiniLM-L6 (local weights; randomly quantized unless --checkpoint gives a trained xtc checkpoint)
and the BERT-base architecture (random weights), at batch 1 and 32, sequence length 128:

* latency: median (and min) of repeated forward passes after warm-up, torch.set_num_threads(2), and
  1 thread as well (on a shared machine, 2 threads stall at every parallel region whenever another
  process holds a core; 1 thread shows the single-core speed without that);
* resident memory of the loaded model: VmRSS after loading and one forward pass (which touches every
  weight; transformers maps FP32 files lazily) minus VmRSS before, in a fresh subprocess per variant
  (so nothing else shares the process) after one load + forward of the same variant that is then
  deleted (one-time costs of first use are not the model's), plus the bytes of its tensors;
* file size: FP32 safetensors (save_pretrained), dynamic int8 (torch.save of its state dict: the
  usual way to store one), packed ``model.xtc.safetensors``, the ONNX int8 file;
* ONNX Runtime int8 (``ort_int8``), built as a careful user would: ``torch.onnx.export`` of the FP32
  model, optionally ``onnxruntime.transformers.optimizer`` (fused attention, LayerNorm, GELU), then
  ``quantize_dynamic`` with QInt8 weights per tensor or per channel; the fastest of the four graphs is
  reported at every thread count and batch (``config`` says which), intra-op threads = the thread count.

The paper-scale comparison (``--models mpnet``): the fine-tuned 12-layer MPNet-base teacher in FP32
and as ONNX Runtime int8 against a trained packed student (``--student``, e.g. the 5-layer W1A8 run).

Writes benchmarks/results/inference.json and prints a markdown table.

    python benchmarks/bench_inference.py                       # everything (a few minutes on 2 cores)
    python benchmarks/bench_inference.py --models minilm --repeats 5
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("XTC_SHARED", ROOT.parent / "shared"))
MINILM = SHARED / "models" / "all-MiniLM-L6-v2"
RESULTS = Path(__file__).resolve().parent / "results"
# packed_w1a8_hf_blocks: the same packed file with transformers' own block forward instead of xtc's lean one
# (xtc.packed.lean_blocks), so the table shows what the lean forward adds.
VARIANTS = ("fp32", "dynamic_int8", "ort_int8", "packed_w1a8", "packed_w2a8", "packed_w1a8_hf_blocks",
            "packed_student", "fp32_minilm")
ORT_CONFIGS = ("plain_tensor", "plain_channel", "optimized_tensor", "optimized_channel")
EMBED_STUDENTS = {"minilm_embed": ROOT / "runs" / "bench" / "embedding-minilm_w1a8-42",
                  "mpnet_embed": ROOT / "runs" / "bench" / "embedding-mpnet_6l_w1a8-42"}
MPNET_TEACHER = ROOT / "runs" / "bench" / "mrpc-mpnet_teacher-42" / "model"
MPNET_STUDENT = ROOT / "runs" / "bench" / "mrpc-mpnet_5l_w1a8-42" / "model"


def rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def trim() -> None:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


# ------------------------------------------------------------------------------------------------
# Worker: one variant, in its own process
# ------------------------------------------------------------------------------------------------
def ort_worker(args) -> dict:
    """ONNX Runtime int8: every graph of ORT_CONFIGS timed, the fastest kept per thread count and batch."""
    import numpy as np
    import onnxruntime as ort

    def inputs_for(b, vocab=20000):
        g = np.random.default_rng(b)
        ids = g.integers(1000, vocab, (b, args.seq), dtype=np.int64)
        return {"input_ids": ids, "attention_mask": np.ones_like(ids)}

    out = {"variant": "ort_int8", "latency": {}, "ort_version": ort.__version__, "rss_model_mb": float("nan"),
           "tensor_mb": float("nan")}
    for threads in args.threads:
        sessions = {}
        for config in ORT_CONFIGS:
            file = Path(args.path) / f"{config}.onnx"
            if not file.exists():
                continue
            so = ort.SessionOptions()
            so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            sessions[config] = ort.InferenceSession(str(file), so, providers=["CPUExecutionProvider"])
        for b in args.batches:
            feed = inputs_for(b)
            reps = args.repeats if b == 1 else max(3, args.repeats // 4)
            best = None
            for config, session in sessions.items():
                names = {i.name for i in session.get_inputs()}
                run_feed = {k: v for k, v in feed.items() if k in names}
                for _ in range(args.warmup if b == 1 else 1):
                    session.run(None, run_feed)
                times, cpu = [], []
                for _ in range(reps):
                    t, c = time.perf_counter(), time.thread_time()
                    session.run(None, run_feed)
                    times.append(time.perf_counter() - t)
                    cpu.append(time.thread_time() - c)
                entry = {"threads": threads, "batch": b, "repeats": reps, "config": config,
                         "median_ms": statistics.median(times) * 1e3, "min_ms": min(times) * 1e3,
                         "cpu_median_ms": statistics.median(cpu) * 1e3 if threads == 1 else None}
                key = "cpu_median_ms" if threads == 1 else "median_ms"
                if best is None or entry[key] < best[key]:
                    best = entry
            out["latency"][f"t{threads}_b{b}"] = best
    return out


def worker(args) -> dict:
    if args.variant == "ort_int8":
        return ort_worker(args)
    import torch

    torch.set_num_threads(args.threads[0])
    warnings.filterwarnings("ignore")
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    from xtc.packed import kernel_info, load_packed, packed_weight_bytes, use_lean_blocks

    hf_logging.set_verbosity_error()
    # Code every variant needs, loaded before the baseline so that the difference is the model itself:
    # transformers imports a model family's code on first use, and the packed loader uses accelerate.
    import accelerate  # noqa: F401
    import transformers.models.bert.modeling_bert  # noqa: F401

    if args.variant.startswith("packed"):
        kernel_info()  # build/load the extension before the baseline: it is runtime, like fbgemm in libtorch

    def load():
        if args.variant.startswith("packed"):
            m = load_packed(args.path)
            if args.variant.endswith("_hf_blocks"):
                use_lean_blocks(m, False)
            return m
        if args.base:  # a sentence embedder: the encoder without pooler or head
            from transformers import AutoModel

            return AutoModel.from_pretrained(args.path, add_pooling_layer=False).eval()
        m = AutoModelForSequenceClassification.from_pretrained(args.path).eval()
        if args.variant == "dynamic_int8":
            m = torch.ao.quantization.quantize_dynamic(m, {torch.nn.Linear}, dtype=torch.qint8)
        return m

    def inputs_for(b, vocab):
        g = torch.Generator().manual_seed(b)
        ids = torch.randint(1000, min(vocab, 20000), (b, args.seq), generator=g)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}

    # A first load and forward pass, then deleted: what the process builds once on first use (code
    # imported lazily, caches) stays resident and is not the model's memory (measured on MiniLM W1A8:
    # a first load costs ~10 MB more than a second one, whose RSS equals its tensor bytes).
    warm = load()
    with torch.inference_mode():
        warm(**inputs_for(1, warm.config.vocab_size))
    del warm
    trim()
    before = rss_kb()
    t0 = time.perf_counter()
    model = load()
    load_s = time.perf_counter() - t0
    trim()
    after = rss_kb()
    tensor_bytes = packed_weight_bytes(model)
    if args.variant == "dynamic_int8":  # packed int8 weights live in opaque torch objects, not buffers
        for m in model.modules():
            if isinstance(m, torch.ao.nn.quantized.dynamic.Linear):
                w, b = m._weight_bias()
                tensor_bytes += w.int_repr().numel() + (b.numel() * 4 if b is not None else 0)
    out = {"variant": args.variant, "rss_after_load_mb": (after - before) / 1024, "tensor_mb": tensor_bytes / 1e6,
           "load_s": load_s, "latency": {}, "kernel": kernel_info()}
    vocab = model.config.vocab_size
    with torch.inference_mode():
        model(**inputs_for(1, vocab))  # touches every weight (from_pretrained maps files lazily)
    trim()
    out["rss_model_mb"] = (rss_kb() - before) / 1024  # the model resident, after one forward pass
    for threads in args.threads:
        torch.set_num_threads(threads)
        for b in args.batches:
            inputs = inputs_for(b, vocab)
            reps = args.repeats if b == 1 else max(3, args.repeats // 4)
            with torch.inference_mode():
                for _ in range(args.warmup if b == 1 else 1):
                    model(**inputs)
                times, cpu = [], []
                for _ in range(reps):
                    t, c = time.perf_counter(), time.thread_time()
                    model(**inputs)
                    times.append(time.perf_counter() - t)
                    cpu.append(time.thread_time() - c)
            out["latency"][f"t{threads}_b{b}"] = {"threads": threads, "batch": b, "repeats": reps,
                                                  "median_ms": statistics.median(times) * 1e3,
                                                  "min_ms": min(times) * 1e3,
                                                  # 1 thread: CPU time of the thread = latency without the
                                                  # time other processes held the core
                                                  "cpu_median_ms": statistics.median(cpu) * 1e3 if threads == 1 else None}
    if args.variant.startswith("packed"):
        out["linears"] = linear_throughput(model, inputs_for, vocab, args)
    out["rss_peak_mb"] = int(next(line.split()[1] for line in Path("/proc/self/status").read_text().splitlines()
                                  if line.startswith("VmHWM:"))) / 1024
    return out


def linear_throughput(model, inputs_for, vocab, args) -> dict:
    """Time spent in the packed linears' work during forward passes (one extra timed pass per thread
    count and batch; summed by the extension itself: activation quantization, the GEMMs and the fused
    FFN, including the LayerNorm that quantizes the FFN's input in the same pass), their integer
    multiply-accumulates per second, and the host's peak for the active path (measured clock x MACs per
    cycle x threads)."""
    import torch

    from xtc.packed import kernels
    from xtc.packed.modules import PackedLinear

    ext = kernels.extension()
    linears = [m for m in model.modules() if isinstance(m, PackedLinear)]
    macs_per_token = sum(m.in_features * m.out_features for m in linears)
    ghz = ext.measure_clock_ghz()
    out = {"isa": ext.get_isa(), "clock_ghz": ghz, "peak_macs_per_cycle_core": ext.peak_macs_per_cycle()}
    try:
        for threads in args.threads:
            torch.set_num_threads(threads)
            for b in args.batches:
                inputs = inputs_for(b, vocab)
                reps = 3 if b == 1 else 1
                with torch.inference_mode():
                    ext.time_linears(True)
                    for _ in range(reps):
                        model(**inputs)
                ms = ext.time_linears(False) / reps * 1e3
                macs = macs_per_token * b * args.seq
                peak = ghz * 1e9 * ext.peak_macs_per_cycle() * threads
                out[f"t{threads}_b{b}"] = {"linear_ms": ms, "macs": macs, "gmacs_per_s": macs / ms / 1e6,
                                           "peak_gmacs_per_s": peak / 1e9, "fraction_of_peak": macs / (ms / 1e3) / peak}
    finally:
        ext.time_linears(False)
    return out


# ------------------------------------------------------------------------------------------------
# Preparation: the model folders every variant loads
# ------------------------------------------------------------------------------------------------
def prepare_ort(model, fp32_dir: Path, out: Path, seq: int) -> int:
    """The four ONNX Runtime int8 graphs of ``model`` (see ORT_CONFIGS) in ``out``; returns the size of
    the smallest file (what a user would ship)."""
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers.optimizer import optimize_model

    out.mkdir(parents=True, exist_ok=True)
    fp32_onnx = out / "fp32.onnx"
    ids = torch.randint(1000, 20000, (1, seq))
    graph_model = model
    if not hasattr(model, "classifier"):  # a bare encoder (sentence embedder): its token states, by keyword

        class Encoder(torch.nn.Module):
            def __init__(self, encoder):
                super().__init__()
                self.encoder = encoder

            def forward(self, input_ids, attention_mask):
                return self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

        graph_model = Encoder(model).eval()
    with torch.inference_mode():
        torch.onnx.export(graph_model, (ids, torch.ones_like(ids)), str(fp32_onnx), input_names=["input_ids", "attention_mask"],
                          output_names=["logits"], opset_version=17, dynamo=False,
                          dynamic_axes={"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"},
                                        "logits": {0: "batch"}})
    graphs = {"plain": fp32_onnx}
    try:
        cfg = model.config
        optimized = optimize_model(str(fp32_onnx), model_type="bert", num_heads=cfg.num_attention_heads,
                                   hidden_size=cfg.hidden_size)
        optimized.save_model_to_file(str(out / "optimized_fp32.onnx"))
        graphs["optimized"] = out / "optimized_fp32.onnx"
    except Exception as e:  # noqa: BLE001 - a graph the optimizer cannot fuse: the plain one still counts
        print(f"  onnxruntime optimizer failed ({type(e).__name__}: {e}); plain graph only", file=sys.stderr)
    import onnx

    sizes = []
    for graph, path in graphs.items():
        for per in ("tensor", "channel"):
            target = out / f"{graph}_{per}.onnx"
            try:  # fused nodes of the optimized graph carry no inferred types: say they are float
                quantize_dynamic(str(path), str(target), weight_type=QuantType.QInt8, per_channel=per == "channel",
                                 extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
                sizes.append(target.stat().st_size)
            except Exception as e:  # noqa: BLE001 - report and go on with the graphs that quantize
                print(f"  quantize_dynamic failed on {graph}/{per} ({type(e).__name__}: {e})", file=sys.stderr)
    return min(sizes)


def prepare(name: str, work: Path, checkpoint: str | None, args=None) -> dict:
    """FP32 folder, packed W1A8 / W2A8 folders, ONNX Runtime graphs and file sizes for one model."""
    import torch
    from transformers import AutoModelForSequenceClassification, BertConfig, BertForSequenceClassification
    from transformers.utils import logging as hf_logging

    import xtc
    from xtc.packed import export, save_packed

    hf_logging.set_verbosity_error()
    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    folder = work / name
    fp32_dir = folder / "fp32"
    if name.endswith("_embed"):  # sentence embedders: the FP32 encoder (ONNX Runtime int8 of it) vs the packed student
        from transformers import AutoModel

        source = MINILM if name == "minilm_embed" else Path(args.mpnet_dir)
        model = AutoModel.from_pretrained(source, add_pooling_layer=False).eval()
        model.save_pretrained(fp32_dir)
        sizes = {"fp32": (fp32_dir / "model.safetensors").stat().st_size}
        paths = {"fp32": fp32_dir, "ort_int8": folder / "ort"}
        sizes["ort_int8"] = prepare_ort(model, fp32_dir, folder / "ort", args.seq)
        if name == "mpnet_embed":  # the model people pick today, beside the compressed large one
            minilm_dir = folder / "fp32_minilm"
            AutoModel.from_pretrained(MINILM, add_pooling_layer=False).eval().save_pretrained(minilm_dir)
            sizes["fp32_minilm"], paths["fp32_minilm"] = (minilm_dir / "model.safetensors").stat().st_size, minilm_dir
        student = Path(args.embed_student).resolve() if args.embed_student else EMBED_STUDENTS[name]
        if (student / "packed" / "model.xtc.safetensors").exists():
            file = student / "packed" / "model.xtc.safetensors"
        else:
            file = export(student, folder / "student")
        sizes["packed_student"], paths["packed_student"] = file.stat().st_size, file.parent
        return {"description": f"{source.name} as a sentence embedder (encoder only) vs the packed student of "
                               f"{student.relative_to(ROOT)}",
                "paths": {k: str(v) for k, v in paths.items()}, "file_bytes": sizes,
                "parameters": sum(p.numel() for p in model.parameters())}
    if name == "mpnet":  # the paper's scale: a trained 12-layer teacher against a trained packed student
        model = AutoModelForSequenceClassification.from_pretrained(args.teacher)
        model.eval().save_pretrained(fp32_dir)
        sizes = {"fp32": (fp32_dir / "model.safetensors").stat().st_size}
        paths = {"fp32": fp32_dir, "ort_int8": folder / "ort"}
        sizes["ort_int8"] = prepare_ort(model, fp32_dir, folder / "ort", args.seq)
        file = export(args.student, folder / "student")
        sizes["packed_student"], paths["packed_student"] = file.stat().st_size, folder / "student"
        layers = len(json.loads((Path(args.student) / "config.json").read_text()).get("xtc_layer_map") or []) or "?"
        return {"description": f"all-mpnet-base-v2 fine-tuned (12 layers, hidden 768) vs the packed student "
                               f"({layers} layers) of {args.student}",
                "paths": {k: str(v) for k, v in paths.items()}, "file_bytes": sizes,
                "parameters": sum(p.numel() for p in model.parameters())}
    if name == "minilm":
        if checkpoint:  # the trained checkpoint's latent weights as the FP32 model of the same architecture
            src = xtc.packed.find_checkpoint(checkpoint)
            model = AutoModelForSequenceClassification.from_pretrained(src)
            model.config.xtc = None
        else:
            model = AutoModelForSequenceClassification.from_pretrained(MINILM, num_labels=2)
        description = "all-MiniLM-L6-v2 (6 layers, hidden 384)"
    else:
        model = BertForSequenceClassification(BertConfig(num_labels=2))
        description = "BERT-base architecture (12 layers, hidden 768), random weights"
    model.eval().save_pretrained(fp32_dir)
    sizes = {"fp32": (fp32_dir / "model.safetensors").stat().st_size}
    with tempfile.TemporaryDirectory() as tmp:
        dyn = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
        torch.save(dyn.state_dict(), Path(tmp) / "dyn.pt")
        sizes["dynamic_int8"] = (Path(tmp) / "dyn.pt").stat().st_size
    paths = {"fp32": fp32_dir, "dynamic_int8": fp32_dir, "ort_int8": folder / "ort"}
    sizes["ort_int8"] = prepare_ort(model, fp32_dir, folder / "ort", args.seq if args else 128)
    for bits in (1, 2):
        variant = f"packed_w{bits}a8"
        out = folder / variant
        if checkpoint and name == "minilm" and xtc.XTCConfig.from_dict(
                json.loads((xtc.packed.find_checkpoint(checkpoint) / "config.json").read_text())["xtc"]).weight_bits == bits:
            file = export(checkpoint, out)
        else:
            q = AutoModelForSequenceClassification.from_pretrained(fp32_dir)
            xtc.quantize_(q, xtc.XTCConfig(weight_bits=bits))
            file = save_packed(q, out)
        sizes[variant] = file.stat().st_size
        paths[variant] = out
    sizes["packed_w1a8_hf_blocks"], paths["packed_w1a8_hf_blocks"] = sizes["packed_w1a8"], paths["packed_w1a8"]
    return {"description": description, "paths": {k: str(v) for k, v in paths.items()}, "file_bytes": sizes,
            "parameters": sum(p.numel() for p in model.parameters())}


def run_variant(path: str, variant: str, args) -> dict:
    cmd = [sys.executable, __file__, "--worker", "--variant", variant, "--path", path, "--threads", *map(str, args.threads),
           "--repeats", str(args.repeats), "--warmup", str(args.warmup), "--seq", str(args.seq),
           "--batches", *map(str, args.batches)] + (["--base"] if getattr(args, "base_model", False) else [])
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"{variant} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def cell_label(key: str) -> str:
    """A latency key of the results ("t2_b32") as the tables write it ("2t b32")."""
    return "{}t b{}".format(*key[1:].split("_b"))


def table(results: dict) -> str:
    """Markdown: per thread count and batch, the wall-clock median (and the ratio to FP32), then the
    1-thread CPU-time medians (robust on a busy machine) with their ratio to FP32 (to FP32 MiniLM when
    only that FP32 model was timed, e.g. ``--variants packed_student fp32_minilm``)."""
    lat = next(iter(next(iter(results["models"].values()))["variants"].values()))["latency"]
    keys = list(lat)
    label = {k: cell_label(k) for k in keys}
    cpu_keys = [k for k in keys if lat[k].get("cpu_median_ms") is not None]
    head = ["model", "variant", "file", "resident"]
    # one thread: CPU time only (it equals the wall time on an idle core and ignores other processes)
    wall_keys = [k for k in keys if k not in cpu_keys]
    head += [f"{label[k]}: wall ms" for k in wall_keys] + [f"{label[k]}: CPU ms" for k in cpu_keys]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in results["models"].items():
        fp = r["variants"].get("fp32") or r["variants"].get("fp32_minilm")
        for v in VARIANTS:
            x = r["variants"].get(v)
            if x is None:
                continue
            row = [name, v, f"{r['file_bytes'][v] / 1e6:.2f} MB", f"{x['rss_model_mb']:.1f} MB"]
            if v == "ort_int8":
                row[3] = ""
            for k, field in [(k, "median_ms") for k in wall_keys] + [(k, "cpu_median_ms") for k in cpu_keys]:
                ms = x["latency"][k][field]
                row.append(f"{ms:.1f}" + (f" ({ms / fp['latency'][k][field]:.2f})" if fp else ""))
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def ort_table(results: dict) -> str:
    """Markdown: each packed variant against the fastest ONNX Runtime int8 graph, per thread count and
    batch (1 thread: CPU time, else wall), batch-32 throughput, and the linear layers' share."""
    lines = []
    for name, r in results["models"].items():
        v = r["variants"]
        if "ort_int8" not in v:
            continue
        ort = v["ort_int8"]["latency"]
        keys = list(ort)
        field = {k: "cpu_median_ms" if ort[k].get("cpu_median_ms") is not None else "median_ms" for k in keys}
        label = {k: cell_label(k) for k in keys}
        if not lines:
            head = ["model", "variant"] + [f"{label[k]}: ms (x ORT)" for k in keys]
            head += [f"{label[k]}: sent/s" for k in keys if k.endswith("_b32")]
            head += ["linears, 1t b1: GMAC/s (of peak)", "linears, 1t b32: GMAC/s (of peak)"]
            lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for variant in ["ort_int8"] + [x for x in v if x.startswith("packed")]:
            lat = v[variant]["latency"]
            row = [name, variant]
            for k in keys:
                ms = lat[k][field[k]]
                row.append(f"{ms:.1f}" + ("" if variant == "ort_int8" else f" ({ms / ort[k][field[k]]:.2f})"))
            row += [f"{32e3 / lat[k]['median_ms']:.0f}" for k in keys if k.endswith("_b32")]
            lin = v[variant].get("linears", {})
            for k in ("t1_b1", "t1_b32"):
                x = lin.get(k)
                row.append(f"{x['gmacs_per_s']:.0f} ({100 * x['fraction_of_peak']:.0f}% of {x['peak_gmacs_per_s']:.0f})"
                           if x else "")
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["minilm", "bert-base"],
                   choices=["minilm", "bert-base", "mpnet", "minilm_embed", "mpnet_embed"])
    p.add_argument("--mpnet-dir", default=str(Path.home() / ".cache" / "xtc-models" / "all-mpnet-base-v2"),
                   help="--models mpnet_embed: all-mpnet-base-v2 as it is (the FP32 embedder)")
    p.add_argument("--base", action="store_true", help=argparse.SUPPRESS)  # worker: load the bare encoder
    p.add_argument("--teacher", default=str(MPNET_TEACHER), help="--models mpnet: the FP32 12-layer model")
    p.add_argument("--student", default=str(MPNET_STUDENT), help="--models mpnet: the trained student to pack")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--embed-student", help="--models minilm_embed / mpnet_embed: the run_embedding run folder whose "
                                           "packed student to time (default: the row of EMBED_STUDENTS)")
    p.add_argument("--checkpoint", help="a trained xtc run or checkpoint folder (MiniLM-L6 architecture) to export")
    p.add_argument("--batches", nargs="+", type=int, default=[1, 32])
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--threads", type=int, nargs="+", default=[2, 1],
                   help="torch threads; each count is timed in the same process (default: 2, then 1)")
    p.add_argument("--repeats", type=int, default=20, help="timed passes at batch 1 (a quarter, >= 3, at larger batches)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--out", type=Path, default=RESULTS / "inference.json")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--variant", help=argparse.SUPPRESS)
    p.add_argument("--path", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return
    results = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "machine": {
        "cpu": _cpu_name(), "isa": _isa(), "cores_visible": os.cpu_count(), "threads": args.threads,
        "python": platform.python_version(),
        "load_average_at_start": os.getloadavg()},
        "seq": args.seq, "batches": args.batches, "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            print(f"[{name}] preparing", file=sys.stderr, flush=True)
            r = prepare(name, Path(tmp), args.checkpoint, args)
            r["variants"] = {}
            for v in [v for v in args.variants if v in r["paths"]]:
                print(f"[{name}] {v}", file=sys.stderr, flush=True)
                args.base_model = name.endswith("_embed") and not v.startswith("packed")
                r["variants"][v] = run_variant(r["paths"][v], v, args)
            del r["paths"]
            results["models"][name] = r
    results["load_average_at_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(table(results))
    print()
    print(ort_table(results))
    print(f"\n(written to {args.out}; load average at the end: {results['load_average_at_end']})")


def _isa() -> list[str]:
    """The host's vector and matrix extensions that matter for int8 (from /proc/cpuinfo's flags)."""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return []
    wanted = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16")
    return [f for f in wanted if f in flags]


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    main()
