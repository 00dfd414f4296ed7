"""README.md's quickstart runs as written (with the local copy of the model for the hub name), and
its two set-up commands exist in the Makefile."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import MINILM

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_readme_opens_with_the_two_make_commands():
    first_block = re.search(r"```bash\n(.*?)```", README, re.S).group(1)
    assert first_block.splitlines()[0].startswith("make demo") and first_block.splitlines()[1].startswith("make test")
    makefile = (ROOT / "Makefile").read_text()
    assert "\ndemo:" in makefile and "\ntest:" in makefile


@pytest.mark.slow
def test_quickstart_runs_as_written(shared, tmp_path):
    code = re.search(r"## Quickstart \(Python\)\s*```python\n(.*?)```", README, re.S).group(1)
    hub_name = '"sentence-transformers/all-MiniLM-L6-v2"'
    assert hub_name in code
    (tmp_path / "quickstart.py").write_text(code.replace(hub_name, repr(str(MINILM))))
    result = subprocess.run([sys.executable, "quickstart.py"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=600, env={"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
                                              "PATH": "/usr/bin:/bin", "HOME": str(Path.home())})
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "packed" / "model.xtc.safetensors").stat().st_size < 4_000_000  # a 3-layer 1-bit file
    probabilities = re.findall(r"\d\.\d+", result.stdout)
    assert len(probabilities) == 4
