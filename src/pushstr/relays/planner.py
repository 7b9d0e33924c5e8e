"""Turns what the registry wants to hear about into named relay subscriptions, and diffs two such plans.

Stability is the point of this module. With 100 000 registered pubkeys a relay sees a few hundred filters; when
one registration changes, exactly one subscription must be re-sent, not all of them. So each tagged value is
placed by its own bits (the hex value itself for pubkeys and event ids, a SHA-256 of anything else) in a binary
trie: a trie node whose values fit in one subscription (`chunk_size * filters_per_req`) becomes a subscription,
and a larger node is split in two by the next bit. The plan is a pure function of the interest, so adding or
removing one value touches one node (or, when the node crosses the size bound, that node and its halves).
Inside a subscription the sorted values are cut evenly into filters of at most `chunk_size` values; those need
no stability of their own because the whole subscription is re-sent when any of it changes.

Kind 1059 (gift wraps) is always planned apart from other kinds: its `created_at` is backdated by up to two days,
so the connection gives it a much longer `since` window than regular kinds.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pushstr.nostr.kinds import Kind

_KEY_BITS = 256
_HEX_DIGITS = frozenset("0123456789abcdef")


@dataclass(frozen=True)
class Interest:
    """What the server wants relays to send it.

    `p` maps a set of kinds to the pubkeys that must appear in a `p` tag; `e` does the same for event ids in an
    `e` tag (groups and channels); `extra` holds fixed filters that are subscribed as they are. Plans share the
    filter objects built from an interest, so treat them as read-only.
    """

    p: Mapping[frozenset[int], frozenset[str]] = field(default_factory=dict)
    e: Mapping[frozenset[int], frozenset[str]] = field(default_factory=dict)
    extra: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True, slots=True)
class Subscription:
    """The filters of one REQ (without `since`, which the connection adds) and which since-window they get."""

    filters: tuple[dict[str, Any], ...]
    giftwrap: bool


@dataclass(frozen=True, slots=True)
class Plan:
    """Subscription id → subscription. Equal interests give equal plans."""

    subscriptions: Mapping[str, Subscription] = field(default_factory=dict)

    @property
    def req_count(self) -> int:
        return len(self.subscriptions)

    @property
    def filter_count(self) -> int:
        return sum(len(sub.filters) for sub in self.subscriptions.values())


@dataclass(frozen=True, slots=True)
class PlanDiff:
    """What a connected relay must be told to go from one plan to the next.

    A REQ with an id the relay already knows replaces that subscription, so changed subscriptions are simply
    re-sent and only vanished ids are closed.
    """

    send: Mapping[str, Subscription]
    close: tuple[str, ...]

    @property
    def empty(self) -> bool:
        return not self.send and not self.close


EMPTY_PLAN = Plan()


def diff_plans(old: Plan, new: Plan) -> PlanDiff:
    """Subscriptions that are new or changed (to send) and ids that are gone (to close)."""
    send = {sub_id: sub for sub_id, sub in new.subscriptions.items() if old.subscriptions.get(sub_id) != sub}
    close = tuple(sub_id for sub_id in old.subscriptions if sub_id not in new.subscriptions)
    return PlanDiff(send, close)


def _all_hex64(values: frozenset[str]) -> bool:
    """True when every value is 64 lowercase hex characters, checked in bulk (C loops, not a Python loop)."""
    if set(map(len, values)) != {64}:
        return False
    joined = "".join(values)
    if joined != joined.lower():
        return False
    try:
        # fromhex skips whitespace, so a shorter result means some value held non-hex characters
        return len(bytes.fromhex(joined)) == 32 * len(values)
    except ValueError:
        return False


def _placed(values: frozenset[str]) -> tuple[list[str], list[str]]:
    """Values sorted by the 64-hex key each is placed by, and those keys.

    A pubkey or event id is its own key (uniformly random already); anything else is placed by its SHA-256.
    Lowercase hex strings of one length sort like the numbers they spell, so the trie bisects the key list
    with hex-string bounds.
    """
    if _all_hex64(values):
        ordered = sorted(values)
        return ordered, ordered
    pairs = sorted(
        (value if len(value) == 64 and not set(value) - _HEX_DIGITS else _sha256_hex(value), value) for value in values
    )
    return [value for _, value in pairs], [key for key, _ in pairs]


def _sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()


def _start(depth: int, bits: int) -> str:
    """The smallest 64-hex key inside trie node (`depth`, `bits`)."""
    return format(bits << (_KEY_BITS - depth), "064x")


def _kinds_digest(kinds: frozenset[int]) -> str:
    text = ",".join(str(kind) for kind in sorted(kinds))
    return hashlib.sha256(text.encode()).hexdigest()[:10]


@dataclass(frozen=True, slots=True)
class _Group:
    tag: str  # "p" or "e"
    kinds: frozenset[int]

    @property
    def giftwrap(self) -> bool:
        return Kind.GIFT_WRAP in self.kinds


def _groups(tag: str, interest: Mapping[frozenset[int], frozenset[str]]) -> dict[_Group, frozenset[str]]:
    """Split 1059 off every kinds-set and merge the sets that end up with the same kinds.

    A group fed by a single kinds-set keeps that very frozenset object, so the common case (one kinds-set with
    and without 1059) sorts its values once for both groups.
    """
    sources: dict[_Group, list[frozenset[str]]] = {}
    for kinds, values in interest.items():
        if not values:
            continue
        for part in (kinds - {Kind.GIFT_WRAP}, kinds & {Kind.GIFT_WRAP}):
            if part:
                sources.setdefault(_Group(tag, frozenset(part)), []).append(values)
    return {group: values[0] if len(values) == 1 else frozenset().union(*values) for group, values in sources.items()}


class Planner:
    """Builds plans for an interest. Holds a per-group cache so that an unchanged group is not re-planned."""

    def __init__(self, chunk_size: int = 500, filters_per_req: int = 3) -> None:
        """`chunk_size` bounds the values in one filter; `filters_per_req` the filters in one REQ.

        Common relays refuse websocket messages over 128 KiB; three filters of 500 pubkeys (~34 KB each) stay
        well under that.
        """
        if chunk_size < 1 or filters_per_req < 1:
            raise ValueError("chunk_size and filters_per_req must be positive")
        self.chunk_size = chunk_size
        self.filters_per_req = filters_per_req
        self._capacity = chunk_size * filters_per_req
        self._cache: dict[_Group, tuple[frozenset[str], dict[str, Subscription]]] = {}

    def plan(self, interest: Interest) -> Plan:
        subscriptions: dict[str, Subscription] = {}
        groups = _groups("p", interest.p) | _groups("e", interest.e)
        cache: dict[_Group, tuple[frozenset[str], dict[str, Subscription]]] = {}
        placed: dict[int, tuple[list[str], list[str]]] = {}  # by id(values): groups may share one frozenset
        for group, values in groups.items():
            cached = self._cache.get(group)
            if cached is not None and cached[0] == values:
                planned = cached[1]
            else:
                if id(values) not in placed:
                    placed[id(values)] = _placed(values)
                planned = self._plan_group(group, *placed[id(values)])
            cache[group] = (values, planned)
            subscriptions.update(planned)
        self._cache = cache
        subscriptions.update(self.plan_fixed(interest.extra))
        return Plan(subscriptions)

    def _plan_group(self, group: _Group, ordered: list[str], keys: list[str]) -> dict[str, Subscription]:
        prefix = f"{group.tag}{_kinds_digest(group.kinds)}."
        kinds = sorted(group.kinds)
        planned: dict[str, Subscription] = {}
        stack = [(0, 0, 0, len(keys))]  # depth, bits, start, end
        while stack:
            depth, bits, start, end = stack.pop()
            if end - start > self._capacity:
                left, right = bits << 1, (bits << 1) | 1
                middle = bisect_left(keys, _start(depth + 1, right), start, end)
                stack.append((depth + 1, right, middle, end))
                stack.append((depth + 1, left, start, middle))
            elif end > start:
                node_values = ordered[start:end]
                sub_id = f"{prefix}{depth}.{bits:x}"
                planned[sub_id] = Subscription(self._filters(group.tag, kinds, node_values), group.giftwrap)
        return planned

    def _filters(self, tag: str, kinds: list[int], values: Sequence[str]) -> tuple[dict[str, Any], ...]:
        count = -(-len(values) // self.chunk_size)
        size = -(-len(values) // count)
        return tuple(
            {"kinds": kinds, f"#{tag}": list(values[index : index + size])} for index in range(0, len(values), size)
        )

    def plan_fixed(self, extra: Iterable[Mapping[str, Any]], prefix: str = "x") -> dict[str, Subscription]:
        """Fixed filters, kept as given, under ids starting with `prefix`. One that asks for 1059 gets the
        gift-wrap window (the longer one, so nothing is missed); a filter that carries its own `since` keeps it."""
        regular: list[dict[str, Any]] = []
        giftwrap: list[dict[str, Any]] = []
        for filter_ in extra:
            kinds = filter_.get("kinds")
            target = giftwrap if isinstance(kinds, list | tuple) and Kind.GIFT_WRAP in kinds else regular
            target.append(dict(filter_))
        planned: dict[str, Subscription] = {}
        for name, filters, is_giftwrap in ((prefix, regular, False), (f"{prefix}g", giftwrap, True)):
            for index in range(0, len(filters), self.filters_per_req):
                chunk = tuple(filters[index : index + self.filters_per_req])
                planned[f"{name}{index // self.filters_per_req}"] = Subscription(chunk, is_giftwrap)
        return planned
