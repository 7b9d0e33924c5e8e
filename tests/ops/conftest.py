"""The fakes of tests/fakes, with one difference: each test's APNs key has its own key id.

Provider tokens are cached per (team id, key id) for the whole process (`transports.jwt_cache.SHARED`), as
Apple asks; the commands under test run in this process, so a second test signing with a new key under the same
key id would be handed the first test's token.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from tests.fakes import ApnsKey, fake_apns, make_apns_key
from tests.ops.support import fake_fcm

__all__ = ["apns_key", "fake_apns", "fake_fcm"]


@pytest.fixture
def apns_key(tmp_path: Path) -> ApnsKey:
    return make_apns_key(tmp_path, key_id=secrets.token_hex(5).upper())
