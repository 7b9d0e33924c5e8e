"""Turns what the registry wants to hear about into named relay subscriptions within one relay's limits.

Stability is the point of this module. With 100 000 registered pubkeys a relay sees a few hundred filters; when
one registration changes, exactly one subscription must be re-sent, not all of them. So each tagged value is
placed by its own bits (the hex value itself for pubkeys and event ids, a SHA-256 of anything else) in a binary
trie over the key space. A trie node whose values, of every kinds group together, fit in one REQ frame of the
relay (`RelayLimits.max_message_length`, `max_filters`) becomes one subscription; a larger node is split in two
by the next bit. The plan is a pure function of the interest and the limits, so adding or removing one value
touches one node (or, when the node crosses the size bound, that node and its halves). Inside a subscription
each kinds group's sorted values are cut evenly into filters of at most `chunk_size` values; those need no
stability of their own because the whole subscription is re-sent when any of it changes.

Because a node holds every group's values of one key range, a pubkey's regular kinds and its gift wraps (kind
1059) share one REQ but not one filter: gift wraps are backdated by up to two days, so the session gives a filter
asking for 1059 a much longer `since` than the others, filter by filter.

A connection holds at most `max_subscriptions` REQs. When a relay needs more, the nodes are spread over several
connections (lanes) by a second trie over the same key space: a lane node holding more subscriptions than fit
is split by the next bit, so one registration more moves subscriptions between connections only when its lane
overflows. Fixed filters (dialect filters, profiles, one relay's own group filters) are packed first and their
REQs reserved on the first lane.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from pushstr.nostr.kinds import Kind
from pushstr.relays.limits import DEFAULT_LIMITS, RelayLimits

_KEY_BITS = 256
_HEX_DIGITS = frozenset("0123456789abcdef")
_HEX_VALUE_BYTES = 67
"""A 64-hex value in a filter: quotes and a comma."""
_SINCE_BYTES = len(',"since":9999999999')
FRAME_MARGIN_BYTES = 256
"""Room in every REQ for its envelope (`["REQ","<id>",…]`) and rounding; sub ids are short."""


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


def asks_giftwrap(filter_: Mapping[str, Any]) -> bool:
    """True when a filter asks for kind 1059, whose events need the long (backdated) `since` window."""
    kinds = filter_.get("kinds")
    return isinstance(kinds, list | tuple) and Kind.GIFT_WRAP in kinds


@dataclass(frozen=True, slots=True)
class Subscription:
    """The filters of one REQ, without `since`: the session adds each filter's own window when it sends them."""

    filters: tuple[dict[str, Any], ...]


@dataclass(frozen=True, slots=True)
class Plan:
    """Subscription id → subscription: what one connection holds. Equal interests give equal plans.

    `firehose`: the pubkeys and event ids are not in the filters; the relay sends every event of the kinds and
    pushstr matches them itself (see `Planner.plan`)."""

    subscriptions: Mapping[str, Subscription] = field(default_factory=dict)
    firehose: bool = False

    @property
    def req_count(self) -> int:
        return len(self.subscriptions)

    @property
    def filter_count(self) -> int:
        return sum(len(sub.filters) for sub in self.subscriptions.values())


@dataclass(frozen=True, slots=True)
class RelayPlan:
    """Lane id → the plan of one connection to the relay. Subscription ids are unique across lanes."""

    lanes: Mapping[str, Plan]

    @property
    def req_count(self) -> int:
        return sum(plan.req_count for plan in self.lanes.values())

    @property
    def filter_count(self) -> int:
        return sum(plan.filter_count for plan in self.lanes.values())

    @property
    def firehose(self) -> bool:
        return any(plan.firehose for plan in self.lanes.values())

    @property
    def subscriptions(self) -> dict[str, Subscription]:
        """Every lane's subscriptions in one mapping (for inspection; connections get their own lane)."""
        return {sub_id: sub for plan in self.lanes.values() for sub_id, sub in plan.subscriptions.items()}


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
FIRST_LANE = "L"
"""The lane of the whole key space: the only one while a relay's plan fits one connection, even an empty plan."""
FIREHOSE_SUBSCRIPTION = "k0"
"""The id of the firehose REQ (every event of the kinds): its live events are what the firehose costs."""


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


def _sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()


def _start(depth: int, bits: int) -> str:
    """The smallest 64-hex key inside trie node (`depth`, `bits`)."""
    return format(bits << (_KEY_BITS - depth), "064x")


@dataclass(frozen=True, slots=True)
class _Group:
    tag: str  # "p" or "e"
    kinds: tuple[int, ...]  # sorted


@dataclass(frozen=True, slots=True)
class _Sorted:
    """A set of values sorted by the 64-hex key each is placed by, those keys, and their encoded sizes.

    A pubkey or event id is its own key (uniformly random already); anything else is placed by its SHA-256.
    Lowercase hex strings of one length sort like the numbers they spell, so the trie bisects the key list
    with hex-string bounds. `sizes` holds running totals of the values' JSON sizes (None: all 64-hex, 67 each).
    """

    values: frozenset[str]
    ordered: list[str]
    keys: list[str]
    sizes: list[int] | None

    def bytes_between(self, start: int, end: int) -> int:
        if self.sizes is None:
            return _HEX_VALUE_BYTES * (end - start)
        return self.sizes[end] - self.sizes[start]


def _sort(values: frozenset[str]) -> _Sorted:
    if _all_hex64(values):
        ordered = sorted(values)
        return _Sorted(values, ordered, ordered, None)
    pairs = sorted(
        (value if len(value) == 64 and not set(value) - _HEX_DIGITS else _sha256_hex(value), value) for value in values
    )
    ordered = [value for _, value in pairs]
    sizes = [0]
    for value in ordered:
        sizes.append(sizes[-1] + len(orjson.dumps(value)) + 1)
    return _Sorted(values, ordered, [key for key, _ in pairs], sizes)


@dataclass(frozen=True, slots=True)
class _Placed:
    """One kinds group with its sorted values, as the trie walks it."""

    group: _Group
    sorted: _Sorted
    filter_bytes: int  # one filter of this group with no values, its `since` and a separating comma


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
                sources.setdefault(_Group(tag, tuple(sorted(part))), []).append(values)
    return {group: values[0] if len(values) == 1 else frozenset().union(*values) for group, values in sources.items()}


_Ranges = tuple[tuple[int, int], ...]  # per placed group: [start, end) of its values inside a trie node


class Planner:
    """Builds relay plans for an interest. Keeps each group's sorted values so that an unchanged group is not
    sorted again."""

    def __init__(self, chunk_size: int = 500) -> None:
        """`chunk_size` bounds the values in one filter (some relays cap tag values per filter)."""
        if chunk_size < 1:
            raise ValueError("chunk_size must be positive")
        self.chunk_size = chunk_size
        self._cache: dict[_Group, _Sorted] = {}

    def plan(
        self,
        interest: Interest,
        limits: RelayLimits = DEFAULT_LIMITS,
        own: Iterable[Mapping[str, Any]] = (),
        *,
        firehose: bool = False,
    ) -> RelayPlan:
        """The lanes one relay with `limits` needs for `interest`, plus `own` filters asked of that relay only.

        With `firehose` the interest's pubkeys and event ids are left out: one REQ asks for every event of their
        kinds (gift wraps in a filter of their own, for their long window), and matching happens here. That is a
        few hundred bytes however many users there are, where the lists need a REQ per few thousand values; the
        price is every event of those kinds on the relay, which admission matches before verifying.
        """
        groups = self._placed_groups(interest)
        fixed = {**self.plan_fixed(interest.extra, "x", limits), **self.plan_fixed(own, "r", limits)}
        budget = limits.max_subscriptions
        lanes: dict[str, dict[str, Subscription]] = {}
        fixed_ids = list(fixed)
        if len(fixed_ids) >= budget:  # the fixed REQs alone fill connections: they get lanes of their own
            for index in range(0, len(fixed_ids), budget):
                lanes[f"F{index // budget}"] = {sub_id: fixed[sub_id] for sub_id in fixed_ids[index : index + budget]}
            first_budget = budget
            fixed = {}
        else:
            first_budget = budget - len(fixed_ids)
        if firehose:
            lanes[FIRST_LANE] = {**_kinds_only(groups), **fixed}
        else:
            spread = _lanes(self._nodes(groups, limits), budget, first_budget)
            for lane, members in spread:
                lanes[lane] = {
                    f"n{depth}.{bits:x}": self._subscription(groups, ranges) for depth, bits, ranges in members
                }
            lanes[spread[0][0]].update(fixed)
        return RelayPlan({lane: Plan(subscriptions, firehose) for lane, subscriptions in lanes.items()})

    def _placed_groups(self, interest: Interest) -> list[_Placed]:
        groups = _groups("p", interest.p) | _groups("e", interest.e)
        cache: dict[_Group, _Sorted] = {}
        by_values: dict[int, _Sorted] = {}  # groups fed by one frozenset share its sorting
        placed: list[_Placed] = []
        for group, values in sorted(groups.items(), key=lambda item: (item[0].tag, item[0].kinds)):
            cached = self._cache.get(group)
            if cached is None or cached.values != values:
                cached = by_values.get(id(values)) or _sort(values)
            by_values[id(values)] = cached
            cache[group] = cached
            empty = len(orjson.dumps({"kinds": list(group.kinds), f"#{group.tag}": []})) + _SINCE_BYTES + 1
            placed.append(_Placed(group, cached, empty))
        self._cache = cache
        return placed

    def _nodes(self, groups: Sequence[_Placed], limits: RelayLimits) -> list[tuple[int, int, _Ranges]]:
        """The trie nodes that become subscriptions, in key order: each the largest node that fits one REQ."""
        frame = limits.max_message_length - FRAME_MARGIN_BYTES
        nodes: list[tuple[int, int, _Ranges]] = []
        stack: list[tuple[int, int, _Ranges]] = [(0, 0, tuple((0, len(placed.sorted.keys)) for placed in groups))]
        while stack:
            depth, bits, ranges = stack.pop()
            size = filters = 0
            for placed, (start, end) in zip(groups, ranges, strict=True):
                if end > start:
                    count = -(-(end - start) // self.chunk_size)
                    filters += count
                    size += count * placed.filter_bytes + placed.sorted.bytes_between(start, end)
            if not filters:
                continue
            if (size > frame or filters > limits.max_filters) and depth < _KEY_BITS:
                bound = _start(depth + 1, (bits << 1) | 1)
                middles = tuple(
                    bisect_left(placed.sorted.keys, bound, start, end)
                    for placed, (start, end) in zip(groups, ranges, strict=True)
                )
                right = tuple((middle, end) for middle, (_, end) in zip(middles, ranges, strict=True))
                left = tuple((start, middle) for middle, (start, _) in zip(middles, ranges, strict=True))
                stack.append((depth + 1, (bits << 1) | 1, right))
                stack.append((depth + 1, bits << 1, left))
            else:  # a node at full depth holds one key per group and is never split further
                nodes.append((depth, bits, ranges))
        return nodes

    def _subscription(self, groups: Sequence[_Placed], ranges: _Ranges) -> Subscription:
        filters: list[dict[str, Any]] = []
        for placed, (start, end) in zip(groups, ranges, strict=True):
            if end <= start:
                continue
            group, ordered = placed.group, placed.sorted.ordered
            kinds = list(group.kinds)
            count = -(-(end - start) // self.chunk_size)
            size = -(-(end - start) // count)
            filters.extend(
                {"kinds": kinds, f"#{group.tag}": ordered[index : min(index + size, end)]}
                for index in range(start, end, size)
            )
        return Subscription(tuple(filters))

    def plan_fixed(
        self, extra: Iterable[Mapping[str, Any]], prefix: str = "x", limits: RelayLimits = DEFAULT_LIMITS
    ) -> dict[str, Subscription]:
        """Fixed filters, kept as given (a filter with its own `since` keeps it), packed in order into as few REQs
        as the frame size and filter count allow, under ids starting with `prefix`. A filter larger than a frame
        on its own is still sent, alone: it cannot be cut without knowing what it means."""
        frame = limits.max_message_length - FRAME_MARGIN_BYTES
        planned: dict[str, Subscription] = {}
        chunk: list[dict[str, Any]] = []
        size = 0
        for filter_ in extra:
            copy = dict(filter_)
            filter_size = len(orjson.dumps(copy)) + _SINCE_BYTES + 1
            if chunk and (size + filter_size > frame or len(chunk) >= limits.max_filters):
                planned[f"{prefix}{len(planned)}"] = Subscription(tuple(chunk))
                chunk, size = [], 0
            chunk.append(copy)
            size += filter_size
        if chunk:
            planned[f"{prefix}{len(planned)}"] = Subscription(tuple(chunk))
        return planned


def _kinds_only(groups: Sequence[_Placed]) -> dict[str, Subscription]:
    """The firehose REQ: every kind the groups ask for, gift wraps apart (the session gives them their window)."""
    kinds = {kind for placed in groups for kind in placed.group.kinds}
    filters = [{"kinds": sorted(kinds - {Kind.GIFT_WRAP})}] if kinds - {Kind.GIFT_WRAP} else []
    if Kind.GIFT_WRAP in kinds:
        filters.append({"kinds": [Kind.GIFT_WRAP]})
    return {FIREHOSE_SUBSCRIPTION: Subscription(tuple(filters))} if filters else {}


def cap_lanes(plan: RelayPlan, cap: int) -> tuple[RelayPlan, int]:
    """`plan` on at most `cap` connections, and how many pubkeys the lanes cut off held.

    The lanes kept are the first in the plan's order: those of fixed filters, then the lanes of the key space in
    key order (the first of them carrying the fixed REQs too), so the same interest keeps the same pubkeys.
    """
    if len(plan.lanes) <= cap:
        return plan, 0
    names = list(plan.lanes)
    kept, cut = names[:cap], names[cap:]
    uncovered: set[str] = set()
    for name in cut:
        for sub in plan.lanes[name].subscriptions.values():
            for filter_ in sub.filters:
                values = filter_.get("#p")
                if isinstance(values, list):
                    uncovered.update(values)
    return RelayPlan({name: plan.lanes[name] for name in kept}), len(uncovered)


def _lanes(
    nodes: list[tuple[int, int, _Ranges]], budget: int, first_budget: int
) -> list[tuple[str, list[tuple[int, int, _Ranges]]]]:
    """Nodes (in key order) spread over lanes: the largest trie nodes of the key space holding at most `budget`
    subscriptions each (`first_budget` for the lane of key 0, which also carries the fixed REQs). A lane is named
    by its bits ("L", "L0", "L01", …). The lane of key 0 comes first and is there even when empty."""
    starts = [_start(depth, bits) for depth, bits, _ in nodes]
    lanes: list[tuple[str, list[tuple[int, int, _Ranges]]]] = []
    stack = [(0, 0, 0, len(nodes))]
    while stack:
        depth, bits, low, high = stack.pop()
        if high == low and bits:
            continue
        cap = first_budget if bits == 0 else budget
        if high - low > cap:
            # more than one node here, so every one of them is deeper than this lane and lies in one half
            middle = bisect_left(starts, _start(depth + 1, (bits << 1) | 1), low, high)
            stack.append((depth + 1, (bits << 1) | 1, middle, high))
            stack.append((depth + 1, bits << 1, low, middle))
        else:
            name = FIRST_LANE + (format(bits, f"0{depth}b") if depth else "")
            lanes.append((name, nodes[low:high]))
    return lanes
