"""Command functions for ``xtc export``, ``xtc size`` and ``xtc predict``.

Plain functions with typer-style annotations; the main CLI registers them. They only parse,
call the Python API and print.
"""

from __future__ import annotations

import sys
from pathlib import Path


def export_cmd(run_dir: Path, out_dir: Path, fp_dtype: str = "fp16", int8_extras: bool = False,
               ternary_packing: str = "base3", teacher_layers: int | None = None) -> None:
    """Pack the quantized checkpoint of RUN_DIR (or a checkpoint folder) into OUT_DIR.

    --fp-dtype fp16|fp32 for the full-precision tensors; --int8-extras stores position embeddings and
    the pooler in 8 bits; --ternary-packing base3 (1.6 bits/weight) or 2bit.
    """
    from .export import export

    file = export(run_dir, out_dir, fp_dtype=fp_dtype, int8_extras=int8_extras, ternary_packing=ternary_packing,
                  teacher_num_layers=teacher_layers)
    print(f"wrote {file} ({file.stat().st_size / 1e6:.2f} MB)")
    size_cmd(file, teacher_layers=teacher_layers)


def size_cmd(path: Path, teacher_layers: int | None = None) -> None:
    """Size report of a packed model (file or folder): bytes per class of tensors and ratios vs FP32."""
    from .report import HEADERS, format_rows, size_report

    rows = format_rows(size_report(path, teacher_num_layers=teacher_layers))
    try:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=str(path))
        for i, h in enumerate(HEADERS):
            table.add_column(h, justify="left" if i == 0 else "right", no_wrap=True)
        for r in rows:
            table.add_row(*r)
        console = Console()
        Console(width=max(console.width, 120)).print(table)  # pipes default to 80 columns: too narrow
    except ImportError:
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(HEADERS)]
        for r in [HEADERS] + rows:
            print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))


def _read_lines(source: Path) -> list[str]:
    if str(source) == "-":
        text = sys.stdin.read()
    else:
        text = Path(source).read_text(encoding="utf-8-sig")
    return text.splitlines()


def predict(model_dir: Path, lines: list[str], batch_size: int = 32, max_length: int = 128) -> tuple[list, list]:
    """(header, rows) for ``lines`` (one sentence, or two separated by a tab, per line), computed
    from the packed folder alone: label names come from the stored architecture config."""
    import torch
    from transformers import AutoTokenizer

    from .model import load_packed

    model = load_packed(model_dir)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    except (OSError, ValueError) as e:
        raise FileNotFoundError(f"{model_dir}: no tokenizer in the packed folder ({str(e).splitlines()[0]})") from None
    cfg = model.config
    regression = cfg.problem_type == "regression" or cfg.num_labels == 1
    labels = [cfg.id2label.get(i, str(i)) for i in range(cfg.num_labels)]
    header = ["score"] if regression else ["label", "score"] + [f"p_{lab}" for lab in labels]
    rows = []
    with torch.inference_mode():
        for start in range(0, len(lines), batch_size):
            chunk = [line.split("\t", 1) for line in lines[start:start + batch_size]]
            pair = all(len(c) == 2 for c in chunk)
            a = [c[0] for c in chunk]
            b = [c[1] for c in chunk] if pair else None
            if not pair:  # mixed batch: keep everything as single sentences, tabs as spaces
                a = [" ".join(c) for c in chunk]
            enc = tokenizer(a, b, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
            logits = model(**enc).logits.float()
            if regression:
                rows += [[f"{v:.6g}"] for v in logits[:, 0].tolist()]
                continue
            probs = logits.softmax(-1)
            for p in probs.tolist():
                k = max(range(len(p)), key=p.__getitem__)
                rows.append([labels[k], f"{p[k]:.6f}"] + [f"{v:.6f}" for v in p])
    return header, rows


def predict_cmd(model_dir: Path, input: Path = Path("-"), output: Path = Path("-"), batch_size: int = 32,
                max_length: int = 128) -> None:
    """Predict with a packed model folder: reads sentences (one per line, or two tab-separated for
    pair tasks) from INPUT (- = stdin), writes label and scores as TSV to OUTPUT (- = stdout)."""
    header, rows = predict(model_dir, _read_lines(input), batch_size=batch_size, max_length=max_length)
    text = "\n".join("\t".join(r) for r in [header] + rows) + "\n"
    if str(output) == "-":
        sys.stdout.write(text)
    else:
        Path(output).write_text(text, encoding="utf-8")
