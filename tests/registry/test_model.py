"""The registration model: the loader's fast constructor builds exactly what the dataclass would."""

from __future__ import annotations

import copy
import dataclasses
import pickle

import pytest

from pushstr.registry.model import NO_EXTRA, Platform, Registration, stored_registration


def test_stored_registration_equals_the_dataclass_built_one() -> None:
    values = ("a" * 64, "token", Platform.WEBPUSH, "web", "http", frozenset({4}), 5.5, "alert", "p", "s", "d" * 64)
    fast = stored_registration(*values, {"groups": "x"})
    slow = Registration(*values, extra={"groups": "x"})
    assert type(fast) is Registration
    assert dataclasses.astuple(fast) == dataclasses.astuple(slow)
    assert fast == slow and hash(fast) == hash(slow) and repr(fast) == repr(slow)
    assert fast.persistent is True and fast.expires_at is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.app = "other"  # type: ignore[misc]
    assert dataclasses.replace(fast, app="other").app == "other"
    assert pickle.loads(pickle.dumps(fast)) == fast


def test_every_field_is_set_by_the_fast_constructor() -> None:
    fast = stored_registration("p", "t", Platform.IOS, "a", "http", frozenset(), 0.0, None, None, None, None, NO_EXTRA)
    assert {field.name for field in dataclasses.fields(Registration)} == set(Registration.__slots__)
    for field in dataclasses.fields(Registration):
        getattr(fast, field.name)  # an unset slot would raise AttributeError


def test_the_shared_empty_extra_is_read_only() -> None:
    reg = stored_registration("p", "t", Platform.IOS, "a", "http", frozenset(), 0.0, None, None, None, None, NO_EXTRA)
    assert reg.extra == {} and not reg.extra and dict(reg.extra) == {}
    for change in (
        lambda: reg.extra.__setitem__("k", "v"),
        lambda: reg.extra.update(k="v"),
        lambda: reg.extra.setdefault("k", "v"),
        lambda: reg.extra.pop("k"),
        reg.extra.clear,
    ):
        with pytest.raises(TypeError):
            change()
    assert NO_EXTRA == {}
    for copied in (reg.extra.copy(), dict(reg.extra), copy.copy(reg.extra), copy.deepcopy(reg.extra)):
        copied["k"] = "v"  # copies are ordinary dicts
    assert reg.extra == {}
