"""The HTTP/2 client's HPACK encoder: what it writes must decode (with `hpack`, as servers do) to what was given."""

from __future__ import annotations

import random

import hpack
import pytest

from pushstr.net.hpack_encoder import MAX_TABLE_SIZE, HeaderEncoder, integer

TOKEN = "bearer " + "eyJhbGciOiJFUzI1NiJ9." * 12


def _request(device: int, expiration: int, length: int, token: str = TOKEN) -> list[tuple[str, str]]:
    return [
        (":method", "POST"),
        (":scheme", "https"),
        (":authority", "api.push.apple.com"),
        (":path", f"/3/device/{device:064x}"),
        ("authorization", token),
        ("apns-topic", "org.example.app"),
        ("apns-push-type", "alert"),
        ("apns-priority", "10"),
        ("apns-expiration", str(expiration)),
        ("content-length", str(length)),
    ]


def _decode(decoder: hpack.Decoder, block: bytes) -> list[tuple[str, str]]:
    return [(str(name), str(value)) for name, value in decoder.decode(block, raw=False)]


def test_blocks_decode_to_the_headers_given() -> None:
    encoder, decoder = HeaderEncoder(), hpack.Decoder()
    rng = random.Random(7)
    for n in range(3000):
        headers = _request(rng.randrange(500), 1_700_000_000 + n // 100, rng.randrange(60, 4096))
        headers.append((f"x-extra-{rng.randrange(100)}", "v" * rng.randrange(200)))  # indexed, churns the table
        if n == 1500:
            headers[4] = ("authorization", TOKEN + "refreshed")
        assert _decode(decoder, encoder.encode(headers)) == headers


def test_constant_headers_become_one_byte_and_volatile_ones_stay_out_of_the_table() -> None:
    encoder, decoder = HeaderEncoder(), hpack.Decoder()
    first = encoder.encode(_request(1, 100, 200))
    assert encoder.table_entries == 5  # authority, authorization, topic, push type, priority: not path & co
    second = encoder.encode(_request(2, 101, 300))
    _decode(decoder, first)
    assert _decode(decoder, second) == _request(2, 101, 300)
    assert TOKEN.encode() in first
    assert TOKEN.encode() not in second  # an index the second time
    assert len(second) < 120
    for device in range(100):  # many devices: the token stays in the table
        encoder.encode(_request(device, 101, 300))
    assert encoder.table_entries == 5
    # The same volatile field twice: the cached literal is byte-for-byte the same.
    assert encoder.encode([(":path", "/3/device/ab")]) == encoder.encode([(":path", "/3/device/ab")])


def test_sensitive_fields_are_never_indexed() -> None:
    encoder, decoder = HeaderEncoder(), hpack.Decoder()
    block = encoder.encode([hpack.NeverIndexedHeaderTuple("x-secret", "s3cret"), ("x-plain", "p", True)])
    decoded = decoder.decode(block, raw=False)
    assert [tuple(header) for header in decoded] == [("x-secret", "s3cret"), ("x-plain", "p")]
    assert all(isinstance(header, hpack.NeverIndexedHeaderTuple) for header in decoded)
    assert encoder.table_entries == 0


def test_table_size_changes_are_announced_and_respected() -> None:
    encoder, decoder = HeaderEncoder(), hpack.Decoder()
    _decode(decoder, encoder.encode(_request(1, 100, 200)))
    # The server lowers its table to 100 bytes and raises it again before our next block: both are announced,
    # the smallest first (RFC 7541 §4.2), and the table is emptied by the lower one.
    encoder.header_table_size = 100
    encoder.header_table_size = 2000
    block = encoder.encode(_request(2, 100, 200))
    assert block.startswith(integer(100, 5, 0x20) + integer(2000, 5, 0x20))
    assert _decode(decoder, block) == _request(2, 100, 200)
    assert decoder.header_table.maxsize == 2000
    # A larger table than we want to keep is not used beyond our own cap.
    encoder.header_table_size = 1 << 20
    decoder.max_allowed_table_size = 1 << 20
    block = encoder.encode(_request(3, 100, 200))
    assert block.startswith(integer(MAX_TABLE_SIZE, 5, 0x20))
    assert _decode(decoder, block) == _request(3, 100, 200)
    # No table at all: everything is a literal and still decodes.
    encoder.header_table_size = 0
    decoder.max_allowed_table_size = 0
    block = encoder.encode(_request(4, 100, 200))
    assert encoder.table_entries == 0
    assert _decode(decoder, block) == _request(4, 100, 200)


@pytest.mark.parametrize(("value", "bits"), [(0, 5), (30, 5), (31, 5), (1337, 5), (126, 7), (127, 7), (1 << 20, 7)])
def test_integers_match_hpack(value: int, bits: int) -> None:
    assert integer(value, bits, 0) == bytes(hpack.hpack.encode_integer(value, bits))
