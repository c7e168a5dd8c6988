"""<linux/netlink.h>: layout constants and length helpers."""

from __future__ import annotations

import ctypes

import pytest
from conftest import c_values

from kstructs import netlink

LAYOUT = {
    "SIZE_NLMSGHDR": ("sizeof(struct nlmsghdr)", ctypes.sizeof(netlink.nlmsghdr)),
    "SIZE_NLMSGERR": ("sizeof(struct nlmsgerr)", ctypes.sizeof(netlink.nlmsgerr)),
}


def test_every_layout_constant_has_a_case() -> None:
    assert sorted(LAYOUT) == sorted(netlink.LAYOUT_CONSTANTS)


@pytest.mark.parametrize("name", list(LAYOUT))
def test_layout_constant_matches_classes(name: str) -> None:
    assert getattr(netlink, name) == LAYOUT[name][1]


@pytest.mark.cc
@pytest.mark.parametrize("name", list(LAYOUT))
def test_layout_constant_matches_compiler(name: str) -> None:
    assert getattr(netlink, name) == c_values({n: e for n, (e, _) in LAYOUT.items()})[name]


@pytest.mark.cc
def test_nlmsg_hdrlen_matches_macro() -> None:
    assert netlink.nlmsg_hdrlen() == c_values({"NLMSG_HDRLEN": "NLMSG_HDRLEN"})["NLMSG_HDRLEN"]


def test_nlmsg_helpers_compose() -> None:
    # NLMSG_SPACE(len) == NLMSG_ALIGN(NLMSG_LENGTH(len)), for every len
    for n in range(64):
        assert netlink.nlmsg_space(n) == netlink.nlmsg_align(netlink.nlmsg_length(n))
        assert netlink.nlmsg_align(n) % netlink.NLMSG_ALIGNTO == 0
        assert 0 <= netlink.nlmsg_align(n) - n < netlink.NLMSG_ALIGNTO
