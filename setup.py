"""Builds the compiled engine, pugfast.engine._speedups, from _ext/ and ships static/ in the
package.

Without a working C compiler (or Python's headers) the build still succeeds, with one warning,
and the package runs on its pure-Python engine; PUGFAST_REQUIRE_EXTENSIONS=1 makes that a
failure instead, for packagers who must ship the compiled engine. Everything else about the
project lives in pyproject.toml.
"""

import os
import shutil
import sys
from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py
from setuptools.errors import CCompilerError, ExecError, PlatformError

ROOT = Path(__file__).parent

# Read like PUGFAST_NO_EXTENSIONS (pugfast/engine/__init__.py): anything but "" or "0" means yes.
REQUIRE_EXTENSIONS = os.environ.get("PUGFAST_REQUIRE_EXTENSIONS", "") not in ("", "0")


class build_py_with_static(build_py):
    """Copies the client (static/ at the repository root) into the built package.

    A source checkout serves static/ where it is; an installed wheel serves pugfast/static/.
    """

    def run(self) -> None:
        super().run()
        target = Path(self.build_lib) / "pugfast" / "static"
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(ROOT / "static", target)


class build_ext_or_fall_back(build_ext):
    """Builds the compiled engine, or, when no C compiler can, leaves it out with one warning.

    pugfast/engine/__init__.py falls back to the pure-Python twins when pugfast.engine._speedups
    is absent, so an install without a compiler works, more slowly, and says ``engine: python``
    at start (aiohttp's fallback is the model). Raises SystemExit instead when PUGFAST_REQUIRE_EXTENSIONS
    is set.
    """

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except (CCompilerError, ExecError, PlatformError) as exc:
            if REQUIRE_EXTENSIONS:
                raise SystemExit(
                    f"error: pugfast's compiled engine did not build ({exc}), and "
                    "PUGFAST_REQUIRE_EXTENSIONS is set: install a C compiler and Python's headers "
                    "(on Debian: apt-get install gcc python3-dev), or unset "
                    "PUGFAST_REQUIRE_EXTENSIONS to install the pure-Python engine."
                ) from exc
            print(
                f"WARNING: pugfast's compiled engine was not built ({exc}). This install runs "
                "on the pure-Python engine, which is slower: the relay says 'engine: python' at "
                "start. For the compiled engine, install a prebuilt wheel, or a C compiler and "
                "Python's headers and reinstall. PUGFAST_REQUIRE_EXTENSIONS=1 makes this an error.",
                file=sys.stderr,
            )
            # Out of the list, an extension is neither copied beside its sources (--inplace,
            # editable installs) nor counted among the build's outputs.
            self.extensions = [built for built in self.extensions if built is not ext]


# The compiler records the directory it ran in (DWARF's comp_dir) in the extension's debug
# information, and build frontends build from a fresh temporary directory every time. Mapping
# that directory to "." makes the .so, and so a wheel built from source, depend on the sources
# alone. (The release's wheels are compiled by zig instead: scripts/cross_wheels.py.)
REPRODUCIBLE = [f"-fdebug-prefix-map={ROOT.resolve()}=."]

extensions = cythonize(
    [
        Extension(
            "pugfast.engine._speedups",
            ["_ext/pugfast/engine/_speedups.pyx"],
            # No debug information: it would make the wheel four times the size.
            extra_compile_args=["-O2", "-g0", *REPRODUCIBLE],
        )
    ],
    # The .pxd must sit beside the .pyx under the package path, with _ext on the include
    # path: a .pxd placed flat in _ext/ is silently ignored by Cython.
    include_path=["_ext"],
    compiler_directives={
        "language_level": 3,
        "boundscheck": False,
        "wraparound": False,
        "cdivision": True,
        "embedsignature": True,
    },
)

setup(
    ext_modules=extensions,
    cmdclass={"build_py": build_py_with_static, "build_ext": build_ext_or_fall_back},
)
