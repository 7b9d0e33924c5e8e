"""An HPACK (RFC 7541) decoder for response headers with no dynamic table, whose strings are decoded when read.

The client advertises SETTINGS_HEADER_TABLE_SIZE = 0, so the server's encoder may not keep entries for it: every
field of a response is a static-table index or a literal. Without a table there is no state that each block must
update in full, so a block is only cut into fields here, and a Huffman-coded string is decoded when somebody asks
for it. A push answer is read for its `:status` only (headers matter for errors, which are rare); decoding every
`apns-id` that APNs sends with each answer, Huffman-coded, byte by byte in Python, was a tenth of a push's CPU.
"""

from __future__ import annotations

from hpack.huffman_table import decode_huffman
from hpack.table import HeaderTable

_STATIC = HeaderTable.STATIC_TABLE
_STATUS = b":status"

#: A string as it came: its bytes and whether they are Huffman-coded.
Coded = tuple[bytes, bool]
#: A field: the name (plain when it came from the static table) and the value.
Field = tuple[bytes | Coded, bytes | Coded]


class HpackViolation(Exception):
    """A header block that does not decode (RFC 7541 §4.2, §5, §6): a connection error (COMPRESSION_ERROR)."""


def _integer(block: bytes, position: int, prefix_bits: int) -> tuple[int, int]:
    """An HPACK integer (RFC 7541 §5.1) at `position`; (value, position after it)."""
    limit = (1 << prefix_bits) - 1
    value = block[position] & limit
    position += 1
    if value < limit:
        return value, position
    shift = 0
    while position < len(block):
        byte = block[position]
        position += 1
        value += (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, position
        shift += 7
        if shift > 28:
            break
    raise HpackViolation("an integer too long or cut short")


def _string(block: bytes, position: int) -> tuple[bytes | Coded, int]:
    """A string literal (RFC 7541 §5.2): plain bytes, or (bytes, True) when Huffman-coded."""
    if position >= len(block):
        raise HpackViolation("a field cut short")
    huffman = bool(block[position] & 0x80)
    length, position = _integer(block, position, 7)
    end = position + length
    if end > len(block):
        raise HpackViolation("a string longer than its block")
    data = block[position:end]
    return ((data, True) if huffman else data), end


def _static(index: int) -> tuple[bytes, bytes]:
    if not 1 <= index <= len(_STATIC):
        raise HpackViolation(f"index {index} outside the static table (the dynamic table has size 0)")
    return _STATIC[index - 1]


def fields(block: bytes, max_list_size: int) -> list[Field]:
    """The fields of a header block, strings left as they came; `HpackViolation` when their decoded size (RFC
    9113 §6.5.2: names and values plus 32 per field) is over `max_list_size`."""
    out = _cut(block)
    # Huffman codes are at least 5 bits a byte, so a block can only decode past the limit when it is long: only
    # then are its strings decoded to measure them.
    if len(block) * 8 // 5 + 32 * len(out) > max_list_size:
        size = sum(len(text(name)) + len(text(value)) + 32 for name, value in out)
        if size > max_list_size:
            raise HpackViolation(f"a header list of {size} bytes")
    return out


def _cut(block: bytes) -> list[Field]:
    out: list[Field] = []
    position, end = 0, len(block)
    while position < end:
        byte = block[position]
        if byte & 0x80:  # indexed field (§6.1)
            index, position = _integer(block, position, 7)
            out.append(_static(index))
            continue
        if byte & 0x40:  # literal with incremental indexing (§6.2.1): an entry a table of size 0 drops at once
            prefix = 6
        elif byte & 0x20:  # dynamic table size update (§6.3)
            size, position = _integer(block, position, 5)
            if size:
                raise HpackViolation("a dynamic table size over the 0 this client allows")
            continue
        else:  # literal without indexing or never indexed (§6.2.2, §6.2.3)
            prefix = 4
        index, position = _integer(block, position, prefix)
        name: bytes | Coded
        if index:
            name = _static(index)[0]
        else:
            name, position = _string(block, position)
        value, position = _string(block, position)
        out.append((name, value))
    return out


def text(string: bytes | Coded) -> bytes:
    """A string's bytes, Huffman-decoded when it came coded."""
    if isinstance(string, bytes):
        return string
    try:
        return bytes(decode_huffman(string[0]))
    except Exception as exc:  # hpack raises its own error types for bad codes and padding
        raise HpackViolation("a Huffman string that does not decode") from exc


def status(decoded: list[Field]) -> bytes:
    """The `:status` value of a response's fields (b"" when there is none)."""
    for name, value in decoded:
        if (name if isinstance(name, bytes) else text(name)) == _STATUS:
            return text(value)
    return b""


def headers(decoded: list[Field]) -> dict[str, str]:
    """The regular fields (pseudo-headers left out) as text, names lower-case as HTTP/2 sends them."""
    out = {}
    for name, value in decoded:
        plain = text(name)
        if not plain.startswith(b":"):
            out[plain.decode("ascii", "replace")] = text(value).decode("utf-8", "replace")
    return out
