"""Which Trainer checkpoint a resumed run may trust.

transformers' Trainer (``Trainer._save_checkpoint``) writes ``checkpoint-N/`` in place, not in a
temporary folder renamed at the end: model weights, then optimizer, scheduler and RNG states, then
``trainer_state.json`` last; and it deletes older checkpoints (``rotate_checkpoints``) after that.
A run killed while saving therefore leaves a folder with the final name but without all its files
(or, killed while rotating, an old folder half deleted), and ``get_last_checkpoint`` would pick it
by its name alone. Here a checkpoint counts only when it is complete:

* ``trainer_state.json`` parses and its ``global_step`` is the folder's N (it is written last);
* it holds model weights (safetensors / bin, sharded or not) with ``optimizer.pt`` and
  ``scheduler.pt``, or a DeepSpeed / FSDP state folder;
* every safetensors file has a readable header and exactly the size its header announces, and every
  ``.pt`` / ``.pth`` / ``.bin`` file (torch's zip format) has a readable central directory, so a
  file cut short (e.g. by a crash of the machine before the page cache reached the disk) is caught.

``resume_point`` returns the newest complete checkpoint, and (on the main process) deletes the
incomplete ones so that they can neither be picked up later nor confuse checkpoint rotation.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import struct
import zipfile
from pathlib import Path
from typing import Optional

logger = logging.getLogger(__name__)

_CHECKPOINT = re.compile(r"checkpoint-(\d+)")
_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                 "pytorch_model.bin.index.json")
_WEIGHT_DIRS = ("global_step*", "pytorch_model_fsdp_*")  # DeepSpeed / FSDP sharded states


def _safetensors_problem(path: Path) -> Optional[str]:
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > size - 8:
                return f"{path.name} is cut short (header)"
            header = json.loads(f.read(n))
    except (OSError, struct.error, ValueError, UnicodeDecodeError):
        return f"{path.name} has no readable safetensors header"
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    if size != 8 + n + end:
        return f"{path.name} is {size} bytes, its header announces {8 + n + end}"
    return None


def _zip_problem(path: Path) -> Optional[str]:
    try:
        with zipfile.ZipFile(path) as z:
            z.infolist()
    except (OSError, zipfile.BadZipFile, ValueError):
        return f"{path.name} is not a complete torch file"
    return None


def checkpoint_problem(folder: Path) -> Optional[str]:
    """Why ``folder`` cannot be resumed from, or None when it is a complete checkpoint."""
    folder = Path(folder)
    m = _CHECKPOINT.fullmatch(folder.name)
    if not folder.is_dir() or m is None:
        return "not a checkpoint folder"
    try:
        step = json.loads((folder / "trainer_state.json").read_text())["global_step"]
    except (OSError, ValueError, KeyError, TypeError):
        return "no complete trainer_state.json (the save was interrupted)"
    if step != int(m.group(1)):
        return f"trainer_state.json says step {step}"
    sharded = any(any(folder.glob(p)) for p in _WEIGHT_DIRS)
    if not sharded:
        if not any((folder / n).exists() for n in _WEIGHT_FILES):
            return "no model weights"
        # (a folder half deleted by checkpoint rotation may keep its trainer_state.json)
        missing = [n for n in ("optimizer.pt", "scheduler.pt") if not (folder / n).is_file()]
        if missing:
            return f"no {' / '.join(missing)}"
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = folder / index_name
        if index.exists():
            try:
                shards = set(json.loads(index.read_text())["weight_map"].values())
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                return f"{index_name} is unreadable"
            missing = sorted(s for s in shards if not (folder / s).is_file())
            if missing:
                return f"weight shard(s) {', '.join(missing)} missing"
    for path in sorted(folder.iterdir()):
        if not path.is_file():
            continue
        problem = (_safetensors_problem(path) if path.suffix == ".safetensors"
                   else _zip_problem(path) if path.suffix in (".pt", ".pth", ".bin") else None)
        if problem:
            return problem
    return None


def list_checkpoints(root: Path) -> list[Path]:
    """``root/checkpoint-N`` folders, oldest (smallest N) first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _CHECKPOINT.fullmatch(p.name))]
    return [p for _, p in sorted(found)]


def resume_point(root: Path, cleanup: bool = True) -> Optional[Path]:
    """The newest complete checkpoint under ``root`` (None if there is none); with ``cleanup``,
    incomplete checkpoint folders are deleted (call it with cleanup on one process only)."""
    last = None
    for path in list_checkpoints(root):
        problem = checkpoint_problem(path)
        if problem is None:
            last = path
        elif cleanup:
            logger.warning("xtc: ignoring and deleting incomplete checkpoint %s: %s", path, problem)
            shutil.rmtree(path, ignore_errors=True)
    return last


def truncate_log(path: Path, step: int) -> None:
    """Drop the records of ``log.jsonl`` after ``step`` (the resumed run logs those steps again),
    and a last line cut short by the kill."""
    from .io import write_text_atomic

    path = Path(path)
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("step", 0) <= step:
            keep.append(line + "\n")
    write_text_atomic(path, "".join(keep))
