"""The packed file: one safetensors file, ``model.xtc.safetensors``, no pickle.

Layout (format version 1)
-------------------------
Tensors, named after the model's own parameter names:

* quantized weight ``P`` (a linear in a transformer block, or the word embedding):
  ``P.codes`` uint8 ``[rows, packed bytes per row]`` (see :mod:`xtc.packed.bitpack`) and
  ``P.scales`` float32 ``[groups]`` (the word embedding: one scale per row);
* 8-bit weight ``P`` (option ``int8_extras``: position embeddings, pooler): ``P.codes`` int8
  ``[rows, cols]`` and ``P.scales`` float32 ``[rows]`` (symmetric, per row, ``max|row| / 127``);
* any other tensor ``P`` (LayerNorm, biases, token-type embeddings, pooler, classifier): ``P`` itself,
  float16 (default) or float32.

String metadata (safetensors ``__metadata__``), JSON where structured:

* ``format`` = ``xtc-packed``, ``format_version`` = ``1``, ``xtc_version``;
* ``entries``: ``{P: {"kind": "binary"|"ternary"|"int8"|"float", "shape": [...], ...}}``, one per
  logical tensor (quantized: ``groups``, ``packing``, ``role``; float: ``dtype``);
* ``xtc``: the XTCConfig dict; ``config``: the transformers architecture config; ``model_class``;
  ``layer_map``; ``teacher_num_layers`` (when known, for size ratios);
* ``checksum``: ``sha256:`` of every tensor (sorted by name: name, dtype, shape, bytes) and of
  the metadata above, so corruption or tampering anywhere is refused.

Everything a reader needs is validated before a model is built: a file from a newer format version,
a truncated or corrupted file, a missing, unexpected or wrong-shaped tensor, an invalid code byte or
a bad checksum each raise :class:`PackedFormatError` with a one-line message.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import Any

import torch

from ..errors import PackedFormatError  # noqa: F401  (re-exported: raised here, defined there)
from . import bitpack

FORMAT_NAME = "xtc-packed"
FORMAT_VERSION = 1
FILE_NAME = "model.xtc.safetensors"
MAX_HEADER = 100 * 1024 * 1024  # safetensors' own limit on the JSON header

KINDS = ("binary", "ternary", "int8", "float")
FLOAT_DTYPES = {"fp16": torch.float16, "fp32": torch.float32}
_ST_DTYPES = {torch.uint8: "U8", torch.int8: "I8", torch.float16: "F16", torch.float32: "F32"}


def resolve_file(path: str | Path) -> Path:
    """``path`` itself if it is a file, else ``path / model.xtc.safetensors``."""
    p = Path(path)
    return p / FILE_NAME if p.is_dir() or not p.suffix else p


# ------------------------------------------------------------------------------------------------
# What each entry stores
# ------------------------------------------------------------------------------------------------
def stored_tensors(name: str, entry: dict) -> dict[str, tuple[torch.dtype, tuple[int, ...]]]:
    """The file tensors (name -> dtype, shape) that logical tensor ``name`` must have."""
    kind, shape = entry.get("kind"), tuple(int(s) for s in entry.get("shape", ()))
    if kind in ("binary", "ternary"):
        if len(shape) != 2:
            raise PackedFormatError(f"entry {name}: a quantized weight must be 2-D, got shape {list(shape)}")
        packing = entry.get("packing")
        if packing not in bitpack.PACKINGS or (kind == "binary") != (packing == "bits"):
            raise PackedFormatError(f"entry {name}: packing {packing!r} does not fit kind {kind!r}")
        groups = int(entry.get("groups", 0))
        if groups < 1 or (shape[0] * shape[1]) % groups:
            raise PackedFormatError(f"entry {name}: {groups} groups do not divide shape {list(shape)}")
        return {f"{name}.codes": (torch.uint8, (shape[0], bitpack.packed_cols(packing, shape[1]))),
                f"{name}.scales": (torch.float32, (groups,))}
    if kind == "int8":
        if len(shape) != 2:
            raise PackedFormatError(f"entry {name}: an int8 weight must be 2-D, got shape {list(shape)}")
        return {f"{name}.codes": (torch.int8, shape), f"{name}.scales": (torch.float32, (shape[0],))}
    if kind == "float":
        dtype = FLOAT_DTYPES.get(entry.get("dtype"))
        if dtype is None:
            raise PackedFormatError(f"entry {name}: unknown float dtype {entry.get('dtype')!r}")
        return {name: (dtype, shape)}
    raise PackedFormatError(f"entry {name}: unknown kind {kind!r} (known: {', '.join(KINDS)})")


# ------------------------------------------------------------------------------------------------
# Checksum
# ------------------------------------------------------------------------------------------------
def checksum(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> str:
    """sha256 over the metadata (without ``checksum``) and every tensor, in name order."""
    h = hashlib.sha256()
    meta = {k: v for k, v in metadata.items() if k != "checksum"}
    h.update(json.dumps(meta, sort_keys=True).encode())
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        h.update(f"\0{name}\0{_ST_DTYPES.get(t.dtype, str(t.dtype))}\0{list(t.shape)}\0".encode())
        h.update(memoryview(t.view(torch.uint8).reshape(-1).numpy()))
    return "sha256:" + h.hexdigest()


# ------------------------------------------------------------------------------------------------
# Write
# ------------------------------------------------------------------------------------------------
def write(path: str | Path, tensors: dict[str, torch.Tensor], entries: dict[str, dict],
          metadata: dict[str, Any]) -> Path:
    """Write the file atomically (temporary file + rename). ``metadata`` values may be JSON-able."""
    from safetensors.torch import save

    file = resolve_file(path)
    file.parent.mkdir(parents=True, exist_ok=True)
    for name, entry in entries.items():  # the writer checks what the reader will check
        for tname, (dtype, shape) in stored_tensors(name, entry).items():
            t = tensors[tname]
            assert t.dtype == dtype and tuple(t.shape) == shape, (tname, t.dtype, tuple(t.shape), dtype, shape)
    meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}
    meta.update(format=FORMAT_NAME, format_version=str(FORMAT_VERSION), entries=json.dumps(entries))
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    meta["checksum"] = checksum(tensors, meta)
    tmp = file.with_name(file.name + ".tmp")
    tmp.write_bytes(save(tensors, metadata=meta))
    tmp.replace(file)
    return file


# ------------------------------------------------------------------------------------------------
# Read
# ------------------------------------------------------------------------------------------------
def read_header(path: str | Path) -> tuple[Path, dict, dict[str, str]]:
    """``(file, tensor header, metadata)`` after the checks that need only the header."""
    file = resolve_file(path)
    if not file.is_file():
        raise PackedFormatError(f"{file}: no such packed model file (expected {FILE_NAME} from xtc export)")
    size = file.stat().st_size
    with file.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise PackedFormatError(f"{file}: truncated (only {size} bytes)")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER or 8 + n > size:
            raise PackedFormatError(f"{file}: truncated or not a safetensors file (header of {n} bytes, file of {size})")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise PackedFormatError(f"{file}: corrupted header ({e})") from None
    if not isinstance(header, dict):
        raise PackedFormatError(f"{file}: corrupted header (not a JSON object)")
    meta = header.pop("__metadata__", None) or {}
    if meta.get("format") != FORMAT_NAME:
        raise PackedFormatError(f"{file}: not an xtc packed model (a plain safetensors file? "
                                "create one with `xtc export` or xtc.packed.save_packed)")
    try:
        version = int(meta.get("format_version", ""))
    except ValueError:
        raise PackedFormatError(f"{file}: corrupted metadata (format_version {meta.get('format_version')!r})") from None
    if version > FORMAT_VERSION:
        raise PackedFormatError(f"{file}: written by a newer xtc (format version {version}; this xtc reads up to "
                                f"{FORMAT_VERSION}): upgrade xtc to load it")
    if version < 1:
        raise PackedFormatError(f"{file}: corrupted metadata (format version {version})")
    try:
        data_end = max((int(v["data_offsets"][1]) for v in header.values()), default=0)
    except (TypeError, KeyError, IndexError, ValueError):
        raise PackedFormatError(f"{file}: corrupted header (bad tensor entries)") from None
    if 8 + n + data_end != size:
        raise PackedFormatError(f"{file}: truncated or padded ({size} bytes, the header describes "
                                f"{8 + n + data_end})")
    return file, header, meta


_REQUIRED = object()


def _json(file: Path, meta: dict, key: str, default=_REQUIRED):
    if key not in meta:
        if default is not _REQUIRED:
            return default
        raise PackedFormatError(f"{file}: corrupted metadata (no {key!r})")
    try:
        return json.loads(meta[key])
    except json.JSONDecodeError:
        raise PackedFormatError(f"{file}: corrupted metadata ({key!r} is not JSON)") from None


def read(path: str | Path) -> tuple[dict[str, dict], dict[str, torch.Tensor], dict[str, Any]]:
    """``(entries, tensors, info)`` of a validated file; ``info`` holds the decoded metadata."""
    file, _, meta = read_header(path)
    try:
        return _read(file, meta)
    except PackedFormatError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
        # Only a file crafted with a valid checksum gets here (random damage fails the checksum).
        raise PackedFormatError(f"{file}: corrupted metadata ({type(e).__name__}: {e})") from None


def _read(file: Path, meta: dict[str, str]) -> tuple[dict[str, dict], dict[str, torch.Tensor], dict[str, Any]]:
    from safetensors.torch import load

    try:
        tensors = load(file.read_bytes())
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
        raise PackedFormatError(f"{file}: truncated or corrupted ({str(e).splitlines()[0]})") from None
    if meta.get("checksum") != checksum(tensors, meta):
        raise PackedFormatError(f"{file}: checksum mismatch: the file is corrupted or was modified after export")
    entries = _json(file, meta, "entries")
    if not isinstance(entries, dict) or not all(isinstance(e, dict) for e in entries.values()):
        raise PackedFormatError(f"{file}: corrupted metadata ('entries' is not a table of tensors)")
    expected: dict[str, tuple] = {}
    for name, entry in entries.items():
        expected.update(stored_tensors(name, entry))
    for tname, (dtype, shape) in expected.items():
        if tname not in tensors:
            raise PackedFormatError(f"{file}: missing tensor {tname}")
        t = tensors[tname]
        if t.dtype != dtype or tuple(t.shape) != shape:
            raise PackedFormatError(f"{file}: tensor {tname} is {str(t.dtype)[6:]} {list(t.shape)}, "
                                    f"expected {str(dtype)[6:]} {list(shape)}")
    extra = sorted(set(tensors) - set(expected))
    if extra:
        raise PackedFormatError(f"{file}: unexpected tensor {extra[0]} (not described by the metadata)")
    for name, entry in entries.items():
        if entry["kind"] in ("binary", "ternary"):
            bad = bitpack.invalid_bytes(tensors[f"{name}.codes"], entry["packing"])
            if bad:
                raise PackedFormatError(f"{file}: tensor {name}.codes holds {bad} invalid {entry['packing']} bytes")
        if entry["kind"] != "float":
            s = tensors[f"{name}.scales"]
            if not bool(torch.isfinite(s).all()) or bool((s < 0).any()):
                raise PackedFormatError(f"{file}: tensor {name}.scales holds negative or non-finite scales")
    for key in ("xtc", "config"):
        if not isinstance(_json(file, meta, key), dict):
            raise PackedFormatError(f"{file}: corrupted metadata ({key!r} is not a JSON object)")
    info = {
        "file": file,
        "format_version": int(meta["format_version"]),
        "xtc_version": meta.get("xtc_version"),
        "xtc": _json(file, meta, "xtc"),
        "config": _json(file, meta, "config"),
        "model_class": meta.get("model_class"),
        "layer_map": _json(file, meta, "layer_map", []),
        "teacher_num_layers": _json(file, meta, "teacher_num_layers", None),
        "no_pooler": _json(file, meta, "no_pooler", False),  # a sentence embedder (built without its pooler)
    }
    return entries, tensors, info
