"""What crosses processes: ``distributed._share.encode`` / ``decode``.

Results are gathered between processes as UTF-8 JSON plus raw array bytes,
never pickled. These tests check the exact round trip (types, dtypes,
shapes, bits) and that any other value is refused by name.
"""

import collections
import pickle

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from l2d_jax import distributed
from l2d_jax.distributed import _share


def _assert_same(got, expected, where="value"):
  """Equal values of exactly the same types, arrays bit for bit."""
  assert type(got) is type(expected), (where, type(got), type(expected))
  if isinstance(expected, (np.ndarray, np.generic)):
    assert got.dtype == expected.dtype, where
    assert np.shape(got) == np.shape(expected), where
    assert np.asarray(got).tobytes() == np.ascontiguousarray(
        expected).tobytes(), where
  elif isinstance(expected, (list, tuple)):
    assert len(got) == len(expected), where
    for i, (g, e) in enumerate(zip(got, expected)):
      _assert_same(g, e, f"{where}[{i}]")
  elif isinstance(expected, dict):
    assert list(got) == list(expected), where  # same keys, same order
    for k in expected:
      _assert_same(got[k], expected[k], f"{where}[{k!r}]")
  elif isinstance(expected, float) and np.isnan(expected):
    assert np.isnan(got), where
  else:
    assert got == expected, where
    if isinstance(expected, float):  # -0.0 keeps its sign
      assert np.copysign(1.0, got) == np.copysign(1.0, expected), where


@pytest.fixture(autouse=True)
def _no_unpickling(monkeypatch):
  def refuse(*args, **kwargs):
    raise AssertionError("something was unpickled")
  monkeypatch.setattr(pickle, "loads", refuse)
  monkeypatch.setattr(pickle, "load", refuse)


@pytest.mark.parametrize("value", [
    None, True, False, 0, -7, 2**100, 0.1 + 0.2, -0.0, float("inf"),
    float("-inf"), float("nan"), 5e-324, "", "é ☃ \n \"q\"",
    [], (), {}, (1,), [None, [2, [3.5, "x"]]],
    {"seed": 3, "rows": [{"acc": 0.9, "n": 10}, {"acc": None}],
     "pair": (1, (2.0, "3"))},
    {1: "int key", (2, "b"): "tuple key", None: 0.5, 2.5: [], True: "t"},
    {"__l2d_tuple__": [1, 2]},  # a dict whose one key is a tag: still a dict
    {"__l2d_ndarray__": 0, "other": 1},
    [{"__l2d_items__": []}],
], ids=repr)
def test_json_values_round_trip_exactly(value):
  _assert_same(_share.decode(_share.encode(value)), value)


@pytest.mark.parametrize("array", [
    np.arange(6, dtype=np.float32).reshape(2, 3) / 7,
    np.array([np.nan, -np.inf, -0.0, 1e-300]),
    np.arange(-4, 4, dtype=np.int8),
    np.array([0, 65535], np.uint16),
    np.array([2**62, -2**63], np.int64),
    np.array([[True, False]]),
    np.array([1 + 2j, -3j], np.complex64),
    np.array(["ab", "çé", ""]),
    np.array([b"x", b"yz"]),
    np.array(["2026-11-30T14:00"], "datetime64[ns]"),
    np.array([3, -1], ">i4"),  # big-endian stays big-endian
    np.array([1.5, -2.25], ml_dtypes.bfloat16),
    np.zeros((0, 3), np.float32),
    np.array(4.0),  # 0-d array, not a scalar
    np.arange(12.0).reshape(3, 4).T,  # not contiguous
    np.arange(10, dtype=np.int32)[::3],
], ids=lambda a: f"{a.dtype}{list(a.shape)}")
def test_arrays_round_trip_bit_for_bit(array):
  got = _share.decode(_share.encode({"x": [array, array]}))
  for g in got["x"]:
    _assert_same(g, array)
    assert g.flags.writeable  # a copy, not a view of the buffer


@pytest.mark.parametrize("scalar", [
    np.float32(1.5), np.float64(-0.0), np.int64(-3), np.uint8(255),
    np.bool_(True), np.str_("s"), np.complex128(1 - 1j)])
def test_numpy_scalars_stay_scalars(scalar):
  _assert_same(_share.decode(_share.encode([scalar])), [scalar])


def test_jax_arrays_come_back_as_numpy_arrays():
  x = jnp.arange(5, dtype=jnp.float32) / 3
  got = _share.decode(_share.encode({"x": x, "key": jax.random.key_data(
      jax.random.key(1))}))
  _assert_same(got["x"], np.asarray(x))
  assert got["key"].dtype == np.uint32


class _Point(tuple):
  pass


@pytest.mark.parametrize("value, match", [
    ({"a": [1, {2}]}, r"^the value\['a'\]\[1\] is a builtins\.set; values "
     r"sent between processes must be None, bool, int, float, str, list, "
     r"tuple, dict or numpy/jax arrays \(nothing is pickled\)\.$"),
    ([collections.namedtuple("Row", "a")(1)],
     r"^the value\[0\] is a .*Row \(a NamedTuple: send its \._asdict\(\)\)"),
    ((b"raw",), r"^the value\[0\] is a builtins\.bytes;"),
    ({"f": lambda: 0}, r"^the value\['f'\] is a builtins\.function;"),
    ({"d": collections.OrderedDict(a=1)},
     r"^the value\['d'\] is a collections\.OrderedDict;"),
    ([np.array([1, "a"], object)],
     r"^the value\[0\] is an array of dtype object, which cannot be sent"),
    ({"m": np.ma.masked_array([1, 2], [0, 1])},
     r"^the value\['m'\] is a numpy\.ma\.MaskedArray;"),
    ({(1, frozenset()): 0},
     r"^a key of the value\[1\] is a builtins\.frozenset;"),
])
def test_other_values_are_refused_by_name(value, match):
  with pytest.raises(TypeError, match=match):
    _share.encode(value)


def test_a_value_that_contains_itself_is_refused():
  loop = [1]
  loop.append({"again": loop})
  with pytest.raises(TypeError, match=r"^the value\[1\]\['again'\] contains "
                     r"itself"):
    _share.encode(loop)


@pytest.mark.parametrize("mangle", [
    lambda b: b[:5],
    lambda b: b"\xff" * 8 + b[8:],
    lambda b: b[:-1],  # an array's last byte missing
    lambda b: b.replace(b'"<f4"', b'"|O8"'),  # an object array: refused
    lambda b: b.replace(b'"<f4"', b'"<V4"'),
])
def test_decode_refuses_a_damaged_buffer(mangle):
  data = _share.encode({"x": np.ones(3, np.float32)}).tobytes()
  with pytest.raises(ValueError, match=r"^not a buffer written by encode"):
    _share.decode(mangle(data))


def test_one_process_checks_what_it_would_send():
  # Alone nothing is sent, but a result that could not be sent by several
  # processes fails here too, named by its item.
  with pytest.raises(TypeError, match=r"^the result of item 1 is a "
                     r"builtins\.set"):
    distributed.map_sharded(lambda x: {x} if x else x, [0, 1])
  with pytest.raises(TypeError, match=r"^the object\['s'\] is a builtins"
                     r"\.set"):
    distributed.allgather_objects({"s": set()})
