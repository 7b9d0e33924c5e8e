"""The registration model: the loader's fast constructor builds exactly what the dataclass would."""

from __future__ import annotations

import dataclasses
import pickle

import pytest

from pushstr.registry.model import NO_AUTHORS, Mode, Platform, Registration, stored_registration


def test_stored_registration_equals_the_dataclass_built_one() -> None:
    values = ("a" * 64, "token", Platform.WEBPUSH, "web", "http", frozenset({4}), 5.5, Mode.ALERT, "p", "s", "d" * 64)
    lists = {"groups": ("g" * 64,), "authors": frozenset({"b" * 64}), "relays": ("wss://r",)}
    fast = stored_registration(*values, **lists)
    slow = Registration(*values, **lists)
    assert type(fast) is Registration
    assert dataclasses.astuple(fast) == dataclasses.astuple(slow)
    assert fast == slow and hash(fast) == hash(slow) and repr(fast) == repr(slow)
    assert fast.persistent is True and fast.expires_at is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.app = "other"  # type: ignore[misc]
    assert dataclasses.replace(fast, app="other").app == "other"
    assert pickle.loads(pickle.dumps(fast)) == fast


def test_every_field_is_set_by_the_fast_constructor() -> None:
    fast = stored_registration(
        "p", "t", Platform.IOS, "a", "http", frozenset(), 0.0, None, None, None, None, (), NO_AUTHORS, ()
    )
    assert {field.name for field in dataclasses.fields(Registration)} == set(Registration.__slots__)
    for field in dataclasses.fields(Registration):
        getattr(fast, field.name)  # an unset slot would raise AttributeError


def test_registrations_without_lists_share_the_empty_defaults() -> None:
    """A million registrations must not carry a million empty containers, however they were built."""
    slow = Registration("p", "t", Platform.IOS, "a")
    fast = stored_registration(
        "p", "t", Platform.IOS, "a", slow.dialect, slow.kinds, 0.0, None, None, None, None, (), NO_AUTHORS, ()
    )
    assert fast == slow
    for reg in (fast, slow, Registration("q", "u", Platform.ANDROID, "b")):
        assert reg.authors is NO_AUTHORS and not reg.authors
        assert reg.groups == () == reg.relays


def test_the_lists_are_part_of_equality() -> None:
    base = Registration("p", "t", Platform.IOS, "a")
    for change in ({"groups": ("g",)}, {"authors": frozenset({"x"})}, {"relays": ("wss://r",)}):
        changed = dataclasses.replace(base, **change)
        assert changed != base and changed == dataclasses.replace(base, **change)
        assert hash(changed) == hash(dataclasses.replace(base, **change))
