"""Settings: every flag of README.md's table, its variables, defaults and refusals."""

from __future__ import annotations

import pytest

from pugfast.config import OPTIONS, Settings, load_settings
from pugfast.errors import ConfigError

SPEC_DEFAULTS = {
    "port": 3000, "tls_cert": None, "tls_key": None, "allowed_origin": None, "production": False,
    "host": "0.0.0.0", "pow_difficulty": 18, "ttl_min": 60, "ttl_max": 86400, "ttl_default": 3600,
    "capacity_min": 2, "capacity_max": 64, "capacity_default": 8, "join_window": 300,
    "max_message_bytes": 65536, "rate_limit": 30, "rate_burst": 60,
    "max_buffered_bytes": 1048576, "max_rooms": 100000, "max_connections": 100000,
    "join_timeout": 10, "ping_interval": 20, "idle_timeout": 60, "log_level": "info",
    "request_timeout": 10, "keepalive_timeout": 5, "max_pending_connections": 1024,
    "max_connections_per_address": 0,
}


def test_defaults_are_the_spec_table() -> None:
    settings = load_settings({}, {})
    for name, value in SPEC_DEFAULTS.items():
        assert getattr(settings, name) == value, name
    assert settings == Settings()


def test_flag_beats_prefixed_variable_beats_bare_variable() -> None:
    env = {"PUGFAST_PORT": "4001", "PORT": "4002"}
    assert load_settings({}, env).port == 4001
    assert load_settings({}, {"PORT": "4002"}).port == 4002
    assert load_settings({"port": "4003"}, env).port == 4003


# One value per setting that differs from its default and keeps the others consistent.
ENV_SAMPLES = {
    "port": ("4000", 4000), "tls-cert": ("/etc/hostname", "/etc/hostname"),
    "tls-key": ("/etc/hostname", "/etc/hostname"),
    "allowed-origin": ("https://Chat.Example.org:8443", "https://chat.example.org:8443"),
    "production": ("yes", True), "host": ("127.0.0.1", "127.0.0.1"), "pow-difficulty": ("0", 0),
    "ttl-min": ("30", 30), "ttl-max": ("7200", 7200), "ttl-default": ("600", 600),
    "capacity-min": ("3", 3), "capacity-max": ("10", 10), "capacity-default": ("4", 4),
    "join-window": ("60", 60), "max-message-bytes": ("1024", 1024), "rate-limit": ("0", 0.0),
    "rate-burst": ("5", 5), "max-buffered-bytes": ("65536", 65536), "max-rooms": ("10", 10),
    "max-connections": ("20", 20), "join-timeout": ("2.5", 2.5), "ping-interval": ("5", 5.0),
    "idle-timeout": ("90", 90.0), "log-level": ("DEBUG", "debug"), "event-loop": ("asyncio", "asyncio"),
    "metrics-listen": ("[::1]:9300", "[::1]:9300"), "workers": ("2", 2), "node": ("N", "N"),
    "request-timeout": ("2.5", 2.5), "keepalive-timeout": ("30", 30.0),
    "max-pending-connections": ("64", 64), "max-connections-per-address": ("16", 16),
}


def test_every_option_has_an_env_sample() -> None:
    assert set(ENV_SAMPLES) == {option.name for option in OPTIONS}


@pytest.mark.parametrize("option", OPTIONS, ids=lambda o: o.name)
def test_every_flag_reads_its_pugfast_variable(option) -> None:
    raw, expected = ENV_SAMPLES[option.name]
    env = {option.env: raw}
    if option.name.startswith("tls-"):  # they go together
        env = {"PUGFAST_TLS_CERT": raw, "PUGFAST_TLS_KEY": raw}
    assert expected != option.default
    assert getattr(load_settings({}, env), option.dest) == expected
    # ... and the flag says the same.
    flags = {o.dest: env[o.env] for o in OPTIONS if o.env in env}
    assert getattr(load_settings(flags, {}), option.dest) == expected


@pytest.mark.parametrize("bare", ["PORT", "TLS_CERT", "TLS_KEY", "ALLOWED_ORIGIN"])
def test_the_first_four_read_bare_variables(bare: str) -> None:
    option = next(o for o in OPTIONS if bare in o.bare_env)
    assert option.name in ("port", "tls-cert", "tls-key", "allowed-origin")


REFUSALS = [
    ({"port": "70000"}, "--port must be a whole number from 0 to 65535"),
    ({"port": "http"}, "--port must be a whole number from 0 to 65535 (got 'http')"),
    ({"pow_difficulty": "33"}, "--pow-difficulty must be a whole number from 0 to 32"),
    ({"ttl_min": "0"}, "--ttl-min must be a whole number from 1 to 604800"),
    ({"rate_limit": "-1"}, "--rate-limit must be a number from 0 to 1000000"),
    ({"rate_limit": "nan"}, "--rate-limit must be a number from 0 to 1000000"),
    ({"log_level": "loud"}, "--log-level must be one of debug, info, warning, error"),
    ({"allowed_origin": "example.org"}, "--allowed-origin must be an origin"),
    ({"ttl_min": "100", "ttl_max": "50"}, "--ttl-min (100) must not exceed --ttl-max (50)"),
    ({"capacity_default": "100"}, "--capacity-default must be from --capacity-min to --capacity-max"),
    ({"ping_interval": "30", "idle_timeout": "20"}, "--idle-timeout (20 s) must be longer"),
    ({"tls_cert": "/etc/hostname"}, "--tls-cert and --tls-key go together"),
    ({"tls_cert": "/nonexistent.pem", "tls_key": "/etc/hostname"}, "--tls-cert must name a readable"),
    ({"metrics_listen": "9300"}, "--metrics-listen must be HOST:PORT"),
    ({"metrics_listen": "127.0.0.1:99999"}, "--metrics-listen must be HOST:PORT"),
    ({"request_timeout": "0"}, "--request-timeout must be a number from 0.05 to 3600 (got '0')"),
    ({"request_timeout": "-1"}, "--request-timeout must be a number from 0.05 to 3600"),
    ({"request_timeout": "soon"}, "--request-timeout must be a number from 0.05 to 3600"),
    ({"keepalive_timeout": "0"}, "--keepalive-timeout must be a number from 0.05 to 3600"),
    ({"keepalive_timeout": "inf"}, "--keepalive-timeout must be a number from 0.05 to 3600"),
    ({"max_pending_connections": "0"},
     "--max-pending-connections must be a whole number from 1 to 10000000 (got '0')"),
    ({"max_pending_connections": "1.5"}, "--max-pending-connections must be a whole number"),
    ({"max_connections_per_address": "-1"},
     "--max-connections-per-address must be a whole number from 0 to 1000000 (got '-1')"),
    ({"max_connections_per_address": "1000001"},
     "--max-connections-per-address must be a whole number from 0 to 1000000"),
]


@pytest.mark.parametrize(("flags", "message"), REFUSALS)
def test_bad_values_are_refused_naming_the_flag_and_range(flags, message) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(flags, {})
    assert message in str(info.value)


def test_a_bad_variable_is_named_as_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"^PUGFAST_MAX_ROOMS must be a whole number from 1 to"):
        load_settings({}, {"PUGFAST_MAX_ROOMS": "lots"})
    with pytest.raises(ConfigError, match=r"^PORT must be"):
        load_settings({}, {"PORT": "-5"})


@pytest.mark.parametrize(
    ("variable", "raw", "message"),
    [
        ("PUGFAST_REQUEST_TIMEOUT", "0", "PUGFAST_REQUEST_TIMEOUT must be a number from 0.05 to"),
        ("PUGFAST_KEEPALIVE_TIMEOUT", "-5", "PUGFAST_KEEPALIVE_TIMEOUT must be a number from 0.05"),
        ("PUGFAST_MAX_PENDING_CONNECTIONS", "none",
         "PUGFAST_MAX_PENDING_CONNECTIONS must be a whole number from 1 to"),
        ("PUGFAST_MAX_CONNECTIONS_PER_ADDRESS", "-1",
         "PUGFAST_MAX_CONNECTIONS_PER_ADDRESS must be a whole number from 0 to 1000000"),
    ],
)
def test_the_front_door_variables_are_checked_like_their_flags(variable, raw, message) -> None:
    with pytest.raises(ConfigError, match="^" + message):
        load_settings({}, {variable: raw})


def test_the_front_door_limits_accept_their_edges() -> None:
    edges = {"request_timeout": "0.05", "keepalive_timeout": "3600",
             "max_pending_connections": "1", "max_connections_per_address": "1000000"}
    settings = load_settings(edges, {})
    assert (settings.request_timeout, settings.keepalive_timeout) == (0.05, 3600.0)
    assert (settings.max_pending_connections, settings.max_connections_per_address) == (1, 1000000)
    # 0 turns the per-address cap off, and is its default.
    assert load_settings({"max_connections_per_address": "0"}, {}).max_connections_per_address == 0


def test_metrics_address_splits_host_and_port() -> None:
    assert load_settings({"metrics_listen": "[::1]:9300"}, {}).metrics_address == ("::1", 9300)
    assert load_settings({"metrics_listen": "127.0.0.1:0"}, {}).metrics_address == ("127.0.0.1", 0)
    assert load_settings({}, {}).metrics_address is None
