"""NIP-01 filters: parsing rules and matching."""

from __future__ import annotations

from typing import Any

import pytest

from pushstr.nostr.errors import InvalidFilter
from pushstr.nostr.event import sign_event
from pushstr.nostr.filters import Filter, matches, parse_filter
from pushstr.nostr.keys import Keys

KEYS = Keys.generate()
EVENT = sign_event(KEYS, 1059, "x", [["p", "b" * 64], ["e", "c" * 64], ["t", "Nostr"]], 1_700_000_000)


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        ({}, True),
        ({"ids": [EVENT.id]}, True),
        ({"ids": ["0" * 64]}, False),
        ({"ids": []}, False),
        ({"authors": [KEYS.public_hex, "a" * 64]}, True),
        ({"authors": ["a" * 64]}, False),
        ({"kinds": [1, 1059]}, True),
        ({"kinds": [4]}, False),
        ({"#p": ["b" * 64]}, True),
        ({"#p": ["c" * 64]}, False),
        ({"#p": ["b" * 64], "#e": ["c" * 64]}, True),
        ({"#p": ["b" * 64], "#e": ["d" * 64]}, False),
        ({"#t": ["nostr"]}, False),
        ({"#T": ["Nostr"]}, False),
        ({"since": 1_700_000_000, "until": 1_700_000_000}, True),
        ({"since": 1_700_000_001}, False),
        ({"until": 1_699_999_999}, False),
        ({"limit": 0, "kinds": [1059]}, True),
    ],
)
def test_matching(obj: dict[str, Any], expected: bool) -> None:
    assert matches(parse_filter(obj), EVENT) is expected


@pytest.mark.parametrize(
    "obj",
    [
        [],
        {"ids": "x"},
        {"ids": ["abc"]},
        {"authors": ["A" * 64]},
        {"kinds": [70000]},
        {"kinds": [True]},
        {"#pp": ["x"]},
        {"#1": ["x"]},
        {"#p": [1]},
        {"since": -1},
        {"until": 1.5},
        {"limit": "1"},
        {"search": "x"},
        {"kinds": list(range(5001))},
    ],
)
def test_invalid(obj: object) -> None:
    with pytest.raises(InvalidFilter):
        parse_filter(obj)


def test_parsed_shape() -> None:
    flt = parse_filter({"kinds": [1, 1], "#p": ["x"], "limit": 5})
    assert flt == Filter(kinds=frozenset({1}), tags={"p": frozenset({"x"})}, limit=5)
