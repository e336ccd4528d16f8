"""pugfast: a relay for end-to-end encrypted, ephemeral, account-less chat rooms."""

__version__ = "0.1.0"
