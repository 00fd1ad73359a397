"""Shared pytest fixtures: CPU with 4 forced host devices, keys, real data."""

import os
import pathlib

# Must run before jax is imported anywhere in the test session.
os.environ["JAX_PLATFORMS"] = "cpu"
_flag = "--xla_force_host_platform_device_count=4"
if _flag not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _flag).strip()

import jax  # noqa: E402
import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parent
DATA_DIR = pathlib.Path(
    os.environ.get("L2D_DATA_DIR", REPO.parent / "shared" / "data")).resolve()


@pytest.fixture
def rng():
  """A fresh, fixed PRNG key for each test."""
  return jax.random.key(0)


@pytest.fixture(scope="session")
def data_dir():
  """Real data directory (``../shared/data`` or $L2D_DATA_DIR); skips if absent."""
  if not (DATA_DIR / "MANIFEST.md").exists():
    pytest.skip(f"real data not found at {DATA_DIR} (set L2D_DATA_DIR or place "
                "the shared data next to the repository)")
  return DATA_DIR
