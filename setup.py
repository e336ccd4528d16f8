"""Builds the compiled engine, pugfast._speedups, from _ext/ and ships static/ in the package.

Everything else about the project lives in pyproject.toml.
"""

import shutil
from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).parent


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


# The compiler records the directory it ran in (DWARF's comp_dir) in the extension's debug
# information, and build frontends build from a fresh temporary directory every time. Mapping
# that directory to "." makes the .so, and so the wheel, depend on the sources alone: two builds
# with the same SOURCE_DATE_EPOCH give the same bytes (scripts/check_wheel.sh checks it).
REPRODUCIBLE = [f"-fdebug-prefix-map={ROOT.resolve()}=."]

extensions = cythonize(
    [
        Extension(
            "pugfast._speedups",
            ["_ext/pugfast/_speedups.pyx"],
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

setup(ext_modules=extensions, cmdclass={"build_py": build_py_with_static})
