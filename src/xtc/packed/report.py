"""Size report of a packed file: what each class of tensors costs, and the compression ratios.

Only the file's header is read (tensor shapes, byte ranges, metadata), so a report is instant for
any model size. The FP32 reference is the safetensors file that ``save_pretrained`` writes for the
same architecture: every logical tensor in float32 plus its JSON header, computed exactly.

Ratios given:

* per class and for the whole file, against FP32 of the *same* architecture (a 1-bit model cannot
  beat 32x here: the word embedding and the linears are most of the parameters);
* ``quantized tensors only``: FP32 bytes of the quantized weights over their codes + scales, the
  way the XTC paper counts;
* when the depth of the teacher is known (recorded by ``xtc export`` from the run folder, given to
  ``save_packed(..., teacher_num_layers=)`` or passed here), the same two ratios against the FP32
  teacher the student was reduced from (the paper's "over 50x smaller" for 5-layer 1-bit BERT).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from . import format as fmt

_LAYER = re.compile(r"^(?P<pre>.*?\.layers?\.)(?P<i>\d+)\.(?P<rest>.+)$")


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def fp32_file_bytes(shapes: dict[str, list[int]]) -> int:
    """Exact size of a float32 safetensors file holding these tensors (header included)."""
    header: dict = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name in sorted(shapes):
        n = _numel(shapes[name]) * 4
        header[name] = {"dtype": "F32", "shape": list(shapes[name]), "data_offsets": [offset, offset + n]}
        offset += n
    text = json.dumps(header, separators=(",", ":"))
    return 8 + len(text) + (-len(text)) % 8 + offset  # safetensors pads the header to 8 bytes


def _teacher_shapes(shapes: dict[str, list[int]], student_layers: int, teacher_layers: int) -> dict:
    """The student's tensors with the transformer blocks repeated up to ``teacher_layers``."""
    out = dict(shapes)
    block0 = {}
    for name, shape in shapes.items():
        m = _LAYER.match(name)
        if m and m.group("i") == "0":
            block0[(m.group("pre"), m.group("rest"))] = shape
    for i in range(student_layers, teacher_layers):
        for (pre, rest), shape in block0.items():
            out[f"{pre}{i}.{rest}"] = shape
    return out


def size_report(path: str | Path, teacher_num_layers: int | None = None) -> list[dict]:
    """Rows ``{part, parameters, bits_per_param, bytes, fp32_bytes, ratio}`` (ratio = fp32 / bytes).

    The file is read and checked as ``load_packed`` checks it (header, checksum, every tensor), so a
    damaged file raises :class:`PackedFormatError` instead of a report of sizes it does not have."""
    entries, tensors, info = fmt.read(path)
    file = info["file"]
    size = {name: t.numel() * t.element_size() for name, t in tensors.items()}
    del tensors

    def stored(name, entry):
        return sum(size.get(t, 0) for t in fmt.stored_tensors(name, entry))

    parts = {"quantized linears (codes)": [0, 0], "word embeddings (codes)": [0, 0], "scales": [0, 0],
             "full-precision rest": [0, 0]}
    quant_params = quant_bytes = 0
    for name, e in entries.items():
        n = _numel(e["shape"])
        if e["kind"] in ("binary", "ternary"):
            key = "word embeddings (codes)" if e.get("role") == "embedding" else "quantized linears (codes)"
            parts[key][0] += n
            parts[key][1] += size[f"{name}.codes"]
            parts["scales"][0] += int(e["groups"])
            parts["scales"][1] += size[f"{name}.scales"]
            quant_params += n
            quant_bytes += stored(name, e)
        else:
            parts["full-precision rest"][0] += n
            parts["full-precision rest"][1] += stored(name, e)

    def row(part, params, nbytes, fp32):
        return {"part": part, "parameters": params, "bits_per_param": 8 * nbytes / params if params else 0.0,
                "bytes": nbytes, "fp32_bytes": fp32, "ratio": fp32 / nbytes if nbytes else float("inf")}

    rows = [row(k, p, b, 4 * p) for k, (p, b) in parts.items()]
    file_size = file.stat().st_size
    rows.append(row("header + metadata", 0, file_size - sum(size.values()), 0))
    shapes = {name: e["shape"] for name, e in entries.items()}
    params = sum(_numel(s) for s in shapes.values())
    rows.append(row("total: whole file vs FP32 file", params, file_size, fp32_file_bytes(shapes)))
    rows.append(row("quantized tensors only (paper's count)", quant_params, quant_bytes, 4 * quant_params))
    student_layers = len(info["layer_map"])
    teacher = teacher_num_layers or info["teacher_num_layers"]
    if teacher and student_layers and int(teacher) > student_layers:
        t_shapes = _teacher_shapes(shapes, student_layers, int(teacher))
        quantized = {n for n, e in entries.items() if e["kind"] in ("binary", "ternary")}
        t_quant = sum(_numel(s) for n, s in t_shapes.items()
                      if n in quantized or (_LAYER.match(n) and _block0_name(n) in quantized))
        rows.append(row(f"vs FP32 teacher ({teacher} layers): whole file", params, file_size,
                        fp32_file_bytes(t_shapes)))
        rows.append(row(f"vs FP32 teacher ({teacher} layers): quantized tensors", quant_params, quant_bytes,
                        4 * t_quant))
    return rows


def _block0_name(name: str) -> str:
    m = _LAYER.match(name)
    return f"{m.group('pre')}0.{m.group('rest')}"


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    return str(n)


def format_rows(rows: list[dict]) -> list[list[str]]:
    """Rows as strings for a table: part, parameters, bits/param, bytes, FP32 bytes, ratio."""
    out = []
    for r in rows:
        out.append([r["part"], f"{r['parameters']:,}" if r["parameters"] else "",
                    f"{r['bits_per_param']:.3f}" if r["parameters"] else "", _human(r["bytes"]),
                    _human(r["fp32_bytes"]) if r["fp32_bytes"] else "",
                    f"{r['ratio']:.1f}x" if r["fp32_bytes"] else ""])
    return out


HEADERS = ["tensors", "parameters", "bits/param", "bytes", "FP32 bytes", "FP32 / packed"]


def markdown_table(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    lines += ["| " + " | ".join(r) + " |" for r in format_rows(rows)]
    return "\n".join(lines)
