"""Sections of an ELF object, read by name: ELF32 and ELF64, either byte order.

Only the ELF header and the section header table are read, and every offset
and size in them is checked against the data before it is used, so a
truncated or hostile file raises ``ElfError`` (offending value in hex) and
never ``struct.error`` or ``IndexError``. The format is the System V gABI,
chapter 4 ("Object Files"), as in ``include/uapi/linux/elf.h``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final, Literal

from kstructs.errors import ElfError

__all__ = ["ElfError", "Section", "is_elf", "section"]

ELFMAG: Final = b"\x7fELF"
# e_ident[EI_CLASS] and e_ident[EI_DATA]
ELFCLASS32: Final = 1
ELFCLASS64: Final = 2
ELFDATA2LSB: Final = 1
ELFDATA2MSB: Final = 2
# Special section indexes and types
SHN_UNDEF: Final = 0
SHN_XINDEX: Final = 0xFFFF  # e_shstrndx lives in section 0's sh_link
SHT_NOBITS: Final = 8  # occupies no bytes in the file (.bss)


@dataclass(frozen=True)
class _Layout:
    ehdr_size: int  # sizeof(ElfN_Ehdr)
    shoff: struct.Struct  # e_shoff
    shoff_at: int
    shdr: struct.Struct  # ElfN_Shdr: name, type, flags, addr, offset, size, link, ...


# ElfN_Ehdr: e_machine at 0x12 in both; e_shentsize, e_shnum, e_shstrndx after e_flags/e_ehsize/e_phentsize/e_phnum.
_SHENT_AT: Final = {ELFCLASS32: 0x2E, ELFCLASS64: 0x3A}
_LAYOUT: Final = {
    (ELFCLASS32, "<"): _Layout(0x34, struct.Struct("<I"), 0x20, struct.Struct("<IIIIIIIIII")),
    (ELFCLASS32, ">"): _Layout(0x34, struct.Struct(">I"), 0x20, struct.Struct(">IIIIIIIIII")),
    (ELFCLASS64, "<"): _Layout(0x40, struct.Struct("<Q"), 0x28, struct.Struct("<IIQQQQIIQQ")),
    (ELFCLASS64, ">"): _Layout(0x40, struct.Struct(">Q"), 0x28, struct.Struct(">IIQQQQIIQQ")),
}


@dataclass(frozen=True)
class Section:
    """The contents of one section, with what is needed to decode them."""

    name: str
    data: bytes
    byteorder: Literal["little", "big"]
    elfclass: int  # 32 or 64
    machine: int  # e_machine (EM_X86_64 is 62, EM_S390 is 22, ...)


def is_elf(data: bytes) -> bool:
    """Whether ``data`` starts with the ELF magic (nothing else is checked)."""
    return data[:4] == ELFMAG


def section(data: bytes, name: str) -> Section | None:
    """The section called ``name`` (the first, if several), or None if there is none.

    ``ElfError`` if ``data`` is not a well-formed ELF file, if a section header
    or name lies outside the data, or if the section is ``SHT_NOBITS`` (it has
    no contents in the file).
    """
    if not is_elf(data):
        raise ElfError(f"not an ELF file: magic 0x{data[:4].hex() or '0'}")
    if len(data) < 6:
        raise ElfError(f"ELF file too short: 0x{len(data):x} bytes")
    elfclass, encoding = data[4], data[5]
    if elfclass not in (ELFCLASS32, ELFCLASS64):
        raise ElfError(f"bad ELF class 0x{elfclass:x}")
    if encoding not in (ELFDATA2LSB, ELFDATA2MSB):
        raise ElfError(f"bad ELF data encoding 0x{encoding:x}")
    o = "<" if encoding == ELFDATA2LSB else ">"
    layout = _LAYOUT[elfclass, o]
    if len(data) < layout.ehdr_size:
        raise ElfError(f"ELF file too short for its header: 0x{len(data):x} bytes")
    (machine,) = struct.unpack_from(o + "H", data, 0x12)
    (shoff,) = layout.shoff.unpack_from(data, layout.shoff_at)
    shentsize, shnum, shstrndx = struct.unpack_from(o + "HHH", data, _SHENT_AT[elfclass])
    if shoff == 0:
        return None  # no section header table
    shdr = layout.shdr
    if shentsize < shdr.size:
        raise ElfError(f"bad ELF section header size 0x{shentsize:x}")

    def header(index: int) -> tuple[int, ...]:
        at = shoff + index * shentsize
        if at + shdr.size > len(data):
            raise ElfError(f"ELF section header 0x{index:x} past the end of the file: 0x{at + shdr.size:x}")
        return shdr.unpack_from(data, at)

    # Extended numbering (gABI): past 0xff00 sections, the count and the names'
    # index are kept in section 0's sh_size and sh_link.
    if shnum == 0:
        shnum = header(0)[5]
    if shstrndx == SHN_XINDEX:
        shstrndx = header(0)[6]
    if shoff + shnum * shentsize > len(data):
        raise ElfError(f"ELF section header table past the end of the file: 0x{shoff + shnum * shentsize:x}")
    if shstrndx == SHN_UNDEF:
        return None  # no section names, so no section can be found by one
    if shstrndx >= shnum:
        raise ElfError(f"bad ELF section name table index 0x{shstrndx:x}")
    names = _contents(data, header(shstrndx), shstrndx)
    wanted = name.encode()
    byteorder: Literal["little", "big"] = "little" if o == "<" else "big"
    for index in range(1, shnum):
        h = header(index)
        name_off = h[0]
        if name_off >= len(names):
            raise ElfError(f"ELF section name offset out of range: 0x{name_off:x}")
        end = names.find(b"\0", name_off)
        if end < 0:
            raise ElfError(f"ELF section name not terminated at 0x{name_off:x}")
        if names[name_off:end] == wanted:
            return Section(name, _contents(data, h, index), byteorder, 32 if elfclass == ELFCLASS32 else 64, machine)
    return None


def _contents(data: bytes, header: tuple[int, ...], index: int) -> bytes:
    sh_type, offset, size = header[1], header[4], header[5]
    if sh_type == SHT_NOBITS:
        raise ElfError(f"ELF section 0x{index:x} has no contents in the file (SHT_NOBITS)")
    if offset + size > len(data):
        raise ElfError(f"ELF section 0x{index:x} past the end of the file: 0x{offset + size:x}")
    return data[offset : offset + size]
