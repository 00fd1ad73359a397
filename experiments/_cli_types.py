"""argparse ``type=`` helpers shared by the experiments' command lines.

Each parser raises ``argparse.ArgumentTypeError("must ...")``, which
``experiments._cli.run_main`` prints as ``error: --option must ...``: a bad
value is refused while parsing, before any work. ``experiments._cli``
re-exports every public name here.
"""

from __future__ import annotations

import argparse
import math
from typing import Any, Callable

__all__ = [
    "MAX_SEED",
    "positive_int",
    "non_negative_int",
    "int_at_least",
    "seed",
    "fraction",
    "float_list",
    "int_list",
    "alpha_list",
]

MAX_SEED = 2**32  # exclusive: numpy's default_rng and jax.random.key agree.


def _named(name: str):
  def deco(fn):
    fn.__name__ = name
    return fn
  return deco


def _int(text: str) -> int:
  try:
    return int(text.strip())
  except ValueError:
    raise argparse.ArgumentTypeError(
        f"must be an integer, got {text!r}") from None


def int_at_least(minimum: int) -> Callable[[str], int]:
  """A ``type=`` for integers ``>= minimum``."""
  @_named(f"int>={minimum}")
  def parse(text: str) -> int:
    v = _int(text)
    if v < minimum:
      raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {v}")
    return v
  return parse


positive_int = int_at_least(1)
positive_int.__doc__ = "A ``type=`` for integers >= 1."
non_negative_int = int_at_least(0)
non_negative_int.__doc__ = "A ``type=`` for integers >= 0."


def seed(text: str) -> int:
  """A ``type=`` for random seeds: integers in [0, 2**32)."""
  v = _int(text)
  if not 0 <= v < MAX_SEED:
    raise argparse.ArgumentTypeError(
        f"must be an integer in [0, 2**32), got {v}")
  return v


def _interval(low: float, high: float, low_open: bool, high_open: bool) -> str:
  return f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"


def _float(text: str) -> float:
  try:
    return float(text.strip())
  except ValueError:
    raise argparse.ArgumentTypeError(
        f"must be a number, got {text!r}") from None


def _in_interval(v: float, low, high, low_open, high_open) -> bool:
  if not math.isfinite(v):
    return False
  if low is not None and (v < low or (low_open and v == low)):
    return False
  if high is not None and (v > high or (high_open and v == high)):
    return False
  return True


def fraction(low: float = 0.0, high: float = 1.0, *, low_open: bool = True,
             high_open: bool = False) -> Callable[[str], float]:
  """A ``type=`` for a finite number in an interval (default ``(0, 1]``)."""
  iv = _interval(low, high, low_open, high_open)

  @_named(f"number in {iv}")
  def parse(text: str) -> float:
    v = _float(text)
    if not _in_interval(v, low, high, low_open, high_open):
      raise argparse.ArgumentTypeError(f"must lie in {iv}, got {text.strip()}")
    return v
  return parse


def _comma_list(text: str, item: Callable[[str], Any], what: str) -> tuple:
  parts = [p.strip() for p in text.split(",")]
  if not text.strip() or any(not p for p in parts):
    raise argparse.ArgumentTypeError(
        f"must be a non-empty comma-separated list of {what}, got {text!r}")
  values = []
  for p in parts:
    try:
      values.append(item(p))
    except argparse.ArgumentTypeError as e:
      raise argparse.ArgumentTypeError(f"{e} (in {text!r})") from None
  seen = set()
  for p, v in zip(parts, values):
    if v in seen:
      raise argparse.ArgumentTypeError(
          f"must not repeat a value, got {p} twice in {text!r}")
    seen.add(v)
  return tuple(values)


def float_list(low: float | None = None, high: float | None = None, *,
               low_open: bool = False, high_open: bool = False
               ) -> Callable[[str], tuple[float, ...]]:
  """A ``type=`` for comma lists of finite numbers, optionally in an interval.

  The list must be non-empty and must not repeat a value; the order is kept.
  """
  if low is None and high is None:
    iv, what = None, "numbers"
  else:
    iv = _interval(-math.inf if low is None else low,
                   math.inf if high is None else high, low_open, high_open)
    what = f"numbers in {iv}"

  def item(p):
    v = _float(p)
    if not _in_interval(v, low, high, low_open, high_open):
      raise argparse.ArgumentTypeError(
          f"must hold finite {what}, got {p}" if iv is None else
          f"must hold numbers in {iv}, got {p}")
    return v

  @_named(f"list of {what}")
  def parse(text: str) -> tuple[float, ...]:
    return _comma_list(text, item, what)
  return parse


def int_list(minimum: int | None = None) -> Callable[[str], tuple[int, ...]]:
  """A ``type=`` for comma lists of integers (``>= minimum`` if given)."""
  what = "integers" if minimum is None else f"integers >= {minimum}"

  def item(p):
    v = _int(p)
    if minimum is not None and v < minimum:
      raise argparse.ArgumentTypeError(f"must hold {what}, got {v}")
    return v

  @_named(f"list of {what}")
  def parse(text: str) -> tuple[int, ...]:
    return _comma_list(text, item, what)
  return parse


alpha_list = float_list(0.0, 1.0, low_open=True, high_open=True)
alpha_list.__doc__ = "A ``type=`` for comma lists of miscoverage levels in (0, 1)."
