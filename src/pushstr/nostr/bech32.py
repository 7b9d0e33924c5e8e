"""BIP-173 bech32 (not bech32m: NIP-19 uses the original checksum constant) with 8↔5-bit regrouping."""

from __future__ import annotations

from pushstr.nostr.errors import Bech32Error

CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_VALUES = {char: index for index, char in enumerate(CHARSET)}
_GENERATORS = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
_BECH32_CONST = 1
_CHECKSUM_LENGTH = 6


def _polymod(values: list[int]) -> int:
    checksum = 1
    for value in values:
        top = checksum >> 25
        checksum = (checksum & 0x1FFFFFF) << 5 ^ value
        for bit, generator in enumerate(_GENERATORS):
            if (top >> bit) & 1:
                checksum ^= generator
    return checksum


def _expand_hrp(hrp: str) -> list[int]:
    return [ord(char) >> 5 for char in hrp] + [0] + [ord(char) & 31 for char in hrp]


def _convert_bits(data: bytes | list[int], from_bits: int, to_bits: int, *, pad: bool) -> list[int]:
    """Regroup a bit stream; without `pad`, leftover bits must be fewer than `from_bits` and all zero."""
    accumulator = 0
    bits = 0
    out: list[int] = []
    mask = (1 << to_bits) - 1
    for value in data:
        accumulator = (accumulator << from_bits) | value
        bits += from_bits
        while bits >= to_bits:
            bits -= to_bits
            out.append((accumulator >> bits) & mask)
    if pad:
        if bits:
            out.append((accumulator << (to_bits - bits)) & mask)
    elif bits >= from_bits or (accumulator << (to_bits - bits)) & mask:
        raise Bech32Error("non-zero padding in bech32 data")
    return out


def encode(hrp: str, data: bytes) -> str:
    """bech32 string for `data` under the human-readable part `hrp` (lowercase)."""
    words = _convert_bits(data, 8, 5, pad=True)
    polymod = _polymod([*_expand_hrp(hrp), *words, 0, 0, 0, 0, 0, 0]) ^ _BECH32_CONST
    checksum = [(polymod >> 5 * (5 - index)) & 31 for index in range(_CHECKSUM_LENGTH)]
    return hrp + "1" + "".join(CHARSET[word] for word in words + checksum)


def decode(value: str, max_length: int) -> tuple[str, bytes]:
    """`(hrp, data)` of a bech32 string of at most `max_length` characters; `Bech32Error` otherwise.

    NIP-19 TLV strings exceed BIP-173's 90-character limit, so the caller picks the bound.
    """
    if not isinstance(value, str):
        raise Bech32Error("bech32 value must be a string")
    if len(value) > max_length:
        raise Bech32Error(f"bech32 string longer than {max_length} characters")
    if value.lower() != value and value.upper() != value:
        raise Bech32Error("mixed-case bech32 string")
    value = value.lower()
    separator = value.rfind("1")
    if separator < 1 or separator + _CHECKSUM_LENGTH + 1 > len(value):
        raise Bech32Error("bech32 separator missing or misplaced")
    hrp = value[:separator]
    if any(not 33 <= ord(char) <= 126 for char in hrp):
        raise Bech32Error("invalid character in bech32 prefix")
    try:
        words = [_VALUES[char] for char in value[separator + 1 :]]
    except KeyError as exc:
        raise Bech32Error("invalid character in bech32 data") from exc
    if _polymod([*_expand_hrp(hrp), *words]) != _BECH32_CONST:
        raise Bech32Error("bad bech32 checksum")
    return hrp, bytes(_convert_bits(words[:-_CHECKSUM_LENGTH], 5, 8, pad=False))
