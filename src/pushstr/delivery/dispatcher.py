"""The dispatcher: a bounded queue per app, a fixed number of workers per transport, retries and pruning.

Each app gets its own lane (queue + workers) so a slow or failing push service cannot starve the others. A push is
rendered and encoded once, when it is submitted (`Renderer.encode`); the queue holds those bytes and every attempt
resends them. A push that comes back `retry` is parked on a timer (exponential backoff with jitter, never sooner
than the provider's `Retry-After`) and re-queued; after `max_attempts` it is given up. A `dead` result removes the
registration through the registry's hook unless the provider's timestamp shows the registration is newer than the
provider's verdict.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

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


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently one app's pushes are retried."""

    max_attempts: int
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
        backoff = min(self.cap_seconds, self.base_seconds * 2.0 ** (attempt - 1))
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
    encoded: Encoded
    device: Registration
    attempt: int = 0


class _LaneState:
    def __init__(self, app: str, lane: Lane) -> None:
        self.app = app
        self.lane = lane
        self.queue: asyncio.Queue[_Job] = asyncio.Queue(maxsize=lane.app.queue_size)
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

    def __init__(self, lanes: Mapping[str, Lane], on_dead: OnDead, rand: Callable[[], float] = random.random) -> None:
        self._lanes = {app: _LaneState(app, lane) for app, lane in lanes.items()}
        self._on_dead = on_dead
        self._rand = rand
        self._timers: dict[int, tuple[asyncio.TimerHandle, _LaneState, _Job]] = {}
        self._pending = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._accepting = False

    async def start(self) -> None:
        for state in self._lanes.values():
            await state.lane.transport.start()
            state.workers = [
                asyncio.create_task(self._work(state), name=f"push-{state.app}-{n}")
                for n in range(state.lane.app.concurrency)
            ]
        self._accepting = True

    def submit(self, notification: Notification, device: Registration) -> bool:
        """Render and queue one push; False (and a drop counted) when the app is unknown, the queue full or we are
        stopping. This is the one place an unknown app is noticed: a stored registration may name an app that was
        removed from the configuration since.

        A push that cannot be encoded at all (a malformed token, a payload that cannot fit) is finished here with
        its final outcome, counted like an attempt's; it counts as taken.
        """
        state = self._lanes.get(notification.app)
        if state is None:
            metrics.DROPPED.labels(notification.app, "unknown_app").inc()
            return False
        if not self._accepting:
            metrics.DROPPED.labels(state.app, "shutdown").inc()
            return False
        try:
            encoded = state.lane.renderer.encode(notification, device, state.lane.transport)
        except Exception as exc:  # a rendering bug must not reach the event path that submitted the push
            encoded = SendResult.rejected(f"error:{type(exc).__name__}")
        if isinstance(encoded, SendResult):
            state.outcome(str(encoded.outcome)).inc()
            self._log_final(state, device, str(encoded.outcome), encoded)
            return True
        return self._enqueue(state, _Job(encoded, device))

    def queued(self) -> int:
        """Pushes accepted and not finished yet (queued, in flight or waiting to retry)."""
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
        """Stop accepting, give what is queued (and due to retry) up to `timeout` seconds, then stop the workers."""
        self._accepting = False
        if not await self.idle(timeout):
            log.warning("delivery stopped with %d pushes unfinished", self._pending)
        for key, (handle, state, _job) in list(self._timers.items()):
            handle.cancel()
            metrics.DROPPED.labels(state.app, "shutdown").inc()
            del self._timers[key]
        workers = [task for state in self._lanes.values() for task in state.workers]
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        for state in self._lanes.values():
            while not state.queue.empty():
                state.queue.get_nowait()
                metrics.DROPPED.labels(state.app, "shutdown").inc()
            state.depth.set(0)
            await state.lane.transport.close()
        self._pending = 0
        self._idle.set()

    def _enqueue(self, state: _LaneState, job: _Job) -> bool:
        try:
            state.queue.put_nowait(job)
        except asyncio.QueueFull:
            metrics.DROPPED.labels(state.app, "queue_full").inc()
            return False
        if job.attempt == 0:
            self._pending += 1
            self._idle.clear()
        state.depth.set(state.queue.qsize())
        return True

    def _finish(self) -> None:
        self._pending -= 1
        if self._pending <= 0:
            self._pending = 0
            self._idle.set()

    async def _work(self, state: _LaneState) -> None:
        while True:
            job = await state.queue.get()
            state.depth.set(state.queue.qsize())
            try:
                if await self._attempt(state, job):
                    self._finish()
            finally:
                state.queue.task_done()

    async def _attempt(self, state: _LaneState, job: _Job) -> bool:
        """One try; True when the job is finished (whatever the outcome), False when it was parked for a retry."""
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
        state.outcome(outcome).inc()
        if outcome == "retry":
            self._park(state, job, result.retry_after)
            return False
        if outcome == "dead":
            await self._prune(state, job.device, result.provider_timestamp)
        elif outcome in ("rejected", "gave_up", "stale_dead"):
            self._log_final(state, job.device, outcome, result)
        return True

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
            return "gave_up" if job.attempt >= state.retry.max_attempts else "retry"
        if result.outcome is Outcome.DEAD:
            stamp = result.provider_timestamp
            if stamp is not None and job.device.created_at and stamp <= job.device.created_at:
                return "stale_dead"
            return "dead"
        return str(result.outcome)

    def _park(self, state: _LaneState, job: _Job, retry_after: float | None) -> None:
        delay = state.retry.delay(job.attempt, retry_after, self._rand())
        key = id(job)
        handle = asyncio.get_running_loop().call_later(delay, self._unpark, key)
        self._timers[key] = (handle, state, job)

    def _unpark(self, key: int) -> None:
        entry = self._timers.pop(key, None)
        if entry is None:
            return
        _handle, state, job = entry
        if not self._enqueue(state, job):
            self._finish()

    async def _prune(self, state: _LaneState, device: Registration, stamp: float | None) -> None:
        metrics.PRUNED.labels(state.app).inc()
        try:
            async with asyncio.timeout(ON_DEAD_TIMEOUT_SECONDS):
                await self._on_dead(device, stamp)
        except Exception as exc:  # the registry's trouble must not stop deliveries
            _quiet.warning("on-dead", "removing dead device %s failed: %s", device.token_id, type(exc).__name__)
