"""The OpenAPI document tells the truth: schemathesis runs every check against a running pushstr.

Requests to the NIP-98 routes are signed as they go out (the signature covers the exact body bytes sent), so
generated bodies reach the body checks instead of stopping at 401. Every check is on. Where a schema-valid body
can still be refused with 400 because validity needs more than a schema can say, the operation lists 400 among
the statuses a valid body may get: a bech32 checksum or a signer that must match (`/register`), a token sealed to
this server's key or a push endpoint the URL guard must resolve (`/api/register`).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings

from pushstr.nostr.keys import Keys
from pushstr.nostr.nip98 import build_authorization
from tests.harness import RunningServer, make_settings

SERVER = Keys.generate()
CLIENT = Keys.generate()
SEMANTIC_400 = ["2xx", "400", "401", "403", "404", "409", "429"]
CONFIG = schemathesis.Config.from_dict(
    {
        "operations": [
            {"include-path": path, "checks": {"positive_data_acceptance": {"expected-statuses": SEMANTIC_400}}}
            for path in ("/register", "/api/register")
        ]
    }
)


class Nip98(requests.auth.AuthBase):
    """Signs each request as `CLIENT` for its method, URL and body, the way a NIP-98 client does."""

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        body = request.body.encode() if isinstance(request.body, str) else request.body
        assert request.method is not None and request.url is not None
        request.headers["Authorization"] = build_authorization(CLIENT, request.method, request.url, body or None)
        return request


class ServerThread:
    """pushstr on its own event loop in a thread: schemathesis calls it synchronously from the test."""

    def __init__(self, data_dir: Path) -> None:
        self.server = RunningServer(make_settings(data_dir, [], SERVER.secret_hex))
        self._started = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=asyncio.run, args=(self._serve(),), daemon=True)

    async def _serve(self) -> None:
        await self.server.start()
        self._started.set()
        try:
            await asyncio.to_thread(self._stop.wait)
        finally:
            await self.server.stop()

    def __enter__(self) -> ServerThread:
        self._thread.start()
        assert self._started.wait(30), "pushstr did not start"
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(30)


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    with ServerThread(tmp_path_factory.mktemp("openapi")) as thread:
        yield thread


def test_every_answer_is_documented(running: ServerThread) -> None:
    schema = schemathesis.openapi.from_url(f"{running.server.base_url}/openapi.json", config=CONFIG)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15
    with requests.Session() as session:
        session.auth = Nip98()
        for operation in operations:

            @given(case=operation.as_strategy())
            @settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
            def call(case: schemathesis.Case) -> None:
                case.call_and_validate(session=session)

            call()


def test_protocol_errors_are_json(running: ServerThread) -> None:
    """A request uvicorn cannot parse (here: headers past its limit) gets the JSON error body too."""
    reply = requests.get(f"{running.server.base_url}/health", headers={"X-Big": "a" * 200_000}, timeout=10)
    assert reply.status_code == 400
    assert reply.headers["content-type"] == "application/json"
    assert set(reply.json()) == {"error", "reason"}


def test_405_lists_every_method_of_the_path(running: ServerThread) -> None:
    reply = requests.put(f"{running.server.base_url}/unregister", timeout=10)
    assert reply.status_code == 405
    assert set(reply.headers["allow"].split(", ")) == {"DELETE", "POST"}
    assert reply.json()["error"] == "method_not_allowed"
