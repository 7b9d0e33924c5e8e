"""Reading a subscription's stored events past the relay's result cap.

Relays answer a filter with at most so many stored events, newest first: strfry and nostr-sdk's relay 500,
others 100 to 5 000, whatever the filter's own `limit` says. A catch-up that hits the cap (a takeover of a busy
shard, a reconnect after a long outage) would silently leave its older events unread, and with them pushes that
nobody else will make. So every REQ that asks for stored events is watched until its EOSE: when at least
`PAGE_AT` events came back, and no fewer than the most any reply on this connection brought (a reply below the
relay's cap is complete), what may lie below them is asked for again, one page at a time, until a page comes back
short.

A page asks the same filters (same `since`) with `until` set to the oldest `created_at` seen, inclusive, because
events of that second may have been cut. A page that makes no progress (every event it brought is of that same
second) splits its filters' value lists in two instead, so each half holds fewer events; a single value whose
one second holds more than the cap cannot be read further, and is counted as truncated. Repeats are harmless:
admission drops ids it has seen. Pages are bounded per subscription (`MAX_PAGES`).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Counter

PAGE_AT = 100
"""A reply of at least this many stored events may have been cut by the relay: read below it. Lower than any
relay's cap we know of; on a relay with a higher cap a page that comes back short costs one REQ."""
MAX_PAGES = 256
"""Pages read for one subscription's catch-up at most (about 25 000 events at strfry's cap)."""
PAGE_SEPARATOR = "~"
"""Page subscription ids are `<subscription id>~<n>`; the planner's ids never contain it."""

PAGES = Counter(
    "pushstr_relay_catchup_pages_total",
    "Extra REQs reading stored events below a relay's result cap, by result (sent; truncated: could not be read)",
    ["result"],
)
for _result in ("sent", "truncated"):
    PAGES.labels(_result)

_LIST_KEYS = ("authors", "ids")


@dataclass(slots=True)
class Reading:
    """The stored events of one REQ (or page) as they arrive before its EOSE."""

    filters: tuple[dict[str, Any], ...]
    """The filters that ask for stored events, as sent (with `since`, and `until` on a page)."""
    origin: str
    """The planned subscription it reads for (itself, or the one a page belongs to)."""
    count: int = 0
    oldest: int | None = None

    def saw(self, created_at: Any) -> None:
        """One stored event; `created_at` is the relay's unverified claim, used only to page."""
        self.count += 1
        if type(created_at) is int and (self.oldest is None or created_at < self.oldest):
            self.oldest = created_at


@dataclass(slots=True)
class Pager:
    """The pages still to read on one connection, sent one at a time so that they take one subscription."""

    queue: deque[tuple[str, tuple[dict[str, Any], ...]]] = field(default_factory=deque)
    sent: dict[str, int] = field(default_factory=dict)
    """Pages sent so far per planned subscription."""
    current: str | None = None
    """The page id awaiting its EOSE."""
    largest: int = 0
    """The most stored events one reply has brought on this connection: at least the relay's cap, once cut."""

    def after(self, reading: Reading) -> None:
        """Queue what must be read below a finished reading (nothing when it came back short)."""
        short = reading.count < max(PAGE_AT, self.largest)
        self.largest = max(self.largest, reading.count)
        if short or not reading.filters:
            return
        for filters in next_pages(reading):
            if self.sent.get(reading.origin, 0) + len(self.queue) >= MAX_PAGES:
                PAGES.labels("truncated").inc()
                return
            self.queue.append((reading.origin, filters))

    def next(self) -> tuple[str, Reading] | None:
        """The next page to send, with the reading that watches it; None when none is due or one is out."""
        if self.current is not None or not self.queue:
            return None
        origin, filters = self.queue.popleft()
        number = self.sent.get(origin, 0) + 1
        self.sent[origin] = number
        self.current = f"{origin}{PAGE_SEPARATOR}{number}"
        PAGES.labels("sent").inc()
        return self.current, Reading(filters, origin)

    def refused(self) -> None:
        """The relay refused the page out (it holds too many subscriptions): what was queued cannot be read."""
        PAGES.labels("truncated").inc(1 + len(self.queue))
        self.queue.clear()
        self.current = None

    def forget(self, origin: str) -> None:
        """A planned subscription was closed or re-sent: its queued pages are moot."""
        self.queue = deque(item for item in self.queue if item[0] != origin)
        self.sent.pop(origin, None)


def is_page(sub_id: str) -> bool:
    return PAGE_SEPARATOR in sub_id


def next_pages(reading: Reading) -> list[tuple[dict[str, Any], ...]]:
    """The pages below `reading`: one with `until` at its oldest event, or two halves when that is no progress."""
    oldest = reading.oldest
    if oldest is None:
        return []
    until = min((f["until"] for f in reading.filters if "until" in f), default=None)
    if until is None or oldest < until:
        return [tuple({**f, "until": oldest} for f in reading.filters)]
    halves: tuple[list[dict[str, Any]], list[dict[str, Any]]] = ([], [])
    for filter_ in reading.filters:
        key = _split_key(filter_)
        if key is None:
            PAGES.labels("truncated").inc()
            continue
        values = filter_[key]
        middle = len(values) // 2
        halves[0].append({**filter_, key: values[:middle]})
        halves[1].append({**filter_, key: values[middle:]})
    return [tuple(half) for half in halves if half]


def _split_key(filter_: dict[str, Any]) -> str | None:
    """The value list of a filter that can be split in two (more than one value), if any."""
    for key, values in filter_.items():
        if (key in _LIST_KEYS or key.startswith("#")) and isinstance(values, list) and len(values) > 1:
            return key
    return None
