"""Every exception kstructs raises itself, in one hierarchy.

``KstructsError`` is the base. Each error also keeps the builtin base its
callers already catch: a malformed datagram or BTF blob is a ``ValueError``,
a refused subscription a ``PermissionError``, and so on. Failed system calls
that kstructs does not explain further stay plain ``OSError`` with their errno.
"""

from __future__ import annotations


class KstructsError(Exception):
    """Base of the errors kstructs raises itself (syscall failures stay ``OSError``)."""


# --- The parser (kstructs.events) ---------------------------------------------


class ParseError(KstructsError, ValueError):
    """Malformed input: a length past the buffer, an inconsistent ``cn_msg.len``,
    a foreign connector id. The message names the offending value in hex."""

    def __init__(self, message: str, offset: int = 0) -> None:
        super().__init__(message)
        self.offset = offset  # where the offending netlink message starts


# --- The BTF reader (kstructs.btf) ----------------------------------------------


class BtfError(KstructsError, ValueError):
    """The data is not well-formed BTF, or cannot be read as such."""


# --- The ELF reader (kstructs._elf) ---------------------------------------------


class ElfError(KstructsError, ValueError):
    """The data is not a well-formed ELF file: a header, offset or size out of range."""


# --- The conformance checker (kstructs.conformance) -----------------------------


class CheckError(KstructsError):
    """The check could not run: no compiler, headers not found, unreadable BTF."""


# --- The listener (kstructs.listener) -------------------------------------------


class PrivilegeError(KstructsError, PermissionError):
    """The kernel refused the subscription for want of ``CAP_NET_ADMIN`` (before Linux 6.6)."""


class NoAckError(KstructsError, TimeoutError):
    """No reply to the subscribe request: no ``CONFIG_PROC_EVENTS``, not the initial namespaces,
    or (before Linux 6.6) no ``CAP_NET_ADMIN``."""


class NamespaceError(KstructsError, ConnectionRefusedError):
    """``ECONNREFUSED``: the process connector exists only in the initial network namespace."""


class NoConnectorError(KstructsError, OSError):
    """``EPROTONOSUPPORT``: no ``NETLINK_CONNECTOR`` here (``CONFIG_CONNECTOR``, or an emulator)."""


__all__ = [
    "KstructsError",
    "ParseError",
    "BtfError",
    "ElfError",
    "CheckError",
    "PrivilegeError",
    "NoAckError",
    "NamespaceError",
    "NoConnectorError",
]
