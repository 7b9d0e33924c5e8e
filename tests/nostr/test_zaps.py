"""Zap receipt amounts (NIP-57): the zap request's `amount`, else the bolt11 invoice."""

from __future__ import annotations

import orjson
import pytest

from pushstr.nostr.zaps import bolt11_msat, zap_sats, zap_sender

RECIPIENT = "a" * 64


def _receipt(tags: list[list[str]]) -> list[list[str]]:
    """A kind 9735 receipt's tags: what `zap_sats` reads."""
    return tags


def test_zap_amount_from_request_then_bolt11() -> None:
    request = orjson.dumps({"kind": 9734, "tags": [["amount", "21000"], ["p", RECIPIENT]]}).decode()
    assert zap_sats(_receipt([["bolt11", "lnbc50u1pxyz"], ["description", request]])) == 21
    no_amount = orjson.dumps({"kind": 9734, "tags": [["p", RECIPIENT]]}).decode()
    assert zap_sats(_receipt([["description", no_amount], ["bolt11", "lnbc50u1pxyz"]])) == 5000
    assert zap_sats(_receipt([["description", "{bad"], ["bolt11", "lnbc2500n1pxyz"]])) == 250
    assert zap_sats(_receipt([])) is None


@pytest.mark.parametrize(
    ("invoice", "msat"),
    [
        ("lnbc1m1pabc", 100_000_000),
        ("lnbc10u1pabc", 1_000_000),
        ("lnbc100n1pabc", 10_000),
        ("lnbc10p1pabc", 1),
        ("lnbc21pabc", 200_000_000_000),  # hrp "lnbc2": 2 BTC; the last "1" separates the data
        ("lntb5u1pabc", 500_000),
        ("lnbcrt1u1pabc", 100_000),
        ("lnbc1pvjluez", None),
        ("nonsense", None),
    ],
)
def test_bolt11_amounts(invoice: str, msat: int | None) -> None:
    assert bolt11_msat(invoice) == msat


def test_the_zapper_is_the_zap_requests_author() -> None:
    zapper = "f" * 64
    request = orjson.dumps({"kind": 9734, "pubkey": zapper, "tags": []}).decode()
    assert zap_sender(_receipt([["bolt11", "lnbc1u1p"], ["description", request]])) == zapper
    assert zap_sender(_receipt([["description", orjson.dumps({"pubkey": "nothex"}).decode()]])) is None
    assert zap_sender(_receipt([["description", "{bad"]])) is None
    assert zap_sender(_receipt([])) is None
