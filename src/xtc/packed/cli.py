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


def parse_input(lines: list[str]) -> tuple[list[int], list[str], list[str] | None]:
    """(line numbers, first sentences, second sentences or None) of the non-blank ``lines``.

    Whether the input is sentence pairs is decided once, from the whole input, so that a line's
    prediction never depends on its neighbours: every line holds two tab-separated sentences, or
    every line one. Blank lines are skipped (their numbers are left out of the result); a mixed
    input is refused with the number of the first line that breaks the rule.
    """
    from ..errors import InputError

    numbers = [i for i, line in enumerate(lines, 1) if line.strip()]
    if not numbers:
        raise InputError("the input has no sentences: give one sentence per line, or two separated by a tab")
    tabs = {i: lines[i - 1].count("\t") for i in numbers}
    too_many = next((i for i in numbers if tabs[i] > 1), None)
    if too_many is not None:
        raise InputError(f"line {too_many} has {tabs[too_many]} tabs: give one sentence, or two separated by "
                         "one tab")
    first = numbers[0]
    pair = tabs[first] == 1
    odd = next((i for i in numbers if tabs[i] != tabs[first]), None)
    if odd is not None:
        kinds = ("a sentence pair (one tab)", "a single sentence (no tab)")
        raise InputError(f"line {odd} is {kinds[not tabs[odd]]} but line {first} is {kinds[not pair]}: an input "
                         "holds one kind; put single sentences and pairs in separate inputs")
    parts = [lines[i - 1].split("\t") for i in numbers]
    return numbers, [p[0] for p in parts], ([p[1] for p in parts] if pair else None)


def predict(model_dir: Path, lines: list[str], batch_size: int = 32,
            max_length: int | None = None) -> tuple[list, list]:
    """(header, rows) for ``lines`` (one sentence, or two separated by a tab, per line; blank lines
    skipped), computed from the packed folder alone: label names come from the stored architecture
    config.

    A line's scores depend on that line alone: lines are batched with others of the same token
    length, so no line is ever padded and the batch size or the neighbours change nothing.
    """
    import torch

    from ..data.batches import same_length_batches
    from ..errors import InputError

    if batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {batch_size}")
    model, tokenizer = _packed_with_tokenizer(model_dir)
    limit = getattr(model.config, "max_position_embeddings", None) or 512
    if model.config.model_type in ("roberta", "xlm-roberta", "camembert", "mpnet"):
        limit -= 2  # their positions start after the padding index (pad_token_id + 1)
    if max_length is None:
        max_length = min(128, limit)
    if not 2 <= max_length <= limit:
        raise InputError(f"--max-length must be 2..{limit} (the model's position limit), got {max_length}")
    numbers, text_a, text_b = parse_input(lines)
    cfg = model.config
    regression = cfg.problem_type == "regression" or cfg.num_labels == 1
    labels = [cfg.id2label.get(i, str(i)) for i in range(cfg.num_labels)]
    header = ["score"] if regression else ["label", "score"] + [f"p_{lab}" for lab in labels]
    enc = tokenizer(text_a, text_b, truncation=True, max_length=max_length)
    ids = enc["input_ids"]
    too_big = next((n for n, row in zip(numbers, ids) if max(row) >= cfg.vocab_size), None)
    if too_big is not None:
        raise InputError(f"line {too_big}: the tokenizer of {model_dir} gives token ids past the model's "
                         f"vocabulary ({cfg.vocab_size}): the tokenizer files do not belong to this model")
    out: list[list[str] | None] = [None] * len(ids)
    with torch.inference_mode():
        for chunk in same_length_batches(ids, batch_size):
            batch = {key: torch.tensor([enc[key][k] for k in chunk]) for key in enc.keys()}
            logits = model(**batch).logits.float()
            if regression:
                for k, v in zip(chunk, logits[:, 0].tolist()):
                    out[k] = [f"{v:.6g}"]
                continue
            for k, p in zip(chunk, logits.softmax(-1).tolist()):
                best = max(range(len(p)), key=p.__getitem__)
                out[k] = [labels[best], f"{p[best]:.6f}"] + [f"{v:.6f}" for v in p]
    skipped = len(lines) - len(numbers)
    if skipped:
        print(f"note: skipped {skipped} blank line(s); one output row per non-blank line", file=sys.stderr)
    return header, out


def predict_cmd(model_dir: Path, input: Path = Path("-"), output: Path = Path("-"), batch_size: int = 32,
                max_length: int | None = None) -> None:
    """Predict with a packed model folder: reads sentences (one per line, or two tab-separated for
    pair tasks) from INPUT (- = stdin), writes label and scores as TSV to OUTPUT (- = stdout)."""
    header, rows = predict(model_dir, _read_lines(input), batch_size=batch_size, max_length=max_length)
    text = "\n".join("\t".join(r) for r in [header] + rows) + "\n"
    if str(output) == "-":
        sys.stdout.write(text)
    else:
        Path(output).write_text(text, encoding="utf-8")


def _packed_with_tokenizer(model_dir: Path):
    from transformers import AutoTokenizer

    from ..errors import InputError
    from .model import load_packed

    model = load_packed(model_dir)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    except (OSError, ValueError) as e:
        raise InputError(f"{model_dir}: no tokenizer in the packed folder ({str(e).splitlines()[0]})") from None
    return model, tokenizer


def embed(model_dir: Path, lines: list[str], batch_size: int = 32, max_length: int = 128):
    """Embeddings ``[N, H]`` of the non-blank ``lines`` (one sentence each), from the packed folder
    alone, pooled and normalised as the compressed embedder records (:func:`xtc.embedding.encode`)."""
    from ..embedding import encode, model_pooling
    from ..errors import InputError

    model, tokenizer = _packed_with_tokenizer(model_dir)
    try:
        model_pooling(model)
    except InputError:
        raise InputError(f"{model_dir} is a classifier, not a sentence embedder (compressed without --task "
                         "embedding): use xtc predict") from None
    sentences = [line.strip() for line in lines if line.strip()]
    if not sentences:
        raise InputError("the input has no sentences: give one sentence per line")
    skipped = len(lines) - len(sentences)
    if skipped:
        print(f"note: skipped {skipped} blank line(s); one vector per non-blank line", file=sys.stderr)
    return encode(model, tokenizer, sentences, batch_size=batch_size, max_length=max_length)


def embed_cmd(model_dir: Path, input: Path = Path("-"), output: Path = Path("-"), batch_size: int = 32,
              max_length: int = 128) -> None:
    """Write one vector per sentence: ``.npy`` (float32 [N, H]) by the output's suffix, else JSON
    lines (one list of floats per line; - = stdout)."""
    import json

    import numpy as np

    vectors = embed(model_dir, _read_lines(input), batch_size=batch_size, max_length=max_length)
    if str(output) != "-" and Path(output).suffix.lower() == ".npy":
        with open(output, "wb") as f:
            np.save(f, vectors)
        print(f"wrote {output}: {vectors.shape[0]} vectors of {vectors.shape[1]} floats", file=sys.stderr)
        return
    text = "".join(json.dumps([float(x) for x in row]) + "\n" for row in vectors)
    if str(output) == "-":
        sys.stdout.write(text)
    else:
        Path(output).write_text(text, encoding="utf-8")
