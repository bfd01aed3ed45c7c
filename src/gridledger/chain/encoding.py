"""Canonical JSON: the one byte encoding of everything that is signed or hashed on chain.

Rules (see docs/encoding.md): UTF-8, object keys sorted by code point, no insignificant
whitespace, integers only (no floats, no NaN), ``true``/``false``/``null``, strings with the
minimal JSON escapes, byte strings as lowercase hex. Decoding re-encodes and compares: any input
that is not exactly the canonical form (extra spaces, reordered or duplicate keys, ``\\u0041``
instead of ``A``, ``1.0``, ``-0``, uppercase hex...) is rejected, so a transaction has exactly one
byte form and a re-encoded (malleated) copy can never be accepted as a different transaction.

Python's C-accelerated ``json`` module does the work; we only constrain it. Measured at a few
microseconds per transaction, far below the ~50 µs of one signature check.
"""

from __future__ import annotations

import json
import json.encoder
from collections.abc import Callable
from typing import Any

_ENCODER = json.JSONEncoder(
    ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False
)


def _fast_encoder() -> Callable[[Any], str]:
    """The C encoder behind ``_ENCODER``, called directly: same bytes, without the per-call
    Python set-up of ``JSONEncoder.encode`` (profiled: ~45 % of the canonical re-encode of a
    transaction body, which every node runs once per transaction). No circular-reference
    markers: decoded JSON cannot be cyclic, :func:`encode` walks its value with a depth bound
    first, and a cycle in :func:`encode_trusted` still fails (RecursionError)."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # an interpreter without the C accelerator: the reference encoder
        return _ENCODER.encode
    c_encode = make(
        None,
        _ENCODER.default,
        json.encoder.encode_basestring,  # ensure_ascii=False: minimal escapes, UTF-8 kept
        None,  # indent
        ":",
        ",",
        True,  # sort_keys
        False,  # skipkeys
        False,  # allow_nan
    )

    def encode_text(value: Any) -> str:
        if isinstance(value, str):  # the C encoder only handles containers and scalars inside
            return json.encoder.encode_basestring(value)
        return "".join(c_encode(value, 0))

    return encode_text


_encode_text = _fast_encoder()

MAX_INT_DIGITS = 40  # ~2^128: amounts on chain never need more; bounds the cost of int parsing


class EncodingError(ValueError):
    """Bytes that are not the canonical encoding of a value."""


def _no_float(text: str) -> Any:
    raise EncodingError(f"floats are not allowed on chain: {text}")


def _no_constant(text: str) -> Any:
    raise EncodingError(f"{text} is not allowed on chain")


def _bounded_int(text: str) -> int:
    if len(text) > MAX_INT_DIGITS:
        raise EncodingError(f"integer with more than {MAX_INT_DIGITS} digits")
    return int(text)


_DECODER = json.JSONDecoder(
    parse_float=_no_float, parse_int=_bounded_int, parse_constant=_no_constant
)


def _check(value: Any, depth: int = 0) -> None:
    if depth > 32:
        raise EncodingError("nesting deeper than 32 levels")
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return
    if isinstance(value, int):
        if len(str(abs(value))) > MAX_INT_DIGITS:
            raise EncodingError(f"integer with more than {MAX_INT_DIGITS} digits")
        return
    if isinstance(value, list | tuple):
        for v in value:
            _check(v, depth + 1)
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise EncodingError(f"object keys must be strings, got {type(k).__name__}")
            _check(v, depth + 1)
        return
    raise EncodingError(f"{type(value).__name__} cannot be encoded on chain (ints, str, lists...)")


def encode(value: Any) -> bytes:
    """The canonical bytes of ``value`` (dict/list/str/int/bool/None; no floats, no bytes)."""
    _check(value)
    try:
        return _encode_text(value).encode("utf-8")
    except (ValueError, UnicodeEncodeError) as exc:
        raise EncodingError(str(exc)) from exc


def encode_trusted(value: Any) -> bytes:
    """As :func:`encode` for values built by our own code from checked parts (skips the walk)."""
    return _encode_text(value).encode("utf-8")


def decode_trusted(data: bytes) -> Any:
    """Parse bytes this node wrote itself in canonical form (state values): no re-encode check."""
    return _DECODER.decode(data.decode("utf-8"))


def decode(data: bytes) -> Any:
    """Parse canonical bytes; reject anything whose re-encoding differs from ``data``."""
    try:
        text = (data if type(data) is bytes else bytes(data)).decode("utf-8")
        value = _DECODER.decode(text)
    except EncodingError:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise EncodingError(f"not valid JSON: {exc}") from exc
    try:
        again = _encode_text(value).encode("utf-8")
    except (ValueError, UnicodeEncodeError) as exc:
        raise EncodingError(f"not encodable: {exc}") from exc
    if again != data:
        raise EncodingError("not in canonical form (key order, whitespace, escapes or duplicates)")
    return value


def hex_bytes(value: Any, field: str, length: int | None = None) -> bytes:
    """Lowercase hex string -> bytes, naming ``field`` in the error."""
    if not isinstance(value, str):
        raise EncodingError(f"{field} must be a lowercase hex string")
    if value != value.lower():
        raise EncodingError(f"{field} must be lowercase hex")
    try:
        raw = bytes.fromhex(value)
    except ValueError as exc:
        raise EncodingError(f"{field} is not hex: {exc}") from exc
    if raw.hex() != value:
        raise EncodingError(f"{field} is not canonical hex")
    if length is not None and len(raw) != length:
        raise EncodingError(f"{field} must be {length} bytes, got {len(raw)}")
    return raw
