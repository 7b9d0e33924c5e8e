"""`pushstr serve | keygen | info`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from types import FrameType

import orjson

from pushstr import __version__
from pushstr.config import ConfigError, Settings, load_settings


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(Path(args.config) if args.config else None)


def _serve(args: argparse.Namespace) -> int:
    # Settings first: a configuration mistake is reported before anything heavy is imported or started.
    settings = _settings(args)
    import uvicorn

    class GracefulServer(uvicorn.Server):
        """Exit with status 0 after a graceful SIGTERM/SIGINT shutdown (uvicorn would re-raise the signal)."""

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            super().handle_exit(sig, frame)
            self._captured_signals.clear()

    from pushstr.api.app import create_app
    from pushstr.api.server import server_config
    from pushstr.app import Service

    config = server_config(create_app(Service(settings)), settings)
    asyncio.run(GracefulServer(config).serve())
    return 0


def _keygen(args: argparse.Namespace) -> int:
    from pushstr.nostr import nip19
    from pushstr.nostr.keys import Keys

    keys = Keys.generate()
    print(f"nsec: {nip19.nsec_encode(keys.secret_hex)}")
    print(f"npub: {nip19.npub_encode(keys.public_hex)}")
    print(f"hex pubkey: {keys.public_hex}")
    return 0


def _info(args: argparse.Namespace) -> int:
    from pushstr.identity import load_server_keys
    from pushstr.nostr import nip19

    settings = _settings(args)
    keys = load_server_keys(settings)
    info = {
        "version": __version__,
        "pubkey": keys.public_hex,
        "npub": nip19.npub_encode(keys.public_hex),
        "listen": f"{settings.server.host}:{settings.server.port}",
        "data_dir": str(settings.server.data_dir),
        "store": settings.store_url.split("://", 1)[0],
        "relays": settings.nostr.relays,
        "apps": {name: app.transport for name, app in settings.apps.items()},
        "platform_apps": settings.platform_apps,
    }
    sys.stdout.write(orjson.dumps(info, option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pushstr", description="Push-notification gateway for Nostr.")
    parser.add_argument("--version", action="version", version=f"pushstr {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, handler, text in (
        ("serve", _serve, "run the gateway"),
        ("info", _info, "show the server identity and the effective configuration"),
    ):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("--config", help="TOML file (default: ./pushstr.toml when present)")
        sub.set_defaults(handler=handler)
    keygen = commands.add_parser("keygen", help="print a new Nostr key pair")
    keygen.set_defaults(handler=_keygen)
    return parser


QUIET_LOGGERS = ("aiosqlite", "sqlalchemy.engine", "asyncpg")
"""Third-party loggers kept at INFO whatever the root level, since their DEBUG lines carry stored identities."""


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for chatty in QUIET_LOGGERS:  # at DEBUG these print SQL parameters: device tokens, Web Push keys
        logging.getLogger(chatty).setLevel(logging.INFO)
    args = build_parser().parse_args(argv)
    try:
        code: int = args.handler(args)
    except ConfigError as exc:
        print(f"pushstr: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
