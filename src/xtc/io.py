"""Writing files: atomically (write, then rename, so a run killed at any moment never leaves a
half-written file that looks whole), with the user's umask, and under one rule for every command
that writes (:func:`check_output`, :func:`check_run_folder`): what exists is replaced only with
``--overwrite``, an unfinished run is continued only with ``--resume``, and a folder that cannot be
written is refused before anything starts."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from .errors import RunFolderError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomic(path: str | Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; a result file is an ordinary file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: str | Path, obj) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def _check_writable(path: Path) -> None:
    """The nearest existing folder at or above ``path`` must be a folder we may write into."""
    parent = path
    while not parent.exists():
        if parent.parent == parent:
            break
        parent = parent.parent
    if parent.exists() and not parent.is_dir():
        raise RunFolderError(f"cannot create {path}: {parent} is a file, not a folder")
    if parent.exists():
        try:  # a probe file, not os.access: a read-only mount refuses even root, whom os.access lets pass
            with tempfile.TemporaryFile(dir=parent):
                pass
        except OSError as e:
            raise RunFolderError(f"cannot write to {path}: {parent} is not writable ({e.strerror or e}); "
                                 "choose another output folder") from None


def check_output(path: str | Path, overwrite: bool = False, folder: bool = False) -> None:
    """An output file (or, with ``folder``, an output folder) that may be written: not there yet, or
    ``overwrite`` given; of the right kind; in a writable place. Nothing is written."""
    path = Path(path)
    if path.exists():
        if folder and not path.is_dir():
            raise RunFolderError(f"{path} is a file; the output must be a folder (give a new folder name)")
        if not folder and path.is_dir():
            raise RunFolderError(f"{path} is a folder; the output must be a file (give a file name)")
        if (path.is_file() or any(path.iterdir())) and not overwrite:
            raise RunFolderError(f"{path} already exists; pass --overwrite to replace it")
    _check_writable(path)


def check_run_folder(output_dir: str | Path, resume: bool, overwrite: bool, done_marker: str = "results.json") -> None:
    """A training run's folder: a finished run (``done_marker`` present) is replaced only with
    ``overwrite``; an unfinished one is continued only with ``resume`` (or replaced with
    ``overwrite``). Nothing is written."""
    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise RunFolderError(f"{output_dir} is a file; the output must be a folder (give a new folder name)")
    if output_dir.exists() and any(output_dir.iterdir()) and not overwrite:
        if (output_dir / done_marker).exists() and not resume:
            raise RunFolderError(f"{output_dir} already holds a finished run; pass --overwrite to replace it")
        if not resume and not (output_dir / done_marker).exists():
            raise RunFolderError(f"{output_dir} holds an unfinished run; pass --resume to continue it or "
                                 "--overwrite to start over")
    _check_writable(output_dir)


def prepare_run_folder(output_dir: str | Path, resume: bool, overwrite: bool,
                       done_marker: str = "results.json") -> bool:
    """:func:`check_run_folder`, then make the folder (emptied first with ``overwrite``). Returns
    whether the folder is new (so that a run failing before its first checkpoint can remove it)."""
    output_dir = Path(output_dir)
    check_run_folder(output_dir, resume, overwrite, done_marker)
    if overwrite and output_dir.exists():
        shutil.rmtree(output_dir)
    new = not output_dir.exists()
    output_dir.mkdir(parents=True, exist_ok=True)
    return new
