"""Whatever a relay or an endpoint client sends, one frame costs one bounded answer and never an exception.

Frames are generated as text (lone surrogates and non-JSON included), as any JSON (integers past 64 bits too),
as arrays shaped like NIP-01 messages with wrong types, and as well-formed messages carrying broken events. The
relay side gets them through `RelaySession.receive`, the built-in endpoint through `RelayEndpoint.handle` in
front of the real admission path (a `Service` built but not started: verification and matching, no network).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pushstr.app import Service
from pushstr.config import EndpointConfig, NostrConfig
from pushstr.net.clientaddr import TrustedProxies
from pushstr.nostr.event import sign_event
from pushstr.nostr.keys import Keys
from pushstr.ratelimit import TokenBucket
from pushstr.relays.endpoint import RelayEndpoint
from pushstr.relays.planner import Plan, Subscription
from pushstr.relays.session import Action, RelaySession
from tests.harness import make_settings

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
KEYS = Keys.generate()
SIGNED = sign_event(KEYS, 4, "ciphertext?iv=abc", [["p", "a" * 64]]).to_dict()
SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
#: The signed event with one field replaced or removed: what a broken or hostile client sends.
BROKEN_EVENTS = st.builds(
    lambda field, value, drop: {k: v for k, v in {**SIGNED, field: value}.items() if k != drop},
    st.sampled_from(sorted(SIGNED)),
    JSON_VALUES,
    st.sampled_from([*sorted(SIGNED), ""]),
)
MESSAGE_TYPES = st.sampled_from(["EVENT", "OK", "EOSE", "CLOSED", "NOTICE", "AUTH", "REQ", "CLOSE", "COUNT", ""])
MESSAGES = st.builds(
    lambda kind, rest: json.dumps([kind, *rest]),
    MESSAGE_TYPES,
    st.lists(JSON_VALUES | BROKEN_EVENTS | st.sampled_from(["sub", SIGNED["id"]]), max_size=4),
)
FRAMES = MESSAGES | st.text(max_size=300) | st.builds(json.dumps, JSON_VALUES)


def _session() -> RelaySession:
    config = NostrConfig(relays=[], max_event_bytes=4096)
    plan = Plan({"sub": Subscription(({"kinds": [4], "#p": ["a" * 64]},))})
    session = RelaySession("wss://relay.example", KEYS, config, plan)
    session.start()
    return session


@given(frame=FRAMES, as_bytes=st.booleans())
@FUZZ
def test_relay_frames_become_actions_never_exceptions(frame: str, as_bytes: bool) -> None:
    session = _session()
    raw: str | bytes = frame.encode("utf-8", "surrogatepass") if as_bytes else frame
    actions: list[Action] = session.receive(raw)
    assert isinstance(actions, list)


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> RelayEndpoint:
    data_dir: Path = tmp_path_factory.mktemp("endpoint-fuzz")
    service = Service(make_settings(data_dir, [], Keys.generate().secret_hex))

    async def durable() -> None:
        return None

    return RelayEndpoint(EndpointConfig(max_message_bytes=2048), service.pipeline.ingest, durable, TrustedProxies(()))


@given(frame=FRAMES)
@FUZZ
def test_endpoint_frames_get_one_nip01_answer(endpoint: RelayEndpoint, frame: str) -> None:
    reply, _ = endpoint.handle(frame, TokenBucket(1000.0, 1000.0))
    if reply is None:  # only CLOSE goes unanswered
        assert orjson.loads(frame)[0] == "CLOSE"
        return
    answer: list[Any] = orjson.loads(reply)
    assert answer[0] in {"OK", "NOTICE", "CLOSED"}
    assert len(reply) < 400  # an answer never echoes what it was sent
    if answer[0] == "OK":
        assert isinstance(answer[2], bool) and isinstance(answer[3], str)
