"""Where the browser client's files are, the same way pugfast.app finds them: inside the
installed package (a wheel ships pugfast/static/), or static/ of a source checkout."""

from __future__ import annotations

from pathlib import Path


def static_dir() -> Path:
    package = Path(__file__).resolve().parent.parent
    packaged = package / "static"
    return packaged if packaged.is_dir() else package.parent / "static"
