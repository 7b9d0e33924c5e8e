"""Local fakes of the push services, and pytest fixtures that start them on 127.0.0.1.

Use from a conftest: `from tests.fakes import apns_key, fake_apns  # noqa: F401` makes the fixtures available.
`fake_apns` is a started `FakeAPNs` checking tokens signed by `apns_key`; `apns_app(fake_apns, apns_key)` gives
the matching `[apps.<id>]` settings.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from pushstr.config import AppConfig, parse_app
from tests.fakes.apns import FakeAPNs

APNS_KEY_ID = "ABC123DEFG"
APNS_TEAM_ID = "DEF123GHIJ"
APNS_TOPIC = "org.example.pushstr"


@dataclass(frozen=True)
class ApnsKey:
    """An APNs-style signing key written as a `.p8` file, with its ids."""

    private: ec.EllipticCurvePrivateKey
    key_file: Path
    key_id: str = APNS_KEY_ID
    team_id: str = APNS_TEAM_ID


def make_apns_key(directory: Path, key_id: str = APNS_KEY_ID, team_id: str = APNS_TEAM_ID) -> ApnsKey:
    private = ec.generate_private_key(ec.SECP256R1())
    key_file = directory / f"AuthKey_{key_id}.p8"
    key_file.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return ApnsKey(private, key_file, key_id, team_id)


def apns_app(fake: FakeAPNs, key: ApnsKey, **overrides: object) -> AppConfig:
    """App settings pointing the apns transport at `fake`."""
    values: dict[str, object] = {
        "transport": "apns",
        "base_url": fake.url,
        "ca_file": fake.ca_file,
        "key_file": key.key_file,
        "key_id": key.key_id,
        "team_id": key.team_id,
        "topic": APNS_TOPIC,
        "environment": "sandbox",
    }
    values.update(overrides)
    return parse_app(values)


@pytest.fixture
def apns_key(tmp_path: Path) -> ApnsKey:
    return make_apns_key(tmp_path)


@pytest.fixture
async def fake_apns(apns_key: ApnsKey, tmp_path: Path) -> AsyncIterator[FakeAPNs]:
    fake = FakeAPNs(apns_key.private.public_key(), apns_key.key_id, apns_key.team_id, tmp_path / "apns-tls")
    await fake.start()
    yield fake
    await fake.stop()
