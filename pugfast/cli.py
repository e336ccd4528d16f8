"""The command line: ``pugfast serve``, ``pugfast bench``, ``pugfast chat`` and ``--version``
(also ``python -m pugfast``)."""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import sys
from collections.abc import Sequence

from . import __version__
from .config import Settings, add_arguments, load_settings
from .errors import ConfigError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pugfast",
        description="A relay for end-to-end encrypted, ephemeral, account-less chat rooms.",
    )
    parser.add_argument("--version", action="version", version=f"pugfast {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        help="run the relay",
        description="Run the relay. Every flag also reads PUGFAST_<FLAG> from the environment; "
        "a flag given on the command line wins.",
    )
    serve.add_argument("--version", action="version", version=f"pugfast {__version__}")
    add_arguments(serve)
    bench = commands.add_parser(
        "bench",
        help="load-test a pugfast relay",
        description="Load-test any pugfast relay: create rooms, join members, relay timestamped "
        "messages, and report throughput, latency and errors.",
    )
    from .bench import add_arguments as add_bench_arguments

    add_bench_arguments(bench)
    chat = commands.add_parser(
        "chat",
        help="chat in a room from a terminal or a script",
        description="Join a room by its link (or create one with --create) and chat, end-to-end "
        "encrypted as in the browser. On a terminal: a line-based chat; otherwise each line of "
        "standard input is a message and each received message a line of standard output. "
        "Needs the client extra: pip install 'pugfast[client]'.",
    )
    from .client.chat import add_arguments as add_chat_arguments

    add_chat_arguments(chat)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "bench":
        from .bench import main as bench_main

        return bench_main(args)
    if args.command == "chat":
        from .client.chat import main as chat_main

        return chat_main(args)
    if args.command != "serve":
        parser.print_help()
        return 2
    try:
        settings = load_settings(args)
    except ConfigError as exc:
        print(f"pugfast serve: error: {exc}", file=sys.stderr)
        return 2
    return serve(settings)


def serve(settings: Settings) -> int:
    """Run the relay until SIGTERM, SIGINT or SIGHUP; every member is then closed with 1001."""
    from .memory import return_large_buffers
    from .privacy import configure_logging, disable_core_dumps
    from .server import STOP_SIGNALS, Relay, run_on_event_loop
    from .workers.supervisor import Supervisor

    disable_core_dumps()
    return_large_buffers()
    # Nothing is written to disk after start-up, and that includes bytecode caches.
    sys.dont_write_bytecode = True
    configure_logging(settings.log_level)
    behind_tls_proxy = (settings.allowed_origin or "").startswith("https://")
    if settings.production and not settings.tls and not behind_tls_proxy:
        print(
            "pugfast serve: warning: --production without TLS: browsers will refuse Web Crypto "
            "on a non-localhost http:// origin and traffic is visible on the network; give "
            "--tls-cert and --tls-key, or terminate TLS in front of the relay and set "
            "--allowed-origin https://...",
            file=sys.stderr,
        )

    async def run() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for signum in STOP_SIGNALS:
            loop.add_signal_handler(signum, stop.set)
        relay: Relay | Supervisor = (
            Supervisor(settings, on_failure=stop.set) if settings.workers > 1
            else Relay(settings, freeze_survivors=True)
        )
        try:
            await relay.start()
        except OSError as exc:
            print(
                f"pugfast serve: error: cannot listen on {settings.host}:{settings.port} "
                f"({exc.strerror}); is another server using that port? Choose one with --port.",
                file=sys.stderr,
            )
            raise SystemExit(1) from None
        except RuntimeError as exc:
            print(f"pugfast serve: error: {exc}", file=sys.stderr)
            raise SystemExit(1) from None
        await stop.wait()
        await relay.stop()
        if isinstance(relay, Supervisor) and relay.failed:
            raise SystemExit(1)

    if settings.event_loop == "uvloop" and importlib.util.find_spec("uvloop") is None:
        print("pugfast serve: error: uvloop is not installed; use --event-loop asyncio",
              file=sys.stderr)
        return 2
    run_on_event_loop(settings.event_loop, run)
    return 0
