"""The exceptions pugfast raises, under one base class."""


class PugfastError(Exception):
    """Base class of every error pugfast raises on purpose."""


class ProtocolError(PugfastError):
    """The peer broke RFC 6455 or the pugfast protocol.

    ``code`` is the WebSocket close code the connection must be closed with; ``reason`` says
    which rule was broken, in a few words fit for a close frame (at most 123 bytes of UTF-8).
    """

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.reason} (close code {self.code})"


class ConfigError(PugfastError):
    """A setting given to ``pugfast serve`` (flag or environment variable) is not acceptable."""
