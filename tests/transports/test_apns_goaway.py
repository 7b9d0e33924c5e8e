"""APNs rotating connections with GOAWAY under load: every push delivered once, none sent twice."""

from __future__ import annotations

import uuid
from collections import Counter
from pathlib import Path

from pushstr.config import ApnsAppConfig
from pushstr.delivery.dispatcher import Dispatcher, Lane
from pushstr.delivery.render import Renderer
from pushstr.registry.model import Platform, Registration
from pushstr.transports.apns import ApnsTransport
from pushstr.transports.base import Notification
from pushstr.transports.jwt_cache import ProviderTokens
from tests.fakes import ApnsKey, apns_app
from tests.fakes.apns import FakeAPNs
from tests.transports.conftest import DeadHook, outcomes

PUSHES = 10_000
GOAWAY_EVERY = 1000
#: Pushes in flight at once; not a divisor of GOAWAY_EVERY, so a GOAWAY never falls between two rounds of them.
CONCURRENCY = 64


async def test_goaway_every_1000_requests_delivers_10000_pushes_without_duplicates(
    apns_key: ApnsKey, tmp_path: Path, dead_hook: DeadHook
) -> None:
    fake = FakeAPNs(
        apns_key.private.public_key(),
        apns_key.key_id,
        apns_key.team_id,
        tmp_path / "tls",
        goaway_every=GOAWAY_EVERY,
    )
    await fake.start()
    app_id = f"apns-goaway-{uuid.uuid4().hex[:8]}"
    app = apns_app(fake, apns_key, mode="alert", concurrency=CONCURRENCY, queue_size=2 * PUSHES)
    assert isinstance(app, ApnsAppConfig)
    transport = ApnsTransport(app_id, app, tokens=ProviderTokens())
    dispatcher = Dispatcher({app_id: Lane(transport, Renderer(app))}, dead_hook)
    await dispatcher.start()
    try:
        for n in range(PUSHES):
            # A device each, so that CONCURRENCY pushes are in flight when a GOAWAY comes.
            device = Registration("b" * 64, f"{n:064x}", Platform.IOS, app_id)
            note = Notification(
                event_id=f"{n:064x}", kind=1059, recipient="b" * 64, sender=None, created_at=1, app=app_id
            )
            assert dispatcher.submit(note, device)
        assert await dispatcher.idle(30)
    finally:
        await dispatcher.close()
        await fake.stop()
    event_ids = Counter(str(request.payload["event_id"]) for request in fake.requests)
    assert [event_id for event_id, seen in event_ids.items() if seen > 1] == []
    assert set(event_ids) == {f"{n:064x}" for n in range(PUSHES)}
    assert fake.count == PUSHES
    counts = outcomes(app_id, "apns")
    assert (counts["delivered"], counts["retry"]) == (PUSHES, 0)
    # Each connection took 1000 requests and sent GOAWAY; all but the last were replaced by a new connection.
    assert fake.counters.goaways >= PUSHES // GOAWAY_EVERY - 1
    assert fake.counters.connections in (fake.counters.goaways, fake.counters.goaways + 1)
    # The GOAWAYs came with pushes in flight (see CONCURRENCY): some were above the last stream id, dropped
    # unprocessed by the fake and sent again by the client, once, on the next connection.
    assert fake.counters.unprocessed > 0
