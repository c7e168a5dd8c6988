"""<linux/connector.h>: layout constants and the flexible payload."""

from __future__ import annotations

import ctypes
import sys

import pytest
from conftest import c_values

from kstructs import connector

LAYOUT = {"SIZE_CN_MSG": ("sizeof(struct cn_msg)", ctypes.sizeof(connector.cn_msg))}


def test_every_layout_constant_has_a_case() -> None:
    assert sorted(LAYOUT) == sorted(connector.LAYOUT_CONSTANTS)


@pytest.mark.parametrize("name", list(LAYOUT))
def test_layout_constant_matches_classes(name: str) -> None:
    assert getattr(connector, name) == LAYOUT[name][1]


@pytest.mark.cc
@pytest.mark.parametrize("name", list(LAYOUT))
def test_layout_constant_matches_compiler(name: str) -> None:
    assert getattr(connector, name) == c_values({n: e for n, (e, _) in LAYOUT.items()})[name]


def test_cn_msg_payload_follows_the_header() -> None:
    msg = connector.cn_msg.from_buffer_copy(bytes(range(20)))
    # idx is bytes 0-3, val 4-7, len 16-17, each in the host's byte order.
    expected = {"little": (0x03020100, 0x07060504, 0x1110), "big": (0x00010203, 0x04050607, 0x1011)}
    assert (msg.id.idx, msg.id.val, msg.len) == expected[sys.byteorder]
    assert connector.cn_msg.data.offset == ctypes.sizeof(connector.cn_msg)
