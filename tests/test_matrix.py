"""tools/matrix's verdicts: which rows of its table count as passed (no root, nothing set up)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

MATRIX = Path(__file__).resolve().parent.parent / "tools" / "matrix.py"


@pytest.fixture(scope="module")
def matrix() -> ModuleType:
    spec = importlib.util.spec_from_file_location("kstructs_matrix_under_test", MATRIX)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("status", "ok"),
    [
        ("passed", True),
        ("passed: 916 facts, 0 mismatches, 6 newer, 4 not mirrored", True),  # a check's row
        ("not available", True),
        ("FAILED (mismatch): 916 facts, 1 mismatches", False),
        ("FAILED (exit 1)", False),
        ("setup failed", False),
        ("not run", False),
        ("no pytest summary (exit 2)", False),
    ],
)
def test_which_rows_pass(matrix: ModuleType, status: str, ok: bool) -> None:
    assert matrix.Row("cell", "what", status=status).ok is ok
