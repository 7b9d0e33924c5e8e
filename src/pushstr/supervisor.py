"""Several worker processes behind one listen port: `pushstr serve` with `server.workers` above 1.

One Python process uses one core. The workers are ordinary cluster members (`cluster.enabled`): they split the
shards and the outbox by the same leases separate instances use, so nothing here decides who does what. The
supervisor only

- binds the listen socket once and hands it to every worker (`--listen-fd`): the kernel spreads the connections
  over the workers that accept on it, and a restarted worker takes up the same socket, so the port never closes;
- gives each worker a name of its own (`<instance id>-w<k>.<start>`): a restarted worker is a new member, which
  takes shards over by the lease rules instead of assuming the leases of the process it replaces;
- restarts a worker that exits while the supervisor is not stopping, after a delay that doubles with each quick
  exit (1 s up to 30 s; a worker that ran a minute starts the count again);
- forwards SIGTERM / SIGINT to every worker and waits for them (each stops gracefully, handing its shards back),
  killing those still running after `STOP_SECONDS`.

It imports nothing heavy and holds no state a worker needs: the server key and the store are the workers' own
(the key file is created race-free by whichever worker comes first).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from types import FrameType

from pushstr.config import Settings

log = logging.getLogger(__name__)

STOP_SECONDS = 30.0
"""How long the workers get to stop gracefully (uvicorn's own grace is 10 s, then the service's stop)."""
FIRST_DELAY, MAX_DELAY = 1.0, 30.0
HEALTHY_SECONDS = 60.0
"""A worker that ran this long before it exited is restarted without delay growth."""
POLL_SECONDS = 0.2


@dataclass(slots=True)
class _Worker:
    index: int
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    starts: int = 0
    delay: float = FIRST_DELAY
    restart_at: float = 0.0


def listen_socket(host: str, port: int) -> socket.socket:
    """The TCP socket every worker accepts on, bound and listening, inheritable by the workers."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(address)
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


class Supervisor:
    """Runs `settings.workers` `pushstr serve` workers on one socket until told to stop (see the module docstring)."""

    def __init__(self, settings: Settings, config_args: list[str], *, base_id: str | None = None) -> None:
        """`config_args` are the `serve` arguments each worker gets (`--config …`), the settings they read."""
        self._count = settings.workers
        self._host, self._port = settings.server.host, settings.server.port
        self._config_args = config_args
        self._base_id = settings.cluster.instance_id or base_id or f"{socket.gethostname()}-{os.getpid()}"
        self._workers = [_Worker(index) for index in range(self._count)]
        self._stopping = False

    def run(self) -> int:
        """Serve until SIGTERM / SIGINT; 0 once every worker stopped gracefully, else 1."""
        sock = listen_socket(self._host, self._port)
        previous = {sig: signal.signal(sig, self._stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        log.info("pushstr: %d workers on %s:%d", self._count, self._host, sock.getsockname()[1])
        try:
            for worker in self._workers:
                self._spawn(worker, sock)
            while not self._stopping:
                self._tend(sock)
                time.sleep(POLL_SECONDS)
            return self._stop_all()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            sock.close()

    def _stop(self, sig: int, frame: FrameType | None) -> None:
        self._stopping = True

    def _spawn(self, worker: _Worker, sock: socket.socket) -> None:
        worker.starts += 1
        name = f"{self._base_id}-w{worker.index}.{worker.starts}"
        env = {
            **os.environ,
            "PUSHSTR_SERVER__WORKERS": "1",
            "PUSHSTR_CLUSTER__INSTANCE_ID": name,
        }
        command = [
            *(sys.executable, "-m", "pushstr.cli", "serve", *self._config_args),
            *("--listen-fd", str(sock.fileno()), "--worker-index", str(worker.index)),
        ]
        # A session of its own: a terminal's Ctrl-C reaches the supervisor only, which stops the workers once
        # (a second signal would cut uvicorn's graceful shutdown short).
        worker.process = subprocess.Popen(command, env=env, pass_fds=(sock.fileno(),), start_new_session=True)
        worker.started_at = time.monotonic()
        log.info("worker %d started as %s (pid %d)", worker.index, name, worker.process.pid)

    def _tend(self, sock: socket.socket) -> None:
        """Notice workers that exited and restart them when their delay is over."""
        now = time.monotonic()
        for worker in self._workers:
            process = worker.process
            if process is not None:
                code = process.poll()
                if code is None:
                    continue
                ran = now - worker.started_at
                if ran >= HEALTHY_SECONDS:
                    worker.delay = FIRST_DELAY
                worker.restart_at = now + worker.delay
                worker.delay = min(MAX_DELAY, worker.delay * 2)
                worker.process = None
                log.warning("worker %d exited with %s after %.0f s; restarting", worker.index, code, ran)
            if worker.restart_at <= now:
                self._spawn(worker, sock)

    def _stop_all(self) -> int:
        running = [worker.process for worker in self._workers if worker.process is not None]
        for process in running:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_SECONDS
        clean = True
        for process in running:
            try:
                code = process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                code = process.wait()
            clean = clean and code == 0
        log.info("pushstr: every worker stopped%s", "" if clean else " (not all gracefully)")
        return 0 if clean else 1
