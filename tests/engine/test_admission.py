from __future__ import annotations

import time

import pytest

from pushstr.engine.admission import REJECTED, Admission, AdmissionLimits, Rejected
from pushstr.engine.dedupe import SeenIds
from pushstr.nostr.event import sign_event
from pushstr.nostr.keys import Keys

KEYS = Keys.generate()


def _admission() -> Admission:
    return Admission(AdmissionLimits(max_event_bytes=4096, max_age_seconds=3600), SeenIds(1000))


def _rejected_count(code: str) -> float:
    return REJECTED.value(code)


def test_valid_event_is_admitted_once_then_duplicate() -> None:
    admission = _admission()
    event = sign_event(KEYS, 1, "hello", [["p", "ab" * 32]])
    assert admission.admit(event.to_dict()).id == event.id
    before = _rejected_count("duplicate")
    with pytest.raises(Rejected) as caught:
        admission.admit(event.to_dict())
    assert caught.value.message.startswith("duplicate:")
    assert _rejected_count("duplicate") == before + 1


@pytest.mark.parametrize(
    ("mutate", "code"),
    [
        (lambda d: d.update(content="tampered"), "bad_id"),
        (lambda d: d.update(sig="00" * 64), "bad_signature"),
        (lambda d: d.pop("sig"), "malformed"),
        (lambda d: d.update(kind=70000), "malformed"),
        (lambda d: d.update(content="x" * 5000), "too_large"),
    ],
)
def test_rejections_are_counted_with_nip01_prefix(mutate, code: str) -> None:  # type: ignore[no-untyped-def]
    admission = _admission()
    obj = sign_event(KEYS, 1, "hello").to_dict()
    mutate(obj)
    before = _rejected_count(code)
    with pytest.raises(Rejected) as caught:
        admission.admit(obj)
    assert caught.value.code == code
    assert caught.value.message.startswith("invalid: ")
    assert _rejected_count(code) == before + 1


def test_a_forged_copy_does_not_poison_dedupe() -> None:
    admission = _admission()
    event = sign_event(KEYS, 1, "real")
    forged = event.to_dict() | {"sig": "11" * 64}
    with pytest.raises(Rejected):
        admission.admit(forged)
    assert admission.admit(event.to_dict()).id == event.id


def test_age_window() -> None:
    admission = _admission()
    now = time.time()
    old = sign_event(KEYS, 1, "old", created_at=int(now) - 7200)
    future = sign_event(KEYS, 1, "future", created_at=int(now) + 3600)
    with pytest.raises(Rejected, match="older"):
        admission.admit(old.to_dict(), now=now)
    with pytest.raises(Rejected, match="future"):
        admission.admit(future.to_dict(), now=now)


def test_garbage_objects_are_malformed_not_crashes() -> None:
    admission = _admission()
    for garbage in (None, 1, "x", [], {"id": 1}, {"tags": [[1]]}):
        with pytest.raises(Rejected) as caught:
            admission.admit(garbage)
        assert caught.value.code == "malformed"


def test_seen_ids_are_bounded() -> None:
    seen = SeenIds(3)
    for value in "abcd":
        assert seen.add(value)
    assert "a" not in seen
    assert len(seen) == 3
    assert not seen.add("d")


def test_a_malformed_copy_of_a_seen_id_is_a_duplicate_without_parsing() -> None:
    admission = _admission()
    event = sign_event(KEYS, 1, "hello")
    admission.admit(event.to_dict())
    broken = {**event.to_dict(), "kind": "not a kind", "sig": "zz"}
    with pytest.raises(Rejected) as caught:
        admission.admit(broken)
    assert caught.value.code == "duplicate"


def test_unhashable_id_is_malformed_not_a_crash() -> None:
    with pytest.raises(Rejected) as caught:
        _admission().admit({**sign_event(KEYS, 1, "x").to_dict(), "id": ["not", "hashable"]})
    assert caught.value.code == "malformed"


def test_size_checked_callers_skip_the_approximate_size() -> None:
    """Relay connections bound the raw frame already; the endpoint's callers do not and get the check."""
    event = sign_event(KEYS, 1, "x" * 5000).to_dict()
    with pytest.raises(Rejected) as caught:
        _admission().admit(event)
    assert caught.value.code == "too_large"
    assert _admission().admit(event, size_checked=True).id == event["id"]


def test_screen_checks_shape_and_age_but_neither_id_nor_signature_and_records_nothing() -> None:
    admission = _admission()
    real = sign_event(KEYS, 1, "real")
    forged = real.to_dict() | {"sig": "11" * 64}
    screened = admission.screen(forged)
    assert screened.id == real.id and real.id not in admission.seen
    with pytest.raises(Rejected) as caught:
        admission.screen(forged | {"kind": -1})
    assert caught.value.code == "malformed"
    before = _rejected_count("bad_signature")
    with pytest.raises(Rejected) as caught:
        admission.verify(screened)
    assert caught.value.code == "bad_signature" and _rejected_count("bad_signature") == before + 1
    assert real.id not in admission.seen


def test_verify_records_the_id_so_the_next_copy_is_a_duplicate_unparsed() -> None:
    admission = _admission()
    event = sign_event(KEYS, 1, "hello")
    admission.verify(admission.screen(event.to_dict()))
    assert event.id in admission.seen
    with pytest.raises(Rejected) as caught:
        admission.screen({"id": event.id, "garbage": True})
    assert caught.value.code == "duplicate"


@pytest.mark.parametrize(("field", "code"), [("id", "bad_id"), ("sig", "bad_signature")])
def test_upper_case_id_or_sig_passes_screen_and_is_refused_by_verify(field: str, code: str) -> None:
    """Screening checks only the type and length of id and sig (an event that reaches nobody never pays for more);
    verify refuses anything but lowercase hex, even an upper-case copy of a valid signature."""
    admission = _admission()
    obj = sign_event(KEYS, 1, "hello").to_dict()
    obj[field] = obj[field].upper()
    screened = admission.screen(obj)
    before = _rejected_count(code)
    with pytest.raises(Rejected) as caught:
        admission.verify(screened)
    assert caught.value.code == code and _rejected_count(code) == before + 1
    assert obj["id"] not in admission.seen
