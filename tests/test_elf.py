"""kstructs._elf against objects the toolchain writes (gcc for the host's
ELF64 and ELF32, llvm-mc for foreign classes and byte orders), and against
truncated or hostile headers."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path
from typing import Literal

import pytest
from conftest import c_values, compiler

from kstructs._elf import Section, is_elf, section
from kstructs.errors import ElfError, KstructsError

# Four words in a section of their own; the assembler or compiler lays them out.
WORDS = (1, 2, 0x01020304, 0xDEADBEEF)
C_SOURCE = 'const unsigned int probe[4] __attribute__((section(".kstructs"), used)) = {1, 2, 0x01020304, 0xdeadbeef};\n'
ASM_SOURCE = '.section .kstructs,"a"\n.long 1, 2, 0x01020304, 0xdeadbeef\n.section .other,"a"\n.byte 7\n'


def words(order: str) -> bytes:
    return struct.pack(order + "4I", *WORDS)


@pytest.mark.cc
@pytest.mark.parametrize(
    ("flags", "elfclass", "machine"), [(["-m64"], 64, 62), (["-m32"], 32, 3)], ids=["elf64", "elf32"]
)
def test_gcc_object(tmp_path: Path, flags: list[str], elfclass: int, machine: int) -> None:
    src, obj = tmp_path / "p.c", tmp_path / "p.o"
    # x86's two ELF classes: another machine's compiler gives its own (test_foreign_object reads those).
    x86 = c_values(
        {"x86": "KX_X86"},
        prelude="#if defined(__x86_64__) || defined(__i386__)\n#define KX_X86 1\n#else\n#define KX_X86 0\n#endif\n",
    )
    if not x86["x86"]:
        pytest.skip("not an x86 compiler")
    src.write_text(C_SOURCE)
    built = subprocess.run([compiler(), *flags, "-c", "-o", str(obj), str(src)], capture_output=True, check=False)
    if built.returncode != 0:
        pytest.skip(f"the compiler cannot build {flags or 'native'} objects")
    data = obj.read_bytes()
    assert is_elf(data)
    # EM_X86_64 is 62 and EM_386 is 3 (include/uapi/linux/elf-em.h).
    assert section(data, ".kstructs") == Section(".kstructs", words("<"), "little", elfclass, machine)
    assert section(data, ".absent") is None


@pytest.mark.parametrize(
    ("triple", "order", "elfclass", "machine"),
    [
        ("s390x-linux-gnu", ">", 64, 22),  # EM_S390
        ("powerpc-linux-gnu", ">", 32, 20),  # EM_PPC
        ("armv7-linux-gnueabihf", "<", 32, 40),  # EM_ARM
        ("aarch64-linux-gnu", "<", 64, 183),  # EM_AARCH64
    ],
)
def test_foreign_object(tmp_path: Path, triple: str, order: str, elfclass: int, machine: int) -> None:
    mc = shutil.which("llvm-mc") or shutil.which("llvm-mc-14")
    if mc is None:
        pytest.skip("no llvm-mc to assemble foreign objects")
    src, obj = tmp_path / "p.s", tmp_path / "p.o"
    src.write_text(ASM_SOURCE)
    built = subprocess.run([mc, f"-triple={triple}", "-filetype=obj", "-o", str(obj), str(src)], check=False)
    if built.returncode != 0:
        pytest.skip(f"llvm-mc has no {triple} target")
    data = obj.read_bytes()
    byteorder: Literal["little", "big"] = "little" if order == "<" else "big"
    assert section(data, ".kstructs") == Section(".kstructs", words(order), byteorder, elfclass, machine)
    found = section(data, ".other")
    assert found is not None and found.data == b"\x07"


def elf(
    elfclass: int = 64,
    order: str = "<",
    sections: tuple[tuple[str, bytes], ...] = ((".BTF", b"data"),),
) -> bytes:
    """A minimal relocatable file: the sections, then their names, then the header table."""
    shdr = struct.Struct(order + ("IIQQQQIIQQ" if elfclass == 64 else "IIIIIIIIII"))
    ehdr_size = 64 if elfclass == 64 else 52
    names = bytearray(b"\0")
    body = bytearray()
    headers = [bytes(shdr.size)]
    for name, contents in [*sections, (".shstrtab", b"")]:
        name_off = len(names)
        names += name.encode() + b"\0"
        data = bytes(names) if name == ".shstrtab" else contents
        headers.append(shdr.pack(name_off, 1, 0, 0, ehdr_size + len(body), len(data), 0, 0, 1, 0))
        body += data
    shoff = ehdr_size + len(body)
    ident = b"\x7fELF" + bytes([elfclass // 32, 1 if order == "<" else 2, 1]) + bytes(9)
    fields = (1, 62, 1, 0, 0, shoff, 0, ehdr_size, 0, 0, shdr.size, len(headers), len(headers) - 1)
    ehdr = ident + struct.pack(order + ("HHIQQQIHHHHHH" if elfclass == 64 else "HHIIIIIHHHHHH"), *fields)
    return ehdr + bytes(body) + b"".join(headers)


@pytest.mark.parametrize("elfclass", [32, 64])
@pytest.mark.parametrize("order", ["<", ">"])
def test_built_here(elfclass: int, order: str) -> None:
    data = elf(elfclass, order, ((".text", b"code"), (".BTF", b"btf!"), (".BTF", b"second")))
    found = section(data, ".BTF")
    assert found is not None
    assert (found.data, found.elfclass, found.byteorder) == (b"btf!", elfclass, "little" if order == "<" else "big")
    assert section(data, "") is None  # the null section 0 is not a match
    assert section(data, ".BT") is None


def test_every_truncation_is_an_elf_error() -> None:
    """The header table comes last, so every proper prefix of the file lacks part of it."""
    for elfclass in (32, 64):
        data = elf(elfclass)
        for n in range(len(data)):
            with pytest.raises(ElfError):
                section(data[:n], ".BTF")


@pytest.mark.parametrize("size", range(0x34, 0x40))
def test_short_elf64_header(size: int) -> None:
    """Long enough for an ELF32 header, too short for an ELF64 one."""
    with pytest.raises(ElfError, match=f"ELF file too short for its header: 0x{size:x} bytes"):
        section(elf(64)[:size], ".BTF")


def patched(data: bytes, at: int, fmt: str, value: int) -> bytes:
    return data[:at] + struct.pack(fmt, value) + data[at + struct.calcsize(fmt) :]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d[:4] + b"\x03" + d[5:], "bad ELF class 0x3"),
        (lambda d: d[:5] + b"\x00" + d[6:], "bad ELF data encoding 0x0"),
        (lambda d: b"\x7fELG" + d[4:], "not an ELF file: magic 0x7f454c47"),
        (
            lambda d: patched(d, 0x28, "<Q", 1 << 63),
            "ELF section header table past the end of the file: 0x80000000000000c0",
        ),
        (lambda d: patched(d, 0x3A, "<H", 8), "bad ELF section header size 0x8"),
        (lambda d: patched(d, 0x3C, "<H", 0xFF00), "ELF section header table past the end of the file"),
        (lambda d: patched(d, 0x3E, "<H", 3), "bad ELF section name table index 0x3"),
    ],
    ids=["class", "encoding", "magic", "shoff", "shentsize", "shnum", "shstrndx"],
)
def test_malformed_header(change: object, message: str) -> None:
    data = elf(64)
    assert callable(change)
    with pytest.raises(ElfError, match=message) as raised:
        section(change(data), ".BTF")
    assert isinstance(raised.value, KstructsError) and isinstance(raised.value, ValueError)


def test_malformed_section_headers() -> None:
    data = elf(64)
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    btf_header, names_header = shoff + 64, shoff + 128
    with pytest.raises(ElfError, match="ELF section 0x1 past the end of the file: 0x"):
        section(patched(data, btf_header + 0x20, "<Q", 1 << 40), ".BTF")
    with pytest.raises(ElfError, match="ELF section name offset out of range: 0x99"):
        section(patched(data, btf_header, "<I", 0x99), ".BTF")
    with pytest.raises(ElfError, match=r"ELF section 0x1 has no contents in the file \(SHT_NOBITS\)"):
        section(patched(data, btf_header + 4, "<I", 8), ".BTF")
    # A name table without its final NUL: the last name runs off its end.
    size = struct.unpack_from("<Q", data, names_header + 0x20)[0]
    with pytest.raises(ElfError, match="ELF section name not terminated at 0x6"):
        section(patched(data, names_header + 0x20, "<Q", size - 1), ".nothere")


def test_no_section_table() -> None:
    data = patched(elf(64), 0x28, "<Q", 0)
    assert section(data, ".BTF") is None
    assert section(patched(elf(64), 0x3E, "<H", 0), ".BTF") is None


def test_extended_numbering() -> None:
    """e_shnum 0 and e_shstrndx SHN_XINDEX: the real values are in section 0."""
    data = elf(64)
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    data = patched(patched(data, 0x3C, "<H", 0), 0x3E, "<H", 0xFFFF)
    data = patched(patched(data, shoff + 0x20, "<Q", 3), shoff + 0x28, "<I", 2)
    found = section(data, ".BTF")
    assert found is not None and found.data == b"data"
