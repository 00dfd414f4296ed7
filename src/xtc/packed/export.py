"""``export``: from a run folder (or a checkpoint folder) to a packed model folder.

The checkpoint is the fake-quant training model as ``xtc.load_quantized`` rebuilds it; its codes
are written with the quantizers' own code functions (see :func:`xtc.packed.model.save_packed`).
The output folder holds ``model.xtc.safetensors`` and the tokenizer, and nothing else is needed to
run it (``load_packed``, ``xtc predict``).
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import InputError, ModelLoadError
from .model import save_packed

# Where the pipeline leaves the compressed student (RUN/quantized/model), then other usual places.
CANDIDATES = ("quantized/model", "model", "quantized", "best", "final")


def _is_quantized_checkpoint(folder: Path) -> bool:
    cfg = folder / "config.json"
    if not cfg.is_file():
        return False
    try:
        return bool(json.loads(cfg.read_text()).get("xtc"))
    except (OSError, ValueError, AttributeError):  # unreadable, not JSON, not a JSON object
        return False


def find_checkpoint(run_or_checkpoint: str | Path) -> Path:
    """The quantized checkpoint folder inside a run folder (or the folder itself)."""
    root = Path(run_or_checkpoint)
    if not root.is_dir():
        raise InputError(f"{root}: no such folder (pass a run folder or a checkpoint folder)")
    if _is_quantized_checkpoint(root):
        return root
    for rel in CANDIDATES:
        if _is_quantized_checkpoint(root / rel):
            return root / rel
    found = sorted((p.parent for p in root.glob("**/config.json") if _is_quantized_checkpoint(p.parent)),
                   key=lambda p: (len(p.relative_to(root).parts), str(p)))
    if found:
        return found[0]
    raise InputError(f"{root}: no quantized checkpoint found (a folder whose config.json has an 'xtc' "
                            "entry, e.g. RUN/quantized/model after `xtc compress`)")


def _teacher_layers(root: Path, checkpoint: Path) -> int | None:
    """Depth of the teacher, for the size report: the run's fine-tuned teacher (RUN/teacher/model) or
    the local teacher folder its recipe names (RUN/config.yaml, ``teacher:``)."""
    folders = [root / "teacher" / "model", root / "teacher", checkpoint.parent.parent / "teacher" / "model"]
    recipe = root / "config.yaml"
    if recipe.is_file():
        try:
            import yaml

            teacher = (yaml.safe_load(recipe.read_text()) or {}).get("teacher")
            if isinstance(teacher, str):
                folders.append(Path(teacher))
        except Exception:  # noqa: BLE001 - the teacher's depth is optional information for the report
            pass
    for folder in folders:
        cfg = folder / "config.json"
        if cfg.is_file():
            try:
                d = json.loads(cfg.read_text())
                n = d.get("num_hidden_layers") or d.get("n_layers") or d.get("num_layers")
                if n:
                    return int(n)
            except (OSError, ValueError, AttributeError, TypeError):  # optional: a damaged file is skipped
                continue
    return None


def export(run_or_checkpoint_dir: str | Path, out_dir: str | Path, fp_dtype: str = "fp16",
           int8_extras: bool = False, ternary_packing: str = "base3",
           teacher_num_layers: int | None = None) -> Path:
    """Pack the quantized checkpoint of a run into ``out_dir``; returns the packed file."""
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    from ..models import check_model
    from ..surgery import load_quantized

    root = Path(run_or_checkpoint_dir)
    checkpoint = find_checkpoint(root)
    check_model(str(checkpoint), "checkpoint", supported_only=False)  # damaged files fail here, in one line
    previous = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        model = load_quantized(checkpoint).eval()
    except (OSError, ValueError, KeyError, RuntimeError) as e:  # files that passed the checks but do not load
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ModelLoadError(f"cannot load the checkpoint {checkpoint}: {first}") from None
    finally:
        hf_logging.set_verbosity(previous)
    tokenizer = None
    for folder in (checkpoint, root):
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(folder))
            break
        except (OSError, ValueError, TypeError):
            continue
    if tokenizer is None:
        import warnings

        warnings.warn(f"no tokenizer found in {checkpoint} or {root}: the packed folder will need one to predict",
                      stacklevel=2)
    return save_packed(model, out_dir, fp_dtype=fp_dtype, int8_extras=int8_extras, ternary_packing=ternary_packing,
                       tokenizer=tokenizer, teacher_num_layers=teacher_num_layers or _teacher_layers(root, checkpoint))
