from pushstr.nostr.event import sign_event
from pushstr.nostr.keys import Keys


def test_signed_event_is_valid() -> None:
    event = sign_event(Keys.generate(), 1, "hello")
    assert event.is_valid()
