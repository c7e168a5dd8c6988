"""Prove ctypes layouts and constants against C: any header tree through the
C compiler, or the kernel's BTF.

A ``Binding`` says what one header's mirror declares: its ctypes classes
(named after the C tags; a class for an anonymous member type is named
``parent__member`` and reached through a field), its integer constants, its
Python versions of the header's function-like macros, the header items it
leaves out on purpose, and the Linux version that added each newer item.
``Binding.from_module`` reads that from a module with ``HEADER``, ``TYPES``,
``CONSTANTS``, ``MACRO_FUNCTIONS``, ``NOT_MIRRORED`` and ``ADDED_IN``.

``check_headers`` compiles one probe program against the headers and runs it:
``sizeof``, ``_Alignof``, ``offsetof``, signedness and array length of every
field path, every constant's value and every macro over a range of inputs.
It also preprocesses the headers to find the items they have and the binding
lacks. ``check_btf`` compares the same layouts and the enumerators with a BTF
blob such as ``/sys/kernel/btf/vmlinux``. Both return a ``Report`` of
``Finding`` values; no exception escapes for a difference, only
``CheckError`` when the check cannot run at all.

The package holds one module per job: ``model`` (bindings, facts, findings,
categories), ``cc`` (the C compiler driver and the probe), ``cscan`` (the C
declaration scanner), ``headers`` (``check_headers``) and ``btfcheck``
(``check_btf``).
"""

from __future__ import annotations

from kstructs.conformance.btfcheck import check_btf
from kstructs.conformance.headers import check_headers
from kstructs.conformance.model import CATEGORIES, DEFAULT_BTF, Binding, Finding, Report
from kstructs.conformance.model import MACRO_INPUTS as MACRO_INPUTS
from kstructs.conformance.model import CType as CType
from kstructs.conformance.model import Value as Value
from kstructs.errors import CheckError

__all__ = ["Binding", "CheckError", "Finding", "Report", "check_btf", "check_headers", "CATEGORIES", "DEFAULT_BTF"]
