"""The relay's HTTP API (docs/protocol.md §2) for the client: one request helper that turns every
failure into a ClientError, and the TLS setting shared with the WebSocket."""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import aiohttp

from .answers import json_object
from .errors import ApiError, RelayAnswerError, RelayUnreachable


def ssl_setting(insecure: bool) -> ssl.SSLContext | bool:
    """The system's trust store, or (``insecure``, for self-signed test relays) no verification."""
    return False if insecure else ssl.create_default_context()


def unreachable(origin: str, exc: BaseException) -> RelayUnreachable:
    """The error for a relay that could not be reached, saying why in words."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError | ssl.SSLCertVerificationError):
        return RelayUnreachable(
            f"cannot reach the relay at {origin}: its TLS certificate is not trusted "
            f"({getattr(exc, 'certificate_error', exc)}); for a test relay with a self-signed "
            "certificate, use --insecure"
        )
    if isinstance(exc, asyncio.TimeoutError):
        return RelayUnreachable(f"cannot reach the relay at {origin}: it did not answer in time")
    detail = getattr(exc, "os_error", None) or exc
    if isinstance(detail, ConnectionRefusedError):
        return RelayUnreachable(
            f"cannot reach the relay at {origin}: connection refused (is it running, on that port?)"
        )
    text = getattr(detail, "strerror", None) or str(detail) or type(exc).__name__
    return RelayUnreachable(f"cannot reach the relay at {origin}: {text}")


# The relay's API answers are a few hundred bytes; a relay sending more is not believed.
MAX_ANSWER_BYTES = 64 * 1024


async def _body(response: aiohttp.ClientResponse) -> bytes:
    """The answer's body, or b"" (not JSON, so refused) past MAX_ANSWER_BYTES."""
    body = bytearray()
    async for chunk in response.content.iter_any():
        body += chunk
        if len(body) > MAX_ANSWER_BYTES:
            return b""
    return bytes(body)


async def request(
    session: aiohttp.ClientSession,
    method: str,
    origin: str,
    path: str,
    *,
    body: dict[str, Any] | None = None,
    ssl_context: ssl.SSLContext | bool = True,
) -> tuple[dict[str, Any], str | None]:
    """The JSON object the relay answers and its ``Date`` header.

    Raises RelayUnreachable when the relay cannot be reached, ApiError for an error answer,
    RelayAnswerError for an answer that is not a JSON object.
    """
    try:
        async with session.request(method, origin + path, json=body, ssl=ssl_context) as response:
            # Strict JSON (no NaN or Infinity); an answer that is not JSON is said below.
            data = json_object(await _body(response))
            if response.status >= 400:
                fields = data if isinstance(data, dict) else {}
                raise ApiError(
                    response.status, str(fields.get("error", "http_error")), str(fields.get("message", ""))
                )
            if not isinstance(data, dict):
                raise RelayAnswerError(f"its answer to {method} {path} is not a JSON object")
            return data, response.headers.get("Date")
    except (aiohttp.ClientConnectionError, asyncio.TimeoutError, ssl.SSLError) as exc:
        raise unreachable(origin, exc) from None
