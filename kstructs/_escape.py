"""Text that a process controls (its comm, command line, executable), made
safe to show: on a terminal, and in JSON.

Names arrive as ``str`` decoded with ``surrogateescape`` (the parser's
``comm``, ``os.fsdecode``): a byte that is not UTF-8 is a lone surrogate
U+DC80..U+DCFF, so the exact bytes are always ``os.fsencode(name)``.

Terminal (``terminal()``): every character that could move the cursor,
start an escape sequence or reorder the line is written as an escape, so
that a name is always one visible run of characters on one line:

- a byte that is not UTF-8 as ``\\xHH`` (``\\xff``);
- C0 controls and DEL as ``\\xHH`` (``\\x1b``, ``\\x7f``), except ``\\t``,
  ``\\n`` and ``\\r``;
- C1 controls (U+0080..U+009F, U+009B is a one-byte CSI), the bidi
  embeddings, overrides and isolates (U+202A..U+202E, U+2066..U+2069), the
  bidi marks (U+061C, U+200E, U+200F) and the line and paragraph separators
  (U+2028, U+2029) as ``\\uHHHH``;
- the backslash itself as ``\\\\``.

``\\xHH`` is always one byte of the name and ``\\uHHHH`` one character, so
the escaped form reads back to the exact bytes.

JSON (``json_pair()``): a name that is valid UTF-8 is a plain JSON string;
one that is not is the string with each invalid sequence replaced by U+FFFD,
plus the exact bytes in hex under ``<key>_hex``. The ``_hex`` key is present
only when the string alone does not give the bytes back.
"""

from __future__ import annotations

import codecs
import json
from typing import Final

#: Characters escaped as themselves: the named C escapes.
_NAMED: Final = {0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r", 0x5C: "\\\\"}

#: Code points above the C0 range shown as ``\\uHHHH``.
_WIDE_CONTROLS: Final = (
    *range(0x80, 0xA0),  # C1
    0x061C,  # ARABIC LETTER MARK
    0x200E,  # LEFT-TO-RIGHT MARK
    0x200F,  # RIGHT-TO-LEFT MARK
    0x2028,  # LINE SEPARATOR
    0x2029,  # PARAGRAPH SEPARATOR
    *range(0x202A, 0x202F),  # LRE RLE PDF LRO RLO
    *range(0x2066, 0x206A),  # LRI RLI FSI PDI
)


def _table() -> dict[int, str]:
    table = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F)}
    table.update(_NAMED)
    table.update({c: f"\\u{c:04x}" for c in _WIDE_CONTROLS})
    # surrogateescape: U+DC80..U+DCFF stand for the bytes 0x80..0xff.
    table.update({0xDC00 | b: f"\\x{b:02x}" for b in range(0x80, 0x100)})
    return table


_TERMINAL: Final = _table()

# Escaped names by name: a handful recur. Bounded; past it, starts over.
_CACHE_MAX: Final = 4096
_terminal_cache: dict[str, str] = {}


def terminal(name: str) -> str:
    """``name`` (surrogateescape) as it may be written to a terminal."""
    if name.isascii() and name.isprintable() and "\\" not in name:
        return name
    escaped = _terminal_cache.get(name)
    if escaped is None:
        if len(_terminal_cache) >= _CACHE_MAX:
            _terminal_cache.clear()
        escaped = _terminal_cache[name] = name.translate(_TERMINAL)
    return escaped


def terminal_bytes(raw: bytes) -> str:
    """Bytes (a command line's argument) as they may be written to a terminal."""
    return terminal(raw.decode("utf-8", "surrogateescape"))


def json_pair(key: str, name: str) -> str:
    """``"key": "..."`` and, when ``name`` is not valid UTF-8,
    ``, "key_hex": "..."``: a fragment of a JSON object, pure ASCII."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raw = to_bytes(name)
        text = raw.decode("utf-8", "replace")
        return f"{json.dumps(key)}: {json.dumps(text)}, {json.dumps(key + '_hex')}: {json.dumps(raw.hex())}"
    return f"{json.dumps(key)}: {json.dumps(name)}"


def json_bytes_pair(key: str, raw: bytes) -> str:
    """``json_pair`` for bytes."""
    return json_pair(key, raw.decode("utf-8", "surrogateescape"))


def json_fields(key: str, name: str) -> dict[str, str]:
    """The keys ``json_pair`` writes, as a dict (for ``to_dict`` users)."""
    obj: dict[str, str] = json.loads("{" + json_pair(key, name) + "}")
    return obj


def to_bytes(name: str) -> bytes:
    """The exact bytes of a surrogateescape name."""
    try:
        return name.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate that stands for no byte
        return name.encode("utf-8", "surrogatepass")


def _encode_error(error: UnicodeError) -> tuple[str, int]:
    """Codec error handler ``kstructs-escape``: a character the output's
    encoding cannot hold, as ``\\uHHHH`` (never ``\\xHH``: that is a byte)."""
    if not isinstance(error, UnicodeEncodeError):
        raise error
    chars = error.object[error.start : error.end]
    return "".join(f"\\u{ord(c):04x}" if ord(c) <= 0xFFFF else f"\\U{ord(c):08x}" for c in chars), error.end


#: For ``str.encode(encoding, ENCODE_ERRORS)`` of escaped text.
ENCODE_ERRORS: Final = "kstructs-escape"
codecs.register_error(ENCODE_ERRORS, _encode_error)


__all__ = ["ENCODE_ERRORS", "json_bytes_pair", "json_fields", "json_pair", "terminal", "terminal_bytes", "to_bytes"]
