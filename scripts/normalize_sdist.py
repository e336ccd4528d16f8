"""Rewrite an sdist so that its bytes depend on its contents alone.

    SOURCE_DATE_EPOCH=... python scripts/normalize_sdist.py dist/pugfast-0.1.0.tar.gz

setuptools writes each file's mtime from the disk, the top directory's from the clock, and the
gzip header's from the clock, so two builds of one commit differ. This rewrites the archive in
place: members in name order, every mtime SOURCE_DATE_EPOCH, owner root (0, no names), modes
0755 for directories and executables and 0644 for the rest, and a gzip header with that time
and no file name. The members' contents and names are unchanged.
"""

from __future__ import annotations

import gzip
import io
import os
import sys
import tarfile
from pathlib import Path


def normalize(path: Path, stamp: int) -> None:
    with tarfile.open(path) as source:
        members = sorted(source.getmembers(), key=lambda member: member.name)
        contents = {m.name: source.extractfile(m).read() for m in members if m.isfile()}
    tar_bytes = io.BytesIO()
    with tarfile.open(fileobj=tar_bytes, mode="w", format=tarfile.PAX_FORMAT) as target:
        for member in members:
            member.mtime = stamp
            member.uid = member.gid = 0
            member.uname = member.gname = ""
            member.pax_headers = {}
            executable = member.isdir() or member.mode & 0o111
            member.mode = 0o755 if executable else 0o644
            data = contents.get(member.name)
            target.addfile(member, io.BytesIO(data) if data is not None else None)
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=stamp,
                                                compresslevel=9) as compressed:
        compressed.write(tar_bytes.getvalue())


def main(argv: list[str]) -> int:
    if len(argv) != 1 or "SOURCE_DATE_EPOCH" not in os.environ:
        print("usage: SOURCE_DATE_EPOCH=... python scripts/normalize_sdist.py SDIST", file=sys.stderr)
        return 2
    normalize(Path(argv[0]), int(os.environ["SOURCE_DATE_EPOCH"]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
