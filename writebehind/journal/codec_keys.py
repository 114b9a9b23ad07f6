"""The row's key in a payload: mostly references to the columns it was taken from, so that the
same objects come back and no value is written twice."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from .._keys import NAN_KEY, NaN
from .._sink import Params
from .codec_decode import _decode_value, _Decoded
from .codec_encode import _encode_value, _Out
from .codec_format import (
    _BH,
    _BI,
    _H,
    _I,
    _T_KEY_REF,
    _T_NAN_KEY,
    _T_TUPLE,
    _Corrupt,
)


def _encode_key(key: Hashable, params: Params, out: _Out) -> None:
    """The key, mostly a reference to its column: prepare() takes it from the params, so
    the same object is found there (a composite key, element by element)."""
    for position, value in enumerate(params):
        if value is key:
            out += _BH.pack(_T_KEY_REF, position)
            return
    if type(key) is tuple:
        out += _BI.pack(_T_TUPLE, len(key))
        for item in key:
            _encode_key_item(item, params, out)
    else:
        _encode_key_item(key, params, out)


def _encode_key_item(item: Any, params: Params, out: _Out) -> None:
    for position, value in enumerate(params):
        if value is item:
            out += _BH.pack(_T_KEY_REF, position)
            return
    if type(item) is NaN:  # the sink's stand-in for a NaN key value (NaN == NaN there)
        out.append(_T_NAN_KEY)
    else:
        _encode_value(item, out, 1)


def _decode_key(data: bytes, pos: int, params: Params) -> _Decoded:
    tag = data[pos]
    if tag == _T_TUPLE:
        (count,) = _I.unpack_from(data, pos + 1)
        pos += 5
        if count > len(data) - pos:
            raise _Corrupt(f"a key of {count} columns runs past the end")
        items = []
        for _ in range(count):
            item, pos = _decode_key_item(data, pos, params)
            items.append(item)
        return tuple(items), pos
    return _decode_key_item(data, pos, params)


def _decode_key_item(data: bytes, pos: int, params: Params) -> _Decoded:
    tag = data[pos]
    if tag == _T_KEY_REF:
        (column,) = _H.unpack_from(data, pos + 1)
        return params[column], pos + 3
    if tag == _T_NAN_KEY:
        return NAN_KEY, pos + 1
    return _decode_value(data, pos, 1)
