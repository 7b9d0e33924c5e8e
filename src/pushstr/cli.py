"""`pushstr serve | keygen | info | doctor | send-test | demo`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import orjson

from pushstr import __version__
from pushstr.config import ConfigError, Settings, load_settings
from pushstr.registry.model import Mode


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(Path(args.config) if args.config else None)


def _serve(args: argparse.Namespace) -> int:
    # Settings first: a configuration mistake is reported before anything heavy is imported or started.
    settings = _settings(args)
    if args.listen_fd is None and settings.workers > 1:
        from pushstr.supervisor import Supervisor

        return Supervisor(settings, ["--config", args.config] if args.config else []).run()
    import socket

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
    if args.listen_fd is None:
        asyncio.run(GracefulServer(config).serve())
        return 0
    # A worker of `pushstr.supervisor`: it accepts on the socket the supervisor bound, and shows its own metrics.
    if settings.server.metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(settings.server.metrics_port + args.worker_index, settings.server.host)
    listening = socket.socket(fileno=args.listen_fd)
    asyncio.run(GracefulServer(config).serve(sockets=[listening]))
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


@contextlib.contextmanager
def _tool_logging() -> Iterator[None]:
    """Warnings only while an operator tool runs: it prints its own lines, and the gateway's INFO lines (SQL
    statements among them, which SQLAlchemy logs whenever its logger is at INFO) would bury them."""
    loggers = [logging.getLogger(), *(logging.getLogger(name) for name in QUIET_LOGGERS)]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _doctor(args: argparse.Namespace) -> int:
    from pushstr.ops.doctor import run_doctor

    with _tool_logging():
        return asyncio.run(run_doctor(Path(args.config) if args.config else None, args.timeout, sys.stdout))


def _send_test(args: argparse.Namespace) -> int:
    settings = _settings(args)
    from pushstr.ops.send_test import run_send_test

    with _tool_logging():
        return asyncio.run(
            run_send_test(
                settings,
                sys.stdout,
                app_id=args.app,
                token=args.token,
                platform=args.platform,
                npub=args.npub,
                mode=Mode(args.mode) if args.mode else None,
            )
        )


def _demo(args: argparse.Namespace) -> int:
    from pushstr.ops.demo import run_demo

    with _tool_logging():
        return asyncio.run(run_demo(sys.stdout))


def _cluster_status(args: argparse.Namespace) -> int:
    settings = _settings(args)
    from pushstr.ops.cluster_status import run_cluster_status

    with _tool_logging():
        return asyncio.run(run_cluster_status(settings, sys.stdout))


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0: {text!r}")
    return value


def _add_ops_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    doctor = commands.add_parser(
        "doctor",
        help="check the configuration, keys, store, push credentials and relays (exit 0 ok, 1 broken, 2 config)",
    )
    doctor.add_argument("--config", help="TOML file (default: ./pushstr.toml when present)")
    doctor.add_argument(
        "--timeout", type=_positive_seconds, default=5.0, help="seconds each network check may take (default 5)"
    )
    doctor.set_defaults(handler=_doctor)
    send_test = commands.add_parser(
        "send-test", help="push one test notification and print the provider's answer (exit 0 when delivered)"
    )
    send_test.add_argument("--config", help="TOML file (default: ./pushstr.toml when present)")
    target = send_test.add_mutually_exclusive_group(required=True)
    target.add_argument("--npub", help="every stored device of this user (npub or hex)")
    target.add_argument("--token", help="a device token or push endpoint (with --app)")
    send_test.add_argument("--app", help="the app the token belongs to (with --token)")
    send_test.add_argument("--platform", help="the token's platform (default: by the app's transport)")
    send_test.add_argument(
        "--mode", choices=[str(mode) for mode in Mode], help="payload mode (default: the device's, else the app's)"
    )
    send_test.set_defaults(handler=_send_test)
    demo = commands.add_parser("demo", help="run pushstr in-process and show a DM become a push (no network)")
    demo.set_defaults(handler=_demo)
    cluster = commands.add_parser("cluster", help="several instances on one PostgreSQL database")
    cluster_commands = cluster.add_subparsers(dest="cluster_command", required=True)
    status = cluster_commands.add_parser(
        "status", help="instances, their shards, lease ages and pending pushes (exit 0 whole, 1 shards unheld)"
    )
    status.add_argument("--config", help="TOML file (default: ./pushstr.toml when present)")
    status.set_defaults(handler=_cluster_status)


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
        if name == "serve":  # how the supervisor starts its workers (`server.workers`), not for people
            sub.add_argument("--listen-fd", type=int, default=None, help=argparse.SUPPRESS)
            sub.add_argument("--worker-index", type=int, default=0, help=argparse.SUPPRESS)
    keygen = commands.add_parser("keygen", help="print a new Nostr key pair")
    keygen.set_defaults(handler=_keygen)
    _add_ops_commands(commands)
    return parser


QUIET_LOGGERS = ("aiosqlite", "sqlalchemy.engine", "asyncpg")
"""Third-party loggers kept at WARNING whatever the root level: at INFO SQLAlchemy logs every statement with its
parameters (pubkeys, sealed tokens), at DEBUG aiosqlite and asyncpg do too."""


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for chatty in QUIET_LOGGERS:
        logging.getLogger(chatty).setLevel(logging.WARNING)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "send-test" and (args.token is None) != (args.app is None):
        parser.error("send-test: --token and --app go together")
    try:
        code: int = args.handler(args)
    except ConfigError as exc:
        print(f"pushstr: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
