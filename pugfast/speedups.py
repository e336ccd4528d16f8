"""The engine's selector under its former name: ``pugfast.speedups`` is ``pugfast.engine``.

Kept for scripts written before the engine became a package (docs/upgrading.md says what moved
where): it exports the same names, ``IMPLEMENTATION`` among them. New code imports
``pugfast.engine``.
"""

from .engine import *  # noqa: F403
from .engine import IMPLEMENTATION, __all__  # noqa: F401
