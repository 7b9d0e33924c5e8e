"""NIP-57 zap receipts (kind 9735): how many sats were sent, and by whom. Pure; no I/O.

A receipt is signed by the recipient's LNURL server, not by the person who zapped; both the sender and the amount
they meant come from the zap request (kind 9734) the receipt embeds in its `description` tag.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from pushstr.nostr.keys import is_hex

_BOLT11_AMOUNT = re.compile(r"^ln(?:bcrt|bc|tbs|tb|sb)(\d+)([munp]?)$")
_MSAT_PER_UNIT = {"": 100_000_000_000, "m": 100_000_000, "u": 100_000, "n": 100}


def bolt11_msat(invoice: str) -> int | None:
    """Amount of a BOLT-11 invoice in millisatoshis from its human-readable part; None without an amount."""
    hrp = invoice.strip().lower().rpartition("1")[0]
    match = _BOLT11_AMOUNT.match(hrp)
    if match is None:
        return None
    digits, unit = match.groups()
    if unit == "p":
        return int(digits) // 10
    return int(digits) * _MSAT_PER_UNIT[unit]


def zap_sats(receipt_tags: Iterable[Sequence[Any]]) -> int | None:
    """Sats of a zap receipt (kind 9735) from its tags: the `amount` tag of the zap request in `description`, else
    the bolt11 invoice's amount.

    The zap request's amount is what the sender meant to send; the invoice is the fallback when a wallet left
    the request without one.
    """
    tags = [tag for tag in receipt_tags if isinstance(tag, list | tuple) and len(tag) >= 2]
    request = _zap_request(tags)
    for inner in request.get("tags", []) if request is not None else []:
        if isinstance(inner, list) and len(inner) >= 2 and inner[0] == "amount":
            try:
                return int(inner[1]) // 1000
            except (TypeError, ValueError):
                break
    for tag in tags:
        if tag[0] == "bolt11" and isinstance(tag[1], str):
            msat = bolt11_msat(tag[1])
            return None if msat is None else msat // 1000
    return None


def zap_sender(receipt_tags: Iterable[Sequence[Any]]) -> str | None:
    """The pubkey (hex) of whoever zapped: the author of the embedded zap request; None when it is unreadable.

    Nothing here is verified (the request's signature is the LNURL server's business): the value picks the name
    an alert shows and is what a device's `authors` narrow by, a filter the device asked for, never who is
    pushed.
    """
    request = _zap_request(tag for tag in receipt_tags if isinstance(tag, list | tuple) and len(tag) >= 2)
    pubkey = request.get("pubkey") if request is not None else None
    return pubkey if isinstance(pubkey, str) and is_hex(pubkey, 64) else None


def _zap_request(tags: Iterable[Sequence[Any]]) -> dict[str, Any] | None:
    """The zap request (kind 9734) a receipt embeds in its first `description` tag; None when unreadable."""
    for tag in tags:
        if tag[0] == "description" and isinstance(tag[1], str):
            try:
                request = orjson.loads(tag[1])
            except orjson.JSONDecodeError:
                return None
            return request if isinstance(request, dict) else None
    return None
