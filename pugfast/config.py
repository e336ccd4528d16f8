"""The relay's settings: every flag of ``pugfast serve``, its variables, default and range.

A value comes from the flag, else ``PUGFAST_<FLAG>``, else (for the settings the reference
build knew) its bare variable, else the default. A bad value is refused with a message that
names where it came from and what is accepted.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
from collections.abc import Callable, Mapping
from typing import Any

from .errors import ConfigError

DAY = 86400


@dataclasses.dataclass(frozen=True)
class Option:
    """One setting: its flag, how to read it, and what it accepts."""

    name: str  # the flag without dashes, e.g. "ttl-min"
    default: Any
    help: str
    kind: str = "int"  # int, float, str, bool, choice, origin, hostport, path
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()
    bare_env: tuple[str, ...] = ()

    @property
    def dest(self) -> str:
        return self.name.replace("-", "_")

    @property
    def env(self) -> str:
        return "PUGFAST_" + self.name.upper().replace("-", "_")


OPTIONS: tuple[Option, ...] = (
    Option("port", 3000, "TCP port to listen on (0 picks a free one)", low=0, high=65535,
           bare_env=("PORT",)),
    Option("tls-cert", None, "PEM certificate chain; serve HTTPS/WSS (needs --tls-key)",
           kind="path", bare_env=("TLS_CERT",)),
    Option("tls-key", None, "PEM private key for --tls-cert", kind="path", bare_env=("TLS_KEY",)),
    Option("allowed-origin", None,
           "the only Origin accepted on WebSocket upgrades, e.g. https://chat.example.org "
           "(default: the request's own scheme and host)", kind="origin",
           bare_env=("ALLOWED_ORIGIN",)),
    Option("production", False, "warn on stderr when TLS is not configured", kind="bool"),
    Option("host", "0.0.0.0", "address to bind", kind="str"),
    Option("pow-difficulty", 18,
           "leading zero bits a room-creation proof of work needs (0 accepts any nonce: "
           "tests and benchmarks only)", low=0, high=32),
    Option("ttl-min", 60, "shortest room lifetime a creator may ask for, seconds", low=1, high=DAY * 7),
    Option("ttl-max", DAY, "longest room lifetime, seconds", low=1, high=DAY * 7),
    Option("ttl-default", 3600, "room lifetime when the creator asks for none, seconds",
           low=1, high=DAY * 7),
    Option("capacity-min", 2, "smallest room capacity a creator may ask for", low=1, high=10000),
    Option("capacity-max", 64, "largest room capacity", low=1, high=10000),
    Option("capacity-default", 8, "room capacity when the creator asks for none",
           low=1, high=10000),
    Option("join-window", 300, "seconds a new room waits for its first member", low=1, high=DAY),
    Option("max-message-bytes", 65536, "largest message a member may send, bytes",
           low=1, high=16 * 1024 * 1024),
    Option("rate-limit", 30.0, "messages per second per connection (0 turns the limit off)",
           kind="float", low=0, high=1_000_000),
    Option("rate-burst", 60, "messages a connection may send at once before the rate applies",
           low=1, high=1_000_000),
    Option("max-buffered-bytes", 1048576,
           "unsent bytes a member may hold before it is closed as a slow consumer",
           low=1024, high=1 << 30),
    Option("max-rooms", 100000, "rooms that may exist at once", low=1, high=10_000_000),
    Option("max-connections", 100000, "WebSocket connections that may be open at once",
           low=1, high=10_000_000),
    Option("max-pending-connections", 1024,
           "connections that have not become WebSockets; past it the one that has waited "
           "longest for its request head is closed to make room", low=1, high=10_000_000),
    Option("max-connections-per-address", 0,
           "connections one client address may hold at once (0 turns the cap off; for a relay "
           "that faces clients directly, not behind a proxy; never logged)",
           low=0, high=1_000_000),
    Option("join-timeout", 10.0, "seconds a new connection has to send its join", kind="float",
           low=0.05, high=3600),
    Option("ping-interval", 20.0, "seconds of silence before the relay pings a connection",
           kind="float", low=0.05, high=3600),
    Option("idle-timeout", 60.0, "seconds of silence before the relay closes a connection",
           kind="float", low=0.1, high=DAY),
    Option("request-timeout", 10.0,
           "seconds a connection has, from its start or the end of its previous response, to "
           "send a whole request, head and body",
           kind="float", low=0.05, high=3600),
    Option("keepalive-timeout", 5.0,
           "seconds an idle keep-alive connection may wait between requests", kind="float",
           low=0.05, high=3600),
    Option("log-level", "info", "how much to log (nothing about rooms, people or payloads "
           "is logged at any level)", kind="choice", choices=("debug", "info", "warning", "error")),
    Option("event-loop", "uvloop", "event loop implementation", kind="choice",
           choices=("uvloop", "asyncio")),
    Option("workers", 1, "worker processes sharing the port, each owning its own rooms; "
           "'auto' starts one per core (plain HTTP only: terminate TLS in front)",
           kind="workers", low=1, high=64),
    Option("node", None, "this relay's letter when several relays share one router: every "
           "room id made here starts with it (one of A-Z a-z 0-9 - _; see docs/scaling.md)",
           kind="node"),
    Option("metrics-listen", None,
           "serve Prometheus metrics (aggregates only) at http://HOST:PORT/metrics, e.g. "
           "127.0.0.1:9300 (default: off)", kind="hostport"),
)

_HOSTPORT = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):([0-9]{1,5})")
_ORIGIN = re.compile(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?|https?://\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?")


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything ``pugfast serve`` was configured with. Build it with ``load_settings``."""

    port: int = 3000
    tls_cert: str | None = None
    tls_key: str | None = None
    allowed_origin: str | None = None
    production: bool = False
    host: str = "0.0.0.0"
    pow_difficulty: int = 18
    ttl_min: int = 60
    ttl_max: int = DAY
    ttl_default: int = 3600
    capacity_min: int = 2
    capacity_max: int = 64
    capacity_default: int = 8
    join_window: int = 300
    max_message_bytes: int = 65536
    rate_limit: float = 30.0
    rate_burst: int = 60
    max_buffered_bytes: int = 1048576
    max_rooms: int = 100000
    max_connections: int = 100000
    max_pending_connections: int = 1024
    max_connections_per_address: int = 0
    join_timeout: float = 10.0
    ping_interval: float = 20.0
    idle_timeout: float = 60.0
    request_timeout: float = 10.0
    keepalive_timeout: float = 5.0
    log_level: str = "info"
    event_loop: str = "uvloop"
    workers: int = 1
    node: str | None = None
    metrics_listen: str | None = None

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    @property
    def eviction_grace(self) -> float:
        """Past --max-pending-connections, how long a connection has to send its request
        before it may be closed to make room: a burst of new clients is not cut off before
        it had the chance to speak (docs/operations.md, "Abuse")."""
        return min(1.0, self.request_timeout / 4)

    @property
    def metrics_address(self) -> tuple[str, int] | None:
        """``--metrics-listen`` as (host, port), or None when metrics are off."""
        if self.metrics_listen is None:
            return None
        host, _, port = self.metrics_listen.rpartition(":")
        return host.strip("[]"), int(port)


def _usable_cores() -> int:
    """Cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _describe(option: Option) -> str:
    if option.kind in ("int", "float"):
        number = "a whole number" if option.kind == "int" else "a number"
        low = int(option.low) if option.low is not None and option.low == int(option.low) else option.low
        high = int(option.high) if option.high is not None else option.high
        return f"{number} from {low} to {high}"
    if option.kind == "choice":
        return "one of " + ", ".join(option.choices)
    if option.kind == "bool":
        return "1/true/yes/on or 0/false/no/off"
    if option.kind == "origin":
        return "an origin such as https://chat.example.org (scheme, host and optional port)"
    if option.kind == "workers":
        return f"'auto' or a whole number from {option.low:g} to {option.high:g}"
    if option.kind == "node":
        return "one character of A-Z, a-z, 0-9, - or _"
    if option.kind == "hostport":
        return "HOST:PORT, such as 127.0.0.1:9300 or [::1]:9300, with a port from 0 to 65535"
    return "a value"


def _convert(option: Option, raw: str) -> Any:
    kind = option.kind
    text = raw.strip()
    if kind == "workers":
        if text.lower() == "auto":
            return max(1, min(_usable_cores(), int(option.high or 1)))
        kind = "int"
    if kind == "node":
        if len(text) != 1 or not re.fullmatch(r"[A-Za-z0-9_-]", text):
            raise ValueError
        return text
    if kind in ("int", "float"):
        try:
            value: Any = int(text) if kind == "int" else float(text)
        except ValueError:
            raise ValueError from None
        if value != value or not option.low <= value <= option.high:  # NaN, or out of range
            raise ValueError
        return value
    if kind == "bool":
        lowered = text.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off", ""):
            return False
        raise ValueError
    if kind == "choice":
        if text.lower() not in option.choices:
            raise ValueError
        return text.lower()
    if kind == "origin":
        if not _ORIGIN.fullmatch(text):
            raise ValueError
        return text.lower().rstrip("/")
    if kind == "hostport":
        match = _HOSTPORT.fullmatch(text)
        if not match or int(match.group(2)) > 65535:
            raise ValueError
        return text
    if not text:
        raise ValueError
    return text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one flag per setting to ``parser``; values stay raw strings until ``load_settings``."""
    for option in OPTIONS:
        variables = ", ".join((option.env, *option.bare_env))
        default = "none" if option.default is None else option.default
        if option.kind == "bool":
            default = "off"
        help_text = f"{option.help} [default: {default}; env: {variables}]"
        flag = f"--{option.name}"
        if option.kind == "bool":
            parser.add_argument(flag, dest=option.dest, action="store_const", const="1",
                                default=None, help=help_text)
        else:
            metavar = (option.choices and "{" + ",".join(option.choices) + "}") or option.dest.upper()
            parser.add_argument(flag, dest=option.dest, default=None, metavar=metavar,
                                help=help_text)


def load_settings(
    args: argparse.Namespace | Mapping[str, Any],
    environ: Mapping[str, str] | None = None,
    *,
    path_exists: Callable[[str], bool] = os.path.isfile,
) -> Settings:
    """Resolve every setting from flags, then variables, then defaults, and check it.

    Raises ConfigError naming the flag (or variable), the value and the accepted range.
    """
    values = vars(args) if isinstance(args, argparse.Namespace) else dict(args)
    environ = os.environ if environ is None else environ
    resolved: dict[str, Any] = {}
    for option in OPTIONS:
        raw = values.get(option.dest)
        source = f"--{option.name}"
        if raw is None:
            for variable in (option.env, *option.bare_env):
                if variable in environ:
                    raw, source = environ[variable], variable
                    break
        if raw is None:
            resolved[option.dest] = option.default
            continue
        try:
            resolved[option.dest] = _convert(option, str(raw))
        except ValueError:
            raise ConfigError(
                f"{source} must be {_describe(option)} (got {str(raw)!r})"
            ) from None
    settings = Settings(**resolved)
    _check_consistency(settings, path_exists)
    return settings


def _check_consistency(s: Settings, path_exists: Callable[[str], bool]) -> None:
    for kind in ("ttl", "capacity"):
        low, high, default = (getattr(s, f"{kind}_{end}") for end in ("min", "max", "default"))
        if low > high:
            raise ConfigError(f"--{kind}-min ({low}) must not exceed --{kind}-max ({high})")
        if not low <= default <= high:
            raise ConfigError(
                f"--{kind}-default must be from --{kind}-min to --{kind}-max, "
                f"that is from {low} to {high} (got {default})"
            )
    if s.idle_timeout <= s.ping_interval:
        raise ConfigError(
            f"--idle-timeout ({s.idle_timeout:g} s) must be longer than --ping-interval "
            f"({s.ping_interval:g} s), or live but quiet members would be dropped unpinged"
        )
    if s.workers > 1 and s.tls_cert is not None:
        raise ConfigError(
            "--workers above 1 needs plain HTTP: the acceptor reads each request's path to "
            "find the worker that owns its room, which it cannot do inside TLS. Terminate TLS "
            "in a proxy in front (deploy/nginx.conf, deploy/Caddyfile) or use --workers 1"
        )
    if (s.tls_cert is None) != (s.tls_key is None):
        raise ConfigError("--tls-cert and --tls-key go together: give both or neither")
    for flag, path in (("--tls-cert", s.tls_cert), ("--tls-key", s.tls_key)):
        if path is not None and not path_exists(path):
            raise ConfigError(f"{flag} must name a readable PEM file (got {path!r})")

