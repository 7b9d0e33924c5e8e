"""An HPACK (RFC 7541) encoder for a client that sends the same few headers on every request.

`hpack.Encoder` (what `h2` uses) searches its tables with Python loops and Huffman-codes every literal byte by
byte; it also indexes every header it sends, so one `:path` per device token keeps pushing the provider token out
of the 4 KB dynamic table and it gets coded and sent again. At a few thousand pushes a second that was a fifth of
the delivery path's CPU. This encoder:

- indexes only fields worth it (everything but the names in `volatile`, whose values change per request), so the
  dynamic table holds the provider token, topic, push type, … and each of them is one or two bytes per request;
- sends `volatile` fields as literals without indexing, encoded once per distinct value and cached, since such an
  encoding does not depend on the table;
- sends string literals raw, never Huffman-coded (a few bytes more on the wire, no per-byte Python loop).

It is a drop-in `hpack.Encoder` (`H2Connection.encoder = HeaderEncoder()`): `h2` calls `encode` and sets
`header_table_size` when the server's SETTINGS_HEADER_TABLE_SIZE changes, which this encoder answers with a
dynamic table size update at the start of the next header block, as RFC 7541 §4.2 requires.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

import hpack
from hpack.struct import HeaderTuple
from hpack.table import HeaderTable

#: Names whose values differ from one request to the next: indexing them would only evict useful entries.
VOLATILE = frozenset({b":path", b"content-length", b"apns-id", b"apns-expiration", b"apns-collapse-id"})
#: The most dynamic table we keep, whatever the server allows (HPACK's default is 4096).
MAX_TABLE_SIZE = 4096
#: Cached literal encodings kept before the cache starts over (bounds memory for many devices).
MAX_CACHED_LITERALS = 20_000
_ENTRY_OVERHEAD = 32  # RFC 7541 §4.1

_STATIC = HeaderTable.STATIC_TABLE
#: Full (name, value) matches in the static table → index; names → their lowest index.
_STATIC_FIELDS: dict[tuple[bytes, bytes], int] = {}
_STATIC_NAMES: dict[bytes, int] = {}
for _index, (_name, _value) in enumerate(_STATIC, start=1):
    _STATIC_FIELDS.setdefault((_name, _value), _index)
    _STATIC_NAMES.setdefault(_name, _index)


def integer(value: int, prefix_bits: int, flags: int) -> bytes:
    """An HPACK integer (RFC 7541 §5.1) with `flags` in the bits above the prefix of the first byte."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((flags | value,))
    out = bytearray((flags | limit,))
    value -= limit
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _string(data: bytes) -> bytes:
    """A raw (not Huffman-coded) string literal (RFC 7541 §5.2)."""
    return integer(len(data), 7, 0x00) + data


def _literal(name: bytes, value: bytes, prefix_bits: int, flags: int) -> bytes:
    """A literal field with the name by static index when it has one (RFC 7541 §6.2)."""
    index = _STATIC_NAMES.get(name)
    if index is None:
        return bytes((flags,)) + _string(name) + _string(value)
    return integer(index, prefix_bits, flags) + _string(value)


_STATIC_CODES = {field: integer(index, 7, 0x80) for field, index in _STATIC_FIELDS.items()}


class HeaderEncoder(hpack.Encoder):
    """See the module docstring. Header names must already be lower-case (as HTTP/2 requires)."""

    def __init__(self, volatile: frozenset[bytes] = VOLATILE) -> None:
        super().__init__()
        self._volatile = volatile
        self._limit = HeaderTable.DEFAULT_SIZE
        self._size_updates: list[int] = []
        #: The dynamic table, oldest entry first: (field, insertion number, size).
        self._entries: deque[tuple[tuple[bytes, bytes], int, int]] = deque()
        self._inserted: dict[tuple[bytes, bytes], int] = {}
        self._count = 0
        self._used = 0
        #: Encodings that do not depend on the dynamic table: static entries and volatile literals already sent.
        self._stateless: dict[tuple[bytes, bytes], bytes] = dict(_STATIC_CODES)

    @property
    def header_table_size(self) -> int:
        return self._limit

    @header_table_size.setter
    def header_table_size(self, value: int) -> None:
        self._limit = min(value, MAX_TABLE_SIZE)
        self._size_updates.append(self._limit)
        self._evict(0)

    @property
    def table_entries(self) -> int:
        """Entries in the dynamic table now (for tests)."""
        return len(self._entries)

    def encode(
        self,
        headers: Iterable[HeaderTuple | tuple[bytes | str, bytes | str] | tuple[bytes | str, bytes | str, bool | None]]
        | dict[bytes | str, bytes | str],
        huffman: bool = True,
    ) -> bytes:
        """The header block for `headers` (an iterable of pairs; special headers first). `huffman` is ignored."""
        out = bytearray()
        if self._size_updates:
            # RFC 7541 §4.2: the smallest size since the last block, then the current one.
            smallest = min(self._size_updates)
            out += integer(smallest, 5, 0x20)
            if self._limit != smallest:
                out += integer(self._limit, 5, 0x20)
            self._size_updates.clear()
        items = headers.items() if isinstance(headers, dict) else headers
        stateless = self._stateless
        for header in items:
            name, value = header[0], header[1]
            field = (
                name if isinstance(name, bytes) else name.encode("utf-8"),
                value if isinstance(value, bytes) else value.encode("utf-8"),
            )
            if (isinstance(header, HeaderTuple) and not header.indexable) or (len(header) > 2 and header[2]):
                out += self._unindexed(field, True)
                continue
            code = stateless.get(field)  # a static table entry, or a volatile field sent before
            if code is not None:
                out += code
                continue
            number = self._inserted.get(field)
            if number is not None:
                out += integer(len(_STATIC) + 1 + self._count - number, 7, 0x80)  # the newest entry is 62
                continue
            out += self._unindexed(field, False) if field[0] in self._volatile else self._add(field)
        return bytes(out)

    def _unindexed(self, field: tuple[bytes, bytes], sensitive: bool) -> bytes:
        """Literal without indexing (never-indexed when sensitive); the same bytes whatever the table holds, so the
        non-sensitive ones are kept for the next time."""
        if sensitive:
            return _literal(field[0], field[1], 4, 0x10)
        if len(self._stateless) >= MAX_CACHED_LITERALS:
            self._stateless = dict(_STATIC_CODES)
        code = self._stateless[field] = _literal(field[0], field[1], 4, 0x00)
        return code

    def _add(self, field: tuple[bytes, bytes]) -> bytes:
        """Literal with incremental indexing, entering the field into the dynamic table (RFC 7541 §6.2.1)."""
        size = len(field[0]) + len(field[1]) + _ENTRY_OVERHEAD
        if size > self._limit:
            return self._unindexed(field, False)  # would empty the table and not be stored anyway
        self._evict(size)
        self._count += 1
        self._entries.append((field, self._count, size))
        self._inserted[field] = self._count
        self._used += size
        return _literal(field[0], field[1], 6, 0x40)

    def _evict(self, room: int) -> None:
        """Drop the oldest entries until `room` more bytes fit under the limit, as the decoder does."""
        while self._entries and self._used + room > self._limit:
            field, number, size = self._entries.popleft()
            self._used -= size
            if self._inserted.get(field) == number:
                del self._inserted[field]
