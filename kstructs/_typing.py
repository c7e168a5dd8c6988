"""Field descriptor types for class-body annotations of ctypes layouts.

ctypes creates one descriptor per entry of ``_fields_``; typeshed calls it
``_CField[ctype, get, set]``. Annotating each field with it makes
``h.nlmsg_len`` an ``int`` and ``nlmsghdr.nlmsg_len.offset`` type-check under
``mypy --strict``. The aliases exist only for the type checker.
"""

from __future__ import annotations

import ctypes
from typing import TYPE_CHECKING, TypeAlias, TypeVar

if TYPE_CHECKING:
    # Any object with the buffer protocol (bytes, bytearray, memoryview,
    # mmap, array, ctypes objects); collections.abc.Buffer arrived in 3.12.
    from _typeshed import ReadableBuffer

    Buffer: TypeAlias = ReadableBuffer

    from _ctypes import _CField

    _C = TypeVar("_C", bound=ctypes.Structure | ctypes.Union)

    U8: TypeAlias = _CField[ctypes.c_uint8, int, ctypes.c_uint8 | int]
    U16: TypeAlias = _CField[ctypes.c_uint16, int, ctypes.c_uint16 | int]
    U32: TypeAlias = _CField[ctypes.c_uint32, int, ctypes.c_uint32 | int]
    U64: TypeAlias = _CField[ctypes.c_uint64, int, ctypes.c_uint64 | int]
    S32: TypeAlias = _CField[ctypes.c_int32, int, ctypes.c_int32 | int]
    UShort: TypeAlias = _CField[ctypes.c_ushort, int, ctypes.c_ushort | int]
    UInt: TypeAlias = _CField[ctypes.c_uint, int, ctypes.c_uint | int]
    Int: TypeAlias = _CField[ctypes.c_int, int, ctypes.c_int | int]
    Chars: TypeAlias = _CField[ctypes.Array[ctypes.c_char], bytes, bytes]
    Bytes: TypeAlias = _CField[ctypes.Array[ctypes.c_uint8], ctypes.Array[ctypes.c_uint8], bytes]
    Nested: TypeAlias = _CField[_C, _C, _C]
    SizeT: TypeAlias = _CField[ctypes.c_size_t, int, ctypes.c_size_t | int]
    VoidP: TypeAlias = _CField[ctypes.c_void_p, int | None, ctypes.c_void_p | int | None]
else:
    Buffer = bytes | bytearray | memoryview  # what the type checker reads as any buffer
