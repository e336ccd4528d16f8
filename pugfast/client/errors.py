"""The exceptions ``pugfast.client`` raises, under one base class.

Each says what went wrong in words fit to show a person; ``pugfast chat`` prints them as they
are and picks its exit code from the class.
"""

from __future__ import annotations

from ..errors import PugfastError
from .text import repair, visible

INSTALL_HINT = "pip install 'pugfast[client]'"


class ClientError(PugfastError):
    """Base class of every error the client raises on purpose."""


class MissingDependency(ClientError):
    """The ``client`` extra (PyCA ``cryptography``) is not installed."""

    def __init__(self) -> None:
        super().__init__(
            f"the pugfast client needs the 'cryptography' package; install it with: {INSTALL_HINT}"
        )


class LinkError(ClientError):
    """A room link (or a relay URL) is malformed, truncated or incomplete."""


class WordListError(ClientError):
    """The fingerprint word list (static/js/words.js) is missing or is not 2048 distinct words."""


class DecryptError(ClientError):
    """A ciphertext could not be decrypted: unknown version, too short, or failed
    authentication (wrong key, wrong room, altered bytes)."""


class MessageFormatError(ClientError):
    """A decrypted plaintext is not the message format of docs/client.md."""


class MessageTooLarge(ClientError):
    """A message would not fit under the relay's size limit; it was not sent.

    ``size`` is the bytes the text takes in the message, ``limit`` the most it may take.
    """

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            f"message too long: {size:,} bytes, and this relay takes at most {limit:,} bytes "
            "per message; it was not sent"
        )
        self.size = size
        self.limit = limit


class RelayUnreachable(ClientError):
    """The relay could not be reached: refused, unresolvable, timed out, or TLS failed."""


class RelayAnswerError(ClientError):
    """The relay answered something docs/protocol.md does not allow (a field of the wrong type or
    out of range, a message that is not JSON); the message names the field."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"the relay sent a malformed answer: {detail}")


def relay_text(text: str, limit: int = 300) -> str:
    """Text the relay chose (an error message, an HTTP reason), repaired, cut to ``limit``
    characters and escaped, so that printing it cannot drive a terminal."""
    text = repair(text)
    return visible(text[:limit] + ("..." if len(text) > limit else ""))


class ApiError(ClientError):
    """The relay's HTTP API answered with an error (``{"error": code, "message": text}``).
    The relay's words are escaped (``relay_text``) in the message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        code, message = relay_text(code, 64), relay_text(message)
        super().__init__(f"the relay refused the request: {message or code} ({status} {code})")
        self.status = status
        self.code = code


class JoinRefused(ClientError):
    """The relay refused to let this connection into the room.

    ``code`` is the WebSocket close code (docs/protocol.md §6.11), or None when the relay refused
    the upgrade itself (``status`` then holds the HTTP status).
    """

    def __init__(self, message: str, code: int | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


class NoSuchRoom(JoinRefused):
    """The room does not exist: it never did, or it has ended (close 4404)."""


class RoomFull(JoinRefused):
    """The room holds as many members as its creator allowed (close 4409)."""


class WrongSecret(JoinRefused):
    """The relay refused the link's room secret (close 4403)."""


class NotConnected(ClientError):
    """The room has ended or was left: nothing more can be sent."""


class NotCreator(ClientError):
    """Only the room's creator (its first member) may purge it."""
