"""The public names of the subpackages: grouped, one per line, no strays."""

import ast
import importlib
import pathlib

import pytest

PACKAGES = ("conformal", "experts", "models", "losses", "metrics", "deferral",
            "distributed")
ROOT = pathlib.Path(__file__).resolve().parents[1] / "l2d_jax"


@pytest.mark.parametrize("name", PACKAGES)
def test_all_names_exist_once_and_every_import_is_listed(name):
  module = importlib.import_module(f"l2d_jax.{name}")
  names = list(module.__all__)
  assert len(names) == len(set(names)), name
  for n in names:
    assert hasattr(module, n), (name, n)
  tree = ast.parse((ROOT / name / "__init__.py").read_text())
  imported = []
  for node in tree.body:
    if isinstance(node, ast.ImportFrom) and node.module != "__future__":
      if node.module.startswith(f"l2d_jax.{name}._"):
        assert len(node.names) == 1, (name, ast.unparse(node))  # one per line
        imported.append(node.names[0].asname or node.names[0].name)
  # A re-export is public: listed in __all__ (private helpers stay private).
  strays = [n for n in imported if not n.startswith("_") and n not in names]
  assert not strays, (name, strays)


def test_conformal_does_not_re_export_experts_names():
  conformal = importlib.import_module("l2d_jax.conformal")
  experts = importlib.import_module("l2d_jax.experts")
  assert not set(conformal.__all__) & set(experts.__all__)
  for n in conformal.__all__:
    home = getattr(getattr(conformal, n), "__module__", None) or ""
    assert not home.startswith("l2d_jax.experts"), (n, home)
