"""The notebooks' code cells run top to bottom (without Jupyter)."""

import json
import pathlib

import pytest

NOTEBOOKS = sorted((pathlib.Path(__file__).resolve().parents[1]
                    / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, capsys):
  nb = json.loads(path.read_text())
  code = [("".join(c["source"])) for c in nb["cells"]
          if c["cell_type"] == "code"]
  assert code, f"{path.name} has no code cells"
  scope = {}
  for i, src in enumerate(code):
    exec(compile(src, f"{path.name}[cell {i}]", "exec"), scope)  # pylint: disable=exec-used
  out = capsys.readouterr().out
  assert "nan" not in out.lower(), out
