"""Hypothesis strategies shared by the protocol tests."""

from __future__ import annotations

from typing import Any

import nostr_sdk
from hypothesis import assume
from hypothesis import strategies as st

# Every code point that has a UTF-8 encoding: control characters, DEL, U+2028/2029, BOM, astral planes.
# Lone surrogates are tested separately: they cannot be serialized at all.
UNICODE_TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=200)
ESCAPE_HEAVY_TEXT = st.text(
    alphabet=st.sampled_from(['"', "\\", "\n", "\r", "\t", "\b", "\f", "\x00", "\x1f", "\x7f", "\u2028", "/", "é"]),
    max_size=40,
)
CONTENT = st.one_of(UNICODE_TEXT, ESCAPE_HEAVY_TEXT)
TAGS = st.lists(st.lists(CONTENT, min_size=1, max_size=4), max_size=5)
KINDS = st.integers(min_value=0, max_value=65535)
TIMESTAMPS = st.integers(min_value=0, max_value=2**32 - 1)
SECRETS = st.binary(min_size=32, max_size=32).filter(lambda raw: 0 < int.from_bytes(raw, "big") < 2**256 - 2**129)


def sdk_tags(tags: list[list[str]]) -> list[Any]:
    """nostr-sdk `Tag`s for `tags`; examples whose tags nostr-sdk refuses to build are skipped by hypothesis."""
    result = []
    for tag in tags:
        try:
            result.append(nostr_sdk.Tag.parse(tag))
        except Exception:  # nostr-sdk validates some standard tag names (e.g. "p" needs a pubkey)
            assume(False)
    return result
