"""The outbox: every push that was matched and is not final yet, in memory and (for stored devices) in the store.

Relays are the log for events; the outbox is the log for pushes. A notification is added when delivery takes it,
before anything is sent, and leaves only with a final outcome (delivered, dead token, rejected, expired). The
pipeline's "this event is handled" mark (`record`) goes to the store in the same transaction as the rows of its
pushes, so after a crash an event is either handled with its pushes pending here, or not handled and read again
from its relay: never handled with its pushes lost.

Writes are group commits: everything added, retried and finished during `commit_interval` goes to the store in one
transaction, so the event path never waits on a disk flush. A push added and finished before its row was committed
(the common case with a fast provider) is never written at all. `durable()` waits until what was added so far is
committed: the relay endpoint answers `OK` only then.

Registrations that must not touch the disk (`persistent=False`, Mostro's privacy mode) keep their pending pushes
in memory only: a restart loses those, as it loses the registrations themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import orjson
from prometheus_client.core import REGISTRY, GaugeMetricFamily
from prometheus_client.registry import Collector

from pushstr.delivery import metrics
from pushstr.logutil import RateLimitedLog
from pushstr.registry.model import Mode, Registration
from pushstr.registry.storage import DeliveryStatus, OutboxAttempt, OutboxKey, OutboxRow, OutboxWrite, Store
from pushstr.transports.base import Notification

log = logging.getLogger(__name__)
_quiet = RateLimitedLog(log)

#: After a failed commit, wait this long before trying again (the store is down or locked).
RETRY_COMMIT_SECONDS = 1.0
#: A device's delivery status is written again for the same outcome only after this long: a busy device would
#: otherwise cost a registration update per push.
STATUS_REFRESH_SECONDS = 60.0
#: Devices whose last written status is remembered (for the refresh rule); past it the memory starts over.
MAX_STATUS_MEMORY = 100_000


def outbox_keys(notification: Notification, device: Registration) -> list[OutboxKey]:
    """The rows a (possibly merged) notification stands for."""
    return [(event_id, device.pubkey, device.device_token) for event_id in notification.event_ids]


def encode_notification(notification: Notification) -> str:
    """The stored form of a notification: its fields as JSON (the signed event, when carried, as text)."""
    fields = {
        "event_id": notification.event_id,
        "kind": notification.kind,
        "recipient": notification.recipient,
        "sender": notification.sender,
        "created_at": notification.created_at,
        "mode": str(notification.mode),
        "event_json": notification.event_json.decode() if notification.event_json is not None else None,
        "relay": notification.relay,
        "conversation": notification.conversation,
        "preview": notification.preview,
        "extra": notification.extra,
    }
    return orjson.dumps(fields).decode()


def decode_notification(text: str, app: str) -> Notification:
    """The notification of one stored row; ValueError (or KeyError, TypeError) when the row is unreadable."""
    fields = orjson.loads(text)
    event_json = fields["event_json"]
    return Notification(
        event_id=str(fields["event_id"]),
        kind=int(fields["kind"]),
        recipient=str(fields["recipient"]),
        sender=fields["sender"],
        created_at=int(fields["created_at"]),
        app=app,
        mode=Mode(fields["mode"]),
        event_json=event_json.encode() if isinstance(event_json, str) else None,
        relay=fields["relay"],
        conversation=fields["conversation"],
        preview=fields["preview"],
        extra={str(key): str(value) for key, value in dict(fields["extra"]).items()},
    )


@dataclass(slots=True)
class _Entry:
    app: str
    durable: bool  # has (or will have) a row in the store


class Outbox:
    """See the module docstring. `start()` it before use; `close()` commits what is left."""

    def __init__(
        self,
        store: Store,
        *,
        max_pending: int,
        commit_interval: float,
        keep_pushes: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """With `keep_pushes` off, pending pushes live in memory only (a restart loses them); handled event ids
        and delivery statuses are still written."""
        self._store = store
        self._keep_pushes = keep_pushes
        self._max_pending = max_pending
        self._commit_interval = commit_interval
        self._clock = clock
        self._entries: dict[OutboxKey, _Entry] = {}
        self._by_app: dict[str, dict[OutboxKey, float]] = {}  # insertion order: the first is the oldest
        self._added: dict[OutboxKey, OutboxRow] = {}
        self._retried: dict[OutboxKey, OutboxAttempt] = {}
        self._finished: list[OutboxKey] = []
        self._handled: list[tuple[str, int]] = []
        self._handled_shards: list[tuple[str, int, int]] = []
        self._statuses: dict[tuple[str, str], DeliveryStatus] = {}
        self._written_status: dict[tuple[str, str], tuple[str, float]] = {}
        self._failed: OutboxWrite | None = None
        self._wake = asyncio.Event()
        self._committed = asyncio.Event()
        self._generation = 0  # bumped by every change, so `durable()` knows what it waits for
        self._committed_generation = 0
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def __len__(self) -> int:
        return len(self._entries)

    # -- what delivery and the pipeline call --------------------------------------------------------------------

    def record(self, event_id: str, shards: Sequence[int] = ()) -> None:
        """Mark an event handled: a restart's relay catch-up skips it (its pushes are here, or were held back);
        with several instances, for `shards` too (the next owner of one skips it)."""
        now = int(self._clock())
        self._handled.append((event_id, now))
        self._handled_shards.extend((event_id, shard, now) for shard in shards)
        self._changed()

    def add(self, notification: Notification, device: Registration, ttl_seconds: int) -> bool:
        """Take a new push; False (counted) when the outbox is full. A push already here is taken again as is."""
        keys = outbox_keys(notification, device)
        fresh = [key for key in keys if key not in self._entries]
        if not fresh:
            return True
        if len(self._entries) + len(fresh) > self._max_pending:
            metrics.DROPPED.labels(notification.app, "outbox_full").inc()
            _quiet.warning("outbox-full", "outbox full (%d pending): new pushes are refused", len(self._entries))
            return False
        now = self._clock()
        durable = device.persistent and self._keep_pushes
        text = encode_notification(notification) if durable else ""
        app = notification.app
        for key in fresh:
            self._track(key, app, now, durable)
            if durable:
                self._added[key] = OutboxRow(*key, app, text, now, now + ttl_seconds, now)
        self._changed()
        return True

    def hand_over(self, notification: Notification, device: Registration) -> None:
        """Another instance delivers this push now (its shard went there): stop tracking it here, and keep its row
        (what is not committed yet still is), which the new owner reads."""
        for key in outbox_keys(notification, device):
            entry = self._entries.pop(key, None)
            if entry is not None:
                self._by_app[entry.app].pop(key, None)
        self._changed()

    def _track(self, key: OutboxKey, app: str, enqueued_at: float, durable: bool) -> None:
        self._entries[key] = _Entry(app, durable)
        self._by_app.setdefault(app, {})[key] = enqueued_at

    def _drop(self, key: OutboxKey) -> None:
        """Stop tracking a push; its row goes from the store, or is never written when not committed yet."""
        entry = self._entries.pop(key, None)
        if entry is None:
            return
        self._by_app[entry.app].pop(key, None)
        if entry.durable:
            self._retried.pop(key, None)
            if self._added.pop(key, None) is None:
                self._finished.append(key)

    def retrying(self, notification: Notification, device: Registration, attempts: int, at: float, reason: str) -> None:
        """A push failed an attempt and is due again at `at` (Unix seconds): kept, with where it stands."""
        for key in outbox_keys(notification, device):
            entry = self._entries.get(key)
            if entry is None or not entry.durable:
                continue
            row = self._added.get(key)
            if row is not None:  # not committed yet: the row goes in with its attempts
                self._added[key] = OutboxRow(
                    *key, row.app, row.notification, row.enqueued_at, row.expires_at, at, attempts, reason
                )
            else:
                self._retried[key] = OutboxAttempt(key, attempts, at, reason)
        self._changed()

    def finish(self, notification: Notification, device: Registration, outcome: str) -> None:
        """A push reached its final outcome: its rows go (or are never written, when not committed yet), and the
        device's delivery status (what `GET /registrations` shows) is updated in the same commit."""
        if device.persistent:
            self._note_status(device, outcome)
        for key in outbox_keys(notification, device):
            self._drop(key)
        self._changed()

    def _note_status(self, device: Registration, outcome: str) -> None:
        now = self._clock()
        last = self._written_status.get(device.key)
        if last is not None and last[0] == outcome and now - last[1] < STATUS_REFRESH_SECONDS:
            return
        if len(self._written_status) >= MAX_STATUS_MEMORY:
            self._written_status.clear()
        self._written_status[device.key] = (outcome, now)
        self._statuses[device.key] = DeliveryStatus(device.pubkey, device.device_token, now, outcome)

    async def durable(self) -> None:
        """Wait until everything added or recorded so far is committed (immediately when nothing is pending)."""
        target = self._generation
        while self._committed_generation < target:
            await self._committed.wait()

    # -- start, stop, recovery ----------------------------------------------------------------------------------

    async def recover(self, select: Callable[[str], bool] | None = None) -> list[tuple[OutboxRow, Notification]]:
        """The pending pushes the store holds, oldest first, now tracked here again; unreadable rows are dropped.
        With `select`, only the rows of the pubkeys it picks (the shards just taken) that are not tracked yet."""
        recovered = []
        for row in await self._store.load_outbox():
            if select is not None and (row.key in self._entries or not select(row.pubkey)):
                continue
            try:
                notification = decode_notification(row.notification, row.app)
            except (ValueError, KeyError, TypeError):
                _quiet.warning("outbox-row", "dropped an unreadable outbox row")
                self._finished.append(row.key)
                continue
            self._track(row.key, row.app, row.enqueued_at, True)
            recovered.append((row, notification))
        self._changed()
        return recovered

    def forget(self, row: OutboxRow) -> None:
        """Drop a recovered push that can no longer be sent (its device or app is gone)."""
        self._drop(row.key)
        self._changed()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outbox-commit")
        _COLLECTOR.outboxes.add(self)

    async def close(self, timeout: float = 10.0) -> None:
        """Let the committer write what is left, then stop it (pending pushes stay in the store for the next start).

        The committer is not cancelled in the middle of a write: it finishes, commits the rest and ends, or is
        given up after `timeout` seconds (the store is unreachable); then the warning says what was not written.
        """
        self._closing = True
        self._wake.set()
        if self._task is not None:
            done, _ = await asyncio.wait({self._task}, timeout=timeout)
            if not done:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            self._task = None
        if self._failed is not None or self._has_changes():
            log.warning("outbox: the last changes could not be written; the next start re-reads from relays")
        _COLLECTOR.outboxes.discard(self)

    # -- the committer ------------------------------------------------------------------------------------------

    def _changed(self) -> None:
        self._generation += 1
        self._wake.set()

    def _has_changes(self) -> bool:
        return bool(
            self._added or self._retried or self._finished or self._handled or self._statuses or self._handled_shards
        )

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            if not self._closing:
                await asyncio.sleep(self._commit_interval)  # the group: whatever else arrives in this window
            self._wake.clear()
            try:
                await self._commit()
            except Exception as exc:  # the store is down or locked: keep everything, try again soon
                metrics.OUTBOX_COMMIT_FAILURES.inc()
                _quiet.warning("outbox-commit", "outbox commit failed (%s); retrying", type(exc).__name__)
                await asyncio.sleep(RETRY_COMMIT_SECONDS)
                self._wake.set()
                continue
            if self._closing and self._failed is None and not self._has_changes():
                return

    async def _commit(self) -> None:
        generation = self._generation
        if self._failed is None and self._has_changes():
            self._failed = OutboxWrite(
                added=list(self._added.values()),
                retried=list(self._retried.values()),
                finished=self._finished,
                handled=self._handled,
                statuses=list(self._statuses.values()),
                handled_shards=self._handled_shards,
            )
            self._added, self._retried, self._finished, self._handled, self._statuses = {}, {}, [], [], {}
            self._handled_shards = []
        if self._failed is not None:
            write = self._failed
            await self._store.write_outbox(write)
            self._failed = None
            metrics.OUTBOX_WRITES.inc(len(write.added) + len(write.retried) + len(write.finished))
            if self._has_changes():  # what changed while that write ran goes next
                self._wake.set()
                return
        self._committed_generation = generation
        committed, self._committed = self._committed, asyncio.Event()
        committed.set()

    # -- what the metrics read ----------------------------------------------------------------------------------

    def pending_by_app(self) -> Iterator[tuple[str, int, float]]:
        """(app, pending pushes, age in seconds of the oldest) for every app that has had pushes (0 when drained)."""
        now = self._clock()
        for app, keys in self._by_app.items():
            yield app, len(keys), (now - next(iter(keys.values()))) if keys else 0.0

    def oldest_age(self) -> float:
        return max((age for _app, _count, age in self.pending_by_app()), default=0.0)


class _OutboxCollector(Collector):
    """`pushstr_outbox_pending` and `pushstr_outbox_oldest_seconds` per app, read from every started outbox at
    scrape time (one process has one; tests start several)."""

    def __init__(self) -> None:
        self.outboxes: set[Outbox] = set()

    def collect(self) -> Iterable[GaugeMetricFamily]:
        pending = GaugeMetricFamily("pushstr_outbox_pending", "Pushes matched and not final yet", labels=["app"])
        oldest = GaugeMetricFamily(
            "pushstr_outbox_oldest_seconds", "Age of the oldest push not final yet", labels=["app"]
        )
        counts: dict[str, int] = {}
        ages: dict[str, float] = {}
        for outbox in list(self.outboxes):
            for app, count, age in outbox.pending_by_app():
                counts[app] = counts.get(app, 0) + count
                ages[app] = max(ages.get(app, 0.0), age)
        for app, count in counts.items():
            pending.add_metric([app], count)
            oldest.add_metric([app], ages[app])
        return [pending, oldest]


_COLLECTOR = _OutboxCollector()
REGISTRY.register(_COLLECTOR)
