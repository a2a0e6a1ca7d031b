"""One validation layer for everything blockmask reads.

* Numeric options (CLI flags, API arguments, config fields): :func:`check_int`,
  :func:`check_float` — finite, in range, integer where it must be. Failures are
  :class:`OptionError` naming the option.
* Files (mask, checkpoint, config, cache row): :func:`read_json_file` / :func:`parse_json` —
  a regular file (not a folder, FIFO or device), at most ``max_bytes``, strict JSON (no NaN /
  Infinity tokens), nesting at most ``MAX_DEPTH`` deep (checked without recursion, so no
  RecursionError), an object where an object is expected. Fields are then read with
  :func:`field` (type and value checks). Failures are :class:`FileFormatError` naming the file
  and the field.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import stat
from pathlib import Path
from typing import Any

from blockmask.core.errors import FileFormatError, OptionError, BlockmaskError

MAX_DEPTH = 32  # JSON nesting: our files need 4
MAX_JSON_BYTES = 64 * 2**20  # a mask of K=1000 × N=2000 is ~4 MB; checkpoints carry scores too


def check_int(name: str, value, *, low: int | None = None, high: int | None = None) -> int:
    """``value`` as an int (bools, floats and strings refused), within [low, high]."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise OptionError(f"{name} must be an integer, got {value!r}")
    v = int(value)
    if low is not None and v < low:
        raise OptionError(f"{name} must be >= {low}, got {v}")
    if high is not None and v > high:
        raise OptionError(f"{name} must be <= {high}, got {v}")
    return v


def check_float(name: str, value, *, low: float | None = None, high: float | None = None,
                low_open: bool = False, high_open: bool = False) -> float:
    """``value`` as a finite float within the given bounds (open or closed)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise OptionError(f"{name} must be a number, got {value!r}")
    try:
        v = float(value)
    except OverflowError:
        raise OptionError(f"{name} must be a finite number, got {value!r}") from None
    if not math.isfinite(v):
        raise OptionError(f"{name} must be a finite number, got {v}")
    if low is not None and (v <= low if low_open else v < low):
        raise OptionError(f"{name} must be {'>' if low_open else '>='} {low:g}, got {v:g}")
    if high is not None and (v >= high if high_open else v > high):
        raise OptionError(f"{name} must be {'<' if high_open else '<='} {high:g}, got {v:g}")
    return v


def check_choice(name: str, value, choices) -> str:
    if not isinstance(value, str) or value not in choices:
        raise OptionError(f"{name} must be one of {', '.join(map(str, choices))}, got {value!r}")
    return value


# --- files --------------------------------------------------------------------------------------
def read_bytes(path, what: str, *, max_bytes: int = MAX_JSON_BYTES) -> bytes:
    """The bytes of a regular file of at most ``max_bytes``: one message for missing, a folder, a
    FIFO/device (never opened: reading one could block or never end), too large or unreadable."""
    p = Path(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise FileFormatError(p, f"{what} not found") from None
    except OSError as e:
        raise FileFormatError(p, f"cannot read {what} ({e.strerror or e})") from None
    if stat.S_ISDIR(st.st_mode):
        raise FileFormatError(p, f"is a folder, expected a {what}")
    if not stat.S_ISREG(st.st_mode):
        raise FileFormatError(p, f"is not a regular file (a pipe or device?), expected a {what}")
    if st.st_size > max_bytes:
        raise FileFormatError(p, f"{what} is too large ({st.st_size} bytes, limit {max_bytes})")
    try:
        with open(p, "rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as e:
        raise FileFormatError(p, f"cannot read {what} ({e.strerror or e})") from None
    if len(data) > max_bytes:
        raise FileFormatError(p, f"{what} is too large (limit {max_bytes} bytes)")
    return data


def _nesting(text: str) -> int:
    """Maximum bracket depth outside strings, without recursion (so deep input cannot overflow)."""
    depth = best = 0
    in_str = esc = False
    for ch in text:
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            if depth > best:
                best = depth
                if best > MAX_DEPTH:
                    return best
        elif ch in "]}":
            depth -= 1
    return best


def _no_constant(name):
    raise ValueError(f"{name} is not valid JSON (numbers must be finite)")


def _finite_float(text: str) -> float:
    v = float(text)
    if v in (float("inf"), float("-inf")):
        raise ValueError(f"number {text[:40]} is out of range (numbers must be finite)")
    return v


def parse_json(data: str | bytes, source: str, *, expect: type | None = dict, max_bytes: int = MAX_JSON_BYTES):
    """Strict JSON from ``data``: size and nesting limits, no NaN/Infinity, of type ``expect``."""
    if isinstance(data, (bytes, bytearray)):
        if len(data) > max_bytes:
            raise FileFormatError(source, f"too large ({len(data)} bytes, limit {max_bytes})")
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError:
            raise FileFormatError(source, "not valid JSON (not UTF-8 text)") from None
    elif isinstance(data, str):
        text = data
        if len(text) > max_bytes:
            raise FileFormatError(source, f"too large ({len(text)} characters, limit {max_bytes})")
    else:
        raise FileFormatError(source, f"expected JSON text, got {type(data).__name__}")
    if _nesting(text) > MAX_DEPTH:
        raise FileFormatError(source, f"JSON nested deeper than {MAX_DEPTH} levels")
    try:
        obj = json.loads(text, parse_constant=_no_constant, parse_float=_finite_float)
    except json.JSONDecodeError as e:
        raise FileFormatError(source, f"not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    except (ValueError, RecursionError) as e:
        raise FileFormatError(source, f"not valid JSON ({str(e)[:120]})") from None
    if expect is not None and not isinstance(obj, expect):
        kind = {dict: "a JSON object", list: "a JSON list"}.get(expect, expect.__name__)
        raise FileFormatError(source, f"expected {kind}, found {_json_kind(obj)}")
    return obj


def read_json_file(path, what: str, *, expect: type | None = dict, max_bytes: int = MAX_JSON_BYTES):
    """:func:`read_bytes` then :func:`parse_json`; every failure names the file."""
    return parse_json(read_bytes(path, what, max_bytes=max_bytes), str(path), expect=expect, max_bytes=max_bytes)


def _json_kind(v) -> str:
    if v is None:
        return "null"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
            dict: "an object"}.get(type(v), type(v).__name__)


_MISSING = object()


def field(data: dict, name: str, kind: str, source: str, *, default: Any = _MISSING, low=None, high=None):
    """``data[name]`` checked as ``kind``: int | float | str | bool | list | dict | str_list | int_list
    | float_list (null allowed in float_list as a missing value). ``default`` is returned when the
    key is absent (not when it is null)."""
    if name not in data:
        if default is _MISSING:
            raise FileFormatError(source, "is missing", name)
        return default
    v = data[name]
    try:
        if kind == "int":
            return check_int("value", v, low=low, high=high)
        if kind == "float":
            return check_float("value", v, low=low, high=high)
    except OptionError as e:
        raise FileFormatError(source, str(e).replace("value ", "", 1), name) from None
    simple = {"str": str, "bool": bool, "list": list, "dict": dict}
    if kind in simple:
        if not isinstance(v, simple[kind]):
            raise FileFormatError(source, f"must be {_json_kind(simple[kind]())}, found {_json_kind(v)}", name)
        return v
    if kind in ("str_list", "int_list", "float_list"):
        if not isinstance(v, list):
            raise FileFormatError(source, f"must be a list, found {_json_kind(v)}", name)
        for i, x in enumerate(v):
            ok = (isinstance(x, str) if kind == "str_list" else
                  (isinstance(x, int) and not isinstance(x, bool)) if kind == "int_list" else
                  x is None or (isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)))
            if not ok:
                raise FileFormatError(source, f"item {i} must be {kind.split('_')[0]}, found {_json_kind(x)}", name)
        return v
    raise ValueError(f"unknown field kind {kind}")


def check_finite_tensors(tensors, what: str) -> None:
    """Refuse NaN/inf: ``tensors`` is (name, tensor) pairs; the first bad one is named in one line."""
    import torch

    for name, t in tensors:
        if isinstance(t, torch.Tensor) and t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise BlockmaskError(f"{what}: {name!r} has {bad} non-finite value(s) (NaN/inf) of {t.numel()}")
