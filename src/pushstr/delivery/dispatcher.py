"""The dispatcher: per-app lanes of workers, retries until a push's TTL, one push at a time per device, pruning.

Each app gets its own lane (queue + workers) so a slow or failing push service cannot starve the others. A push is
rendered and encoded once, when it is submitted (`Renderer.encode`); the queue holds those bytes and every attempt
resends them. A push that comes back `retry` is parked on a timer (exponential backoff with jitter, never sooner
than the provider's `Retry-After`) and re-queued, until the provider gives a final answer or the push's TTL
(`ttl_seconds`) has passed (outcome `expired`); an operator's `max_attempts` gives up sooner (`gave_up`). An outage
of minutes delays pushes; it does not drop them.

A device gets its pushes one at a time, in the order they were submitted: while one is queued, in flight or
waiting to retry, the next ones wait behind it. That keeps a device's notifications in order through retries and
never hammers a token that is failing.

Every final outcome and every retry is told to the ledger (the outbox), which keeps the push durable until then.
A `dead` result removes the registration through the registry's hook unless the provider's timestamp shows the
registration is newer than the provider's verdict.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from prometheus_client import Counter

from pushstr.config import AppConfig
from pushstr.delivery import metrics
from pushstr.delivery.render import Renderer
from pushstr.logutil import RateLimitedLog
from pushstr.registry.model import Registration
from pushstr.transports.base import Encoded, Notification, Outcome, SendResult, Transport

log = logging.getLogger(__name__)
_quiet = RateLimitedLog(log)

OnDead = Callable[[Registration, float | None], Awaitable[object]]

#: A provider may ask for a long pause, but a push older than this is not worth sending any more.
MAX_RETRY_AFTER_SECONDS = 3600.0
#: How long the registry's dead-token hook may take before the worker moves on.
ON_DEAD_TIMEOUT_SECONDS = 10.0


class Ledger(Protocol):
    """Where pushes are kept until they are final (the outbox)."""

    def retrying(self, notification: Notification, device: Registration, attempts: int, at: float, reason: str) -> None:
        """A push failed attempt number `attempts` and is due again at `at` (Unix seconds)."""

    def finish(self, notification: Notification, device: Registration, outcome: str) -> None:
        """A push reached its final outcome (`delivered`, `dead`, `rejected`, `expired`, …)."""

    def hand_over(self, notification: Notification, device: Registration) -> None:
        """A push another instance delivers now: not final, not kept here any more."""


class _NoLedger:
    """For a dispatcher used on its own (benchmarks, tests): nothing is kept."""

    def retrying(self, notification: Notification, device: Registration, attempts: int, at: float, reason: str) -> None:
        return None

    def finish(self, notification: Notification, device: Registration, outcome: str) -> None:
        return None

    def hand_over(self, notification: Notification, device: Registration) -> None:
        return None


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How patiently one app's pushes are retried: with backoff until their TTL, or `max_attempts` tries when set."""

    max_attempts: int | None
    base_seconds: float
    cap_seconds: float

    @classmethod
    def of(cls, app: AppConfig) -> RetryPolicy:
        return cls(app.max_attempts, app.backoff_base_seconds, app.backoff_max_seconds)

    def delay(self, attempt: int, retry_after: float | None, rand: float) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based).

        Equal jitter (half fixed, half random) keeps retries from a burst of failures from arriving together
        while still growing exponentially; the provider's `Retry-After` is a floor, not a suggestion.
        """
        backoff = min(self.cap_seconds, self.base_seconds * 2.0 ** min(attempt - 1, 64))
        jittered = backoff / 2 + rand * backoff / 2
        if retry_after is not None:
            jittered = max(jittered, retry_after)
        return min(jittered, max(self.cap_seconds, MAX_RETRY_AFTER_SECONDS))


@dataclass(frozen=True, slots=True)
class Lane:
    """One app's way out: its transport, and its renderer, whose app settings also size the lane."""

    transport: Transport
    renderer: Renderer

    @property
    def app(self) -> AppConfig:
        return self.renderer.app


@dataclass(slots=True)
class _Job:
    notification: Notification
    encoded: Encoded
    device: Registration
    expires_at: float  # Unix seconds: past it the push is not worth sending
    attempt: int = 0
    not_before: float = 0.0  # Unix seconds: a recovered push waits for its retry time


class _LaneState:
    def __init__(self, app: str, lane: Lane) -> None:
        self.app = app
        self.lane = lane
        self.queue: asyncio.Queue[_Job] = asyncio.Queue()
        self.size = 0  # jobs not finished: queued, in flight, parked, or waiting behind their device
        self.behind: dict[tuple[str, str], deque[_Job]] = {}  # a device with a job in progress → the jobs after it
        self.retry = RetryPolicy.of(lane.app)
        self.workers: list[asyncio.Task[None]] = []
        # Label lookups take a lock and a dict lookup each; these are used on every push, so resolve them once.
        self.depth = metrics.QUEUE_DEPTH.labels(app)
        self.send_seconds = metrics.SEND_SECONDS.labels(lane.transport.name)
        self._outcomes: dict[str, Counter] = {}

    def outcome(self, outcome: str) -> Counter:
        """The `pushstr_push_outcomes_total` child of this lane for `outcome`."""
        child = self._outcomes.get(outcome)
        if child is None:
            child = self._outcomes[outcome] = metrics.OUTCOMES.labels(self.app, self.lane.transport.name, outcome)
        return child


class Dispatcher:
    """Accepts pushes without blocking and works them off per app; see the module docstring."""

    def __init__(
        self,
        lanes: Mapping[str, Lane],
        on_dead: OnDead,
        rand: Callable[[], float] = random.random,
        *,
        ledger: Ledger | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._lanes = {app: _LaneState(app, lane) for app, lane in lanes.items()}
        self._on_dead = on_dead
        self._rand = rand
        self._ledger: Ledger = ledger if ledger is not None else _NoLedger()
        self._clock = clock
        self._timers: dict[int, tuple[asyncio.TimerHandle, _LaneState, _Job]] = {}
        self._pending = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._accepting = False
        self._elsewhere: Callable[[Registration], bool] | None = None

    def deliver_elsewhere(self, elsewhere: Callable[[Registration], bool] | None) -> None:
        """Leave the pushes of devices `elsewhere` picks to another instance (their shard moved): each is handed
        back to the ledger, unsent, when its turn comes (a push already in flight still finishes)."""
        self._elsewhere = elsewhere

    async def start(self) -> None:
        for state in self._lanes.values():
            await state.lane.transport.start()
            state.workers = [
                asyncio.create_task(self._work(state), name=f"push-{state.app}-{n}")
                for n in range(state.lane.app.concurrency)
            ]
        self._accepting = True

    def submit(self, notification: Notification, device: Registration) -> bool:
        """Render and queue one push; False (and a drop counted) when the app is unknown, the lane full or we are
        stopping. This is the one place an unknown app is noticed: a stored registration may name an app that was
        removed from the configuration since.

        A push that cannot be encoded at all (a malformed token, a payload that cannot fit) is finished here with
        its final outcome, counted like an attempt's; it counts as taken.
        """
        return self.resume(notification, device, attempts=0, not_before=0.0, expires_at=None)

    def resume(
        self,
        notification: Notification,
        device: Registration,
        *,
        attempts: int,
        not_before: float,
        expires_at: float | None,
    ) -> bool:
        """`submit` for a push that already had `attempts` tries (one recovered from the outbox): it waits until
        `not_before` and expires at `expires_at` (default: `ttl_seconds` from now)."""
        state = self._lanes.get(notification.app)
        if state is None:
            metrics.DROPPED.labels(notification.app, "unknown_app").inc()
            return False
        if not self._accepting:
            metrics.DROPPED.labels(state.app, "shutdown").inc()
            return False
        if state.size >= state.lane.app.queue_size:
            metrics.DROPPED.labels(state.app, "queue_full").inc()
            return False
        try:
            encoded = state.lane.renderer.encode(notification, device, state.lane.transport)
        except Exception as exc:  # a rendering bug must not reach the event path that submitted the push
            encoded = SendResult.rejected(f"error:{type(exc).__name__}")
        if isinstance(encoded, SendResult):
            state.outcome(str(encoded.outcome)).inc()
            self._log_final(state, device, str(encoded.outcome), encoded)
            self._ledger.finish(notification, device, str(encoded.outcome))
            return True
        if expires_at is None:
            expires_at = self._clock() + state.lane.app.ttl_seconds
        self._admit(state, _Job(notification, encoded, device, expires_at, attempts, not_before))
        return True

    def queued(self) -> int:
        """Pushes accepted and not finished yet (queued, in flight, waiting to retry or behind their device)."""
        return self._pending

    async def idle(self, timeout: float) -> bool:
        """Wait until nothing is queued, in flight or waiting to retry; False when `timeout` passed first."""
        try:
            async with asyncio.timeout(timeout):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    async def close(self, timeout: float = 5.0) -> None:
        """Stop accepting and give what is ready to send up to `timeout` seconds; then stop the workers.

        Pushes waiting for a retry are not waited for (their provider is failing), nor is a push that fails
        during the drain retried: whatever is not final stays with the ledger (the outbox keeps it for the next
        start)."""
        self._accepting = False
        self._drop_timers()
        if not await self.idle(timeout):
            log.warning("delivery stopped with %d pushes not final; they stay in the outbox", self._pending)
        self._drop_timers()
        workers = [task for state in self._lanes.values() for task in state.workers]
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        for state in self._lanes.values():
            while not state.queue.empty():
                state.queue.get_nowait()
            state.behind.clear()
            state.size = 0
            state.depth.set(0)
            await state.lane.transport.close()
        self._pending = 0
        self._idle.set()

    def _admit(self, state: _LaneState, job: _Job) -> None:
        """Count a new job and queue it, or line it up behind the device's job in progress."""
        state.size += 1
        self._pending += 1
        self._idle.clear()
        state.depth.set(state.size)
        key = job.device.key
        waiting = state.behind.get(key)
        if waiting is None:
            state.behind[key] = deque()
            state.queue.put_nowait(job)
        else:
            waiting.append(job)

    def _drop_timers(self) -> None:
        """Forget the jobs waiting to retry: they stay with the ledger."""
        for handle, state, job in list(self._timers.values()):
            handle.cancel()
            self._keep(state, job)
        self._timers.clear()

    def _done(self, state: _LaneState, job: _Job, outcome: str) -> None:
        """A job is final: the ledger is told, and the device's next job (if any) goes into the queue."""
        self._ledger.finish(job.notification, job.device, outcome)
        self._leave(state, job)

    def _keep(self, state: _LaneState, job: _Job) -> None:
        """At shutdown: a job and the device's jobs behind it are left to the ledger, so that the next start sends
        them in their order (none of them may go out ahead of this one now)."""
        for _ in range(len(state.behind.pop(job.device.key, ())) + 1):
            self._release(state)

    def _hand_over(self, state: _LaneState, job: _Job) -> None:
        """A job and the device's jobs behind it go to another instance, unsent and in their order."""
        for handed in (job, *state.behind.pop(job.device.key, ())):
            self._ledger.hand_over(handed.notification, handed.device)
            self._release(state)

    def _leave(self, state: _LaneState, job: _Job) -> None:
        """A final job leaves this dispatcher; its device's next job moves into the queue."""
        self._release(state)
        key = job.device.key
        waiting = state.behind.get(key)
        if waiting:
            state.queue.put_nowait(waiting.popleft())
        else:
            state.behind.pop(key, None)

    def _release(self, state: _LaneState) -> None:
        """One job fewer in the lane and in the dispatcher."""
        state.size -= 1
        state.depth.set(state.size)
        self._pending -= 1
        if self._pending <= 0:
            self._pending = 0
            self._idle.set()

    async def _work(self, state: _LaneState) -> None:
        while True:
            job = await state.queue.get()
            if self._elsewhere is not None and self._elsewhere(job.device):
                self._hand_over(state, job)
                continue
            wait = job.not_before - self._clock()
            if wait > 0:
                self._park(state, job, wait)
                continue
            outcome = await self._attempt(state, job)
            if outcome is not None:
                self._done(state, job, outcome)

    async def send_once(self, notification: Notification, device: Registration) -> SendResult:
        """One try now, beside the queue, answering with the provider's result (a user's test push): no retry, no
        outbox, and a token found dead is reported rather than pruned."""
        state = self._lanes.get(notification.app)
        if state is None:
            return SendResult.rejected("unknown_app")
        try:
            encoded = state.lane.renderer.encode(notification, device, state.lane.transport)
            if isinstance(encoded, SendResult):
                return encoded
            async with asyncio.timeout(state.lane.app.timeout_seconds):
                return await state.lane.transport.send(encoded, device)
        except TimeoutError:
            return SendResult.retry("timeout")
        except Exception as exc:  # a rendering or transport bug is the answer, not a crash of the route
            return SendResult.rejected(f"error:{type(exc).__name__}")

    async def _attempt(self, state: _LaneState, job: _Job) -> str | None:
        """One try; the final outcome, or None when the job was parked for a retry."""
        transport = state.lane.transport
        job.attempt += 1
        started = time.perf_counter()
        try:
            async with asyncio.timeout(state.lane.app.timeout_seconds):
                result = await transport.send(job.encoded, job.device)
        except TimeoutError:
            result = SendResult.retry("timeout")
        except Exception as exc:  # a transport bug must not kill the worker; the attempt counts as failed
            _quiet.warning(f"send-error-{state.app}", "push via %s raised %s", transport.name, type(exc).__name__)
            result = SendResult.retry(f"error:{type(exc).__name__}")
        state.send_seconds.observe(time.perf_counter() - started)
        outcome = self._classify(state, job, result)
        delay = 0.0
        if outcome == "retry":
            delay = state.retry.delay(job.attempt, result.retry_after, self._rand())
            if self._clock() + delay > job.expires_at:
                outcome = "expired"
        state.outcome(outcome).inc()
        if outcome == "retry":
            self._ledger.retrying(job.notification, job.device, job.attempt, self._clock() + delay, result.reason)
            self._park(state, job, delay)
            return None
        if outcome == "dead":
            await self._prune(state, job.device, result.provider_timestamp)
        elif outcome in ("rejected", "gave_up", "stale_dead", "expired"):
            self._log_final(state, job.device, outcome, result)
        return outcome

    @staticmethod
    def _log_final(state: _LaneState, device: Registration, outcome: str, result: SendResult) -> None:
        _quiet.info(
            f"{outcome}-{state.app}-{result.reason}",
            "push to device %s via %s: %s (%s, status %s)",
            device.token_id,
            state.lane.transport.name,
            outcome,
            result.reason,
            result.status,
        )

    @staticmethod
    def _classify(state: _LaneState, job: _Job, result: SendResult) -> str:
        if result.outcome is Outcome.RETRY:
            limit = state.retry.max_attempts
            return "gave_up" if limit is not None and job.attempt >= limit else "retry"
        if result.outcome is Outcome.DEAD:
            stamp = result.provider_timestamp
            if stamp is not None and job.device.created_at and stamp <= job.device.created_at:
                return "stale_dead"
            return "dead"
        return str(result.outcome)

    def _park(self, state: _LaneState, job: _Job, delay: float) -> None:
        """Put a job back into its lane's queue after `delay` seconds; its device's later jobs keep waiting."""
        if not self._accepting:  # stopping: not retried now, the ledger keeps it
            self._keep(state, job)
            return
        key = id(job)

        def requeue() -> None:
            if self._timers.pop(key, None) is not None:
                state.queue.put_nowait(job)

        handle = asyncio.get_running_loop().call_later(delay, requeue)
        self._timers[key] = (handle, state, job)

    async def _prune(self, state: _LaneState, device: Registration, stamp: float | None) -> None:
        metrics.PRUNED.labels(state.app).inc()
        try:
            async with asyncio.timeout(ON_DEAD_TIMEOUT_SECONDS):
                await self._on_dead(device, stamp)
        except Exception as exc:  # the registry's trouble must not stop deliveries
            _quiet.warning("on-dead", "removing dead device %s failed: %s", device.token_id, type(exc).__name__)
