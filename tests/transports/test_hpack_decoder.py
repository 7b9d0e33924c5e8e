"""The table-less HPACK decoder against RFC 7541's example and against `hpack`, a second implementation, whose
encoder is told the table size 0 the client advertises; and what it refuses."""

from __future__ import annotations

import random

import hpack
import pytest

from pushstr.net import hpack_decoder
from pushstr.net.hpack_decoder import HpackViolation

LIMIT = 64 * 1024

#: RFC 7541 C.6.1: the first response of the Huffman-coded example (literals with indexing of static names).
RFC_C61 = bytes.fromhex(
    "488264025885aec3771a4b6196d07abe941054d444a8200595040b8166e082a62d1bff6e919d29ad171863c78f0b97c8e9ae82ae43d3"
)


def test_the_rfc_example_response_decodes() -> None:
    fields = hpack_decoder.fields(RFC_C61, LIMIT)
    assert hpack_decoder.status(fields) == b"302"
    assert hpack_decoder.headers(fields) == {
        "cache-control": "private",
        "date": "Mon, 21 Oct 2013 20:13:21 GMT",
        "location": "https://www.example.com",
    }


@pytest.mark.parametrize("huffman", [True, False])
def test_blocks_of_an_encoder_without_a_table_decode_as_hpack_decodes_them(huffman: bool) -> None:
    generator = random.Random(7)
    encoder = hpack.Encoder()
    encoder.header_table_size = 0  # what our SETTINGS_HEADER_TABLE_SIZE tells the server
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789-_ ;=/:,.{}\"'"
    for _ in range(200):
        fields = [(":status", generator.choice(["200", "204", "400", "403", "410", "429", "503"]))]
        for _ in range(generator.randrange(0, 6)):
            name = "".join(generator.choice("abcdefghijklmnopqrstuvwxyz-") for _ in range(generator.randrange(1, 20)))
            value = "".join(generator.choice(alphabet) for _ in range(generator.randrange(0, 80)))
            fields.append((name, value))
        fields.append(("apns-id", "77D1B8A2-1D2A-4C3B-9E3A-0F3C2B1A0D9E"))
        block = encoder.encode(fields, huffman=huffman)
        expected = hpack.Decoder().decode(block, raw=True)
        ours = hpack_decoder.fields(block, LIMIT)
        assert hpack_decoder.status(ours) == expected[0][1]
        assert hpack_decoder.headers(ours) == {
            name.decode(): value.decode() for name, value in expected if not name.startswith(b":")
        }


@pytest.mark.parametrize(
    ("block", "reason"),
    [
        (b"\xbe", "outside the static table"),  # index 62: the first dynamic entry, which cannot exist
        (b"\x80", "outside the static table"),  # index 0
        (b"\x3f\xe1\x1f", "dynamic table size"),  # a size update to 4096
        (b"\x0f", "cut short"),  # a literal whose name index never ends
        (b"\x40\x85ab", "longer than its block"),
        (b"\x00", "cut short"),  # a literal name missing
    ],
)
def test_what_a_table_less_decoder_cannot_accept_is_a_violation(block: bytes, reason: str) -> None:
    with pytest.raises(HpackViolation, match=reason):
        hpack_decoder.fields(block, LIMIT)


def test_every_truncation_of_a_block_is_refused_or_a_shorter_list() -> None:
    whole = hpack_decoder.fields(RFC_C61, LIMIT)
    for cut in range(1, len(RFC_C61)):
        try:
            fields = hpack_decoder.fields(RFC_C61[:cut], LIMIT)
        except HpackViolation:
            continue
        assert len(fields) < len(whole)
        assert fields == whole[: len(fields)]


def test_a_list_over_the_limit_is_refused_even_when_huffman_made_the_block_small() -> None:
    encoder = hpack.Encoder()
    encoder.header_table_size = 0
    block = encoder.encode([(":status", "200"), ("x-huge", "a" * 100_000)], huffman=True)
    assert len(block) < LIMIT  # 5 bits per "a"
    with pytest.raises(HpackViolation, match="header list"):
        hpack_decoder.fields(block, LIMIT)


def test_strings_are_decoded_only_when_read() -> None:
    fields = hpack_decoder.fields(b"\x88\x40\x81\x9f\x81\xff", LIMIT)  # :status 200, then a broken Huffman value
    assert hpack_decoder.status(fields) == b"200"
    with pytest.raises(HpackViolation, match="Huffman"):
        hpack_decoder.headers(fields)
