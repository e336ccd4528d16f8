"""The release's wheels, as scripts/build_wheels.sh builds them without Docker, and where the
CPython that each is for comes from on a Debian x86_64 machine.

Twenty wheels: CPython 3.10 to 3.14 on four Linux platforms. This module is the whole matrix;
the build reads it from here, and tests/test_packaging.py checks that pyproject.toml's
[tool.cibuildwheel] (the same release, for hosts with Docker) names the same targets.

Each wheel is compiled against the headers of the CPython it is for:

- x86_64, 3.10 to 3.13: the pyenv interpreters these machines have (``pyenv versions``).
- 3.14 on both architectures, and 3.11 and 3.13 on aarch64: Debian's own builds
  (DEBIAN_SUITES), fetched by scripts/debian_python.sh into a private root.
- aarch64 3.10 and 3.12: no Debian release builds them, so the x86_64 build's headers of the
  same version. The public headers are the same on both; pyconfig.h differs only in switches
  the engine's C never reaches (x87 and x86-64 inline assembly, HAVE_USABLE_WCHAR_T), and the
  type sizes that the ABI rests on are the same on both LP64 platforms.
- musl: the glibc build's headers of the same version and architecture, for the same reason.

The same private roots run the wheels here: Debian's 3.14 for x86_64 with its own loader, and
Debian's aarch64 interpreters under qemu-user-static (RUNNABLE says which).

Run as a script, it answers the shell scripts' questions, one answer per line:

    python scripts/wheel_targets.py targets [--python 3.11 ...] [--platform TAG ...]
        one line per wheel: "<python> <platform tag>"
    python scripts/wheel_targets.py roots [--python 3.11 ...] [--platform TAG ...]
        one line per Debian build those wheels need: "<suite> <Debian arch> <python>"
    python scripts/wheel_targets.py pyenv <python>
        the pyenv interpreter of that CPython, or exits 1 saying how to install it
    python scripts/wheel_targets.py platforms <tag>...
        pip's --platform options for a machine of that platform tag (compatible_platforms)
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

PYTHONS = ("3.10", "3.11", "3.12", "3.13", "3.14")


@dataclass(frozen=True)
class Platform:
    """One Linux platform a wheel is built for."""

    tag: str  # the wheel's platform tag, as auditwheel names it
    arch: str  # as uname -m says it
    libc: str  # "gnu" or "musl", as in the platform triplet
    zig_target: str  # what `zig cc -target` is given

    @property
    def debian_arch(self) -> str:
        return {"x86_64": "amd64", "aarch64": "arm64"}[self.arch]

    def extension_suffix(self, python: str) -> str:
        """The file name ending CPython looks for, as sysconfig's EXT_SUFFIX there says."""
        return f".cpython-{python.replace('.', '')}-{self.arch}-linux-{self.libc}.so"


PLATFORMS = (
    # glibc 2.17 is manylinux2014's floor; zig links against that version's symbols.
    Platform("manylinux_2_17_x86_64", "x86_64", "gnu", "x86_64-linux-gnu.2.17"),
    Platform("manylinux_2_17_aarch64", "aarch64", "gnu", "aarch64-linux-gnu.2.17"),
    Platform("musllinux_1_2_x86_64", "x86_64", "musl", "x86_64-linux-musl"),
    Platform("musllinux_1_2_aarch64", "aarch64", "musl", "aarch64-linux-musl"),
)

# Debian builds of CPython used for headers and, where RUNNABLE says so, to run the wheel.
# bookworm is Debian 12 (3.11), trixie Debian 13 (3.13), sid the development branch (3.14).
DEBIAN_SUITES = {
    ("3.11", "aarch64"): "bookworm",
    ("3.13", "aarch64"): "trixie",
    ("3.14", "aarch64"): "sid",
    ("3.14", "x86_64"): "sid",
}

# The glibc wheels this machine can run: x86_64 natively (3.14 through Debian's build with its
# own loader), aarch64 under qemu-user-static through Debian's builds. Nothing runs a musl
# wheel here, nor an aarch64 wheel for 3.10 or 3.12: those are built, not run here.
RUNNABLE = {(python, "manylinux_2_17_x86_64") for python in PYTHONS} | {
    (python, "manylinux_2_17_aarch64") for python, arch in DEBIAN_SUITES if arch == "aarch64"
}


@dataclass(frozen=True)
class Target:
    python: str
    platform: Platform

    @property
    def cp(self) -> str:
        return "cp" + self.python.replace(".", "")

    @property
    def debian_suite(self) -> str | None:
        """The Debian suite whose headers this wheel is compiled against, if not pyenv's."""
        return DEBIAN_SUITES.get((self.python, self.platform.arch))


def targets(pythons: list[str] | None = None, platforms: list[str] | None = None) -> list[Target]:
    """The wheels to build, all of them by default.

    Raises ValueError naming a Python version or platform tag that is not in the matrix.
    """
    by_tag = {p.tag: p for p in PLATFORMS}
    for python in pythons or ():
        if python not in PYTHONS:
            raise ValueError(
                f"CPython {python} is not in the matrix: choose from {', '.join(PYTHONS)}"
            )
    for tag in platforms or ():
        if tag not in by_tag:
            raise ValueError(f"{tag} is not in the matrix: choose from {', '.join(by_tag)}")
    return [
        Target(python, platform)
        for python in (pythons or PYTHONS)
        for platform in (by_tag[tag] for tag in (platforms or by_tag))
    ]


def compatible_platforms(tag: str) -> list[str]:
    """The platform tags whose wheels a machine of platform ``tag`` runs, newest first.

    pip works this out for the machine it runs on, but takes ``--platform`` literally: a
    manylinux_2_28 machine also runs manylinux_2_17 (alias manylinux2014) wheels, and a
    musllinux_1_2 one musllinux_1_1 wheels. Any other tag is returned as it is.
    """
    legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
    if glibc := re.fullmatch(r"manylinux_2_(\d+)_(\w+)", tag):
        newest, arch = int(glibc.group(1)), glibc.group(2)
        return [f"manylinux_2_{minor}_{arch}" for minor in range(newest, 4, -1)] + [
            f"{name}_{arch}" for minor, name in legacy.items() if minor <= newest
        ]
    if musl := re.fullmatch(r"musllinux_1_(\d+)_(\w+)", tag):
        return [f"musllinux_1_{minor}_{musl.group(2)}" for minor in range(int(musl.group(1)), 0, -1)]
    return [tag]


def pyenv_interpreter(python: str) -> Path:
    """The newest pyenv-installed CPython of that version.

    Raises LookupError, saying how to install it, when there is none.
    """
    root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    found = sorted(
        (path for path in root.glob(f"versions/{python}.*/bin/python{python}") if path.is_file()),
        key=lambda path: [int(part) for part in path.parent.parent.name.split(".") if part.isdigit()],
    )
    if not found:
        raise LookupError(
            f"no CPython {python} under {root}/versions: install it with `pyenv install {python}`"
        )
    return found[-1]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("targets")
    listing.add_argument("--python", action="append")
    listing.add_argument("--platform", action="append")
    roots = commands.add_parser("roots")
    roots.add_argument("--python", action="append")
    roots.add_argument("--platform", action="append")
    pyenv = commands.add_parser("pyenv")
    pyenv.add_argument("python")
    platforms = commands.add_parser("platforms")
    platforms.add_argument("tag", nargs="+")
    args = parser.parse_args(argv)

    try:
        if args.command == "targets":
            for target in targets(args.python, args.platform):
                print(target.python, target.platform.tag)
        elif args.command == "roots":
            needed = {(t.debian_suite, t.platform.debian_arch, t.python)
                      for t in targets(args.python, args.platform) if t.debian_suite}
            for suite, arch, python in sorted(needed):
                print(suite, arch, python)
        elif args.command == "platforms":
            for tag in args.tag:
                for platform in compatible_platforms(tag):
                    print("--platform", platform)
        else:
            print(pyenv_interpreter(args.python))
    except (ValueError, LookupError) as exc:
        print(f"wheel_targets: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
