"""The project's documents hold together.

- Every citation of a section of docs/protocol.md (``docs/protocol.md §6.3``, in code, tests,
  docs, deploy files or static/) names a section that page has, and docs/protocol.md's own
  references to its sections do too.
- Every ``§`` followed by a number says whose section it is: docs/protocol.md's, or an RFC's.
  A bare ``(§3.4)`` is how the code once cited a protocol document that lived outside the
  repository, and a reader who clones it could not follow it.
- Nothing cites those outside documents by name any more, and every ``docs/NAME.md`` or other
  page a file names by its path exists.
- Every relative Markdown link between the project's pages leads to a file that exists, and
  to a heading of it when the link names one.
"""

from __future__ import annotations

import re
import subprocess
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PROTOCOL = "docs/protocol.md"
# This file's examples are wrong on purpose: the checks read every other file.
SELF = "tests/test_docs.py"
PAGES = ["README.md", "SECURITY.md", "bench/README.md", *sorted(
    str(path.relative_to(REPO)) for path in (REPO / "docs").glob("*.md")
)]

# The documents the project started from, kept outside the repository. Spelt in two halves so
# that this file does not name them itself.
OUTSIDE = re.compile(r"\b(?:PROTOCOL|SPEC|STYLE)" + r"\.md\b")
SECTION = r"§(\d+(?:\.\d+)*)"
# Between the items of a list of sections: a comma, "and", "to" or a dash, and whatever a line
# break inside a comment brings (the next line's comment marker).
_GAP = r"[\s#/*]*"
_MORE = rf"(?:{_GAP}(?:,|and|or|to|-|\u2013){_GAP}{SECTION})*"
CITATION = re.compile(rf"docs/protocol\.md{_GAP}{SECTION}{_MORE}")
# Another document's sections: RFC 6455 §7.1.1, FIPS 180-4 §6.1.2.
FOREIGN = re.compile(rf"\b(?:RFC|FIPS){_GAP}[0-9][0-9-]*{_GAP}{SECTION}{_MORE}")
ANY_SECTION = re.compile(SECTION)
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$", re.MULTILINE)
NUMBERED = re.compile(r"(\d+(?:\.\d+)*)\.?\s")
PAGE_PATH = re.compile(r"(?<![\w./:-])((?:[\w-]+/)+[\w-]+\.md)\b")
LINK = re.compile(r"\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
# What a checkout holds that git does not track (used where there is no git to ask).
UNTRACKED = {".git", "build", "dist", "__pycache__", ".hypothesis", ".pytest_cache", ".mypy_cache",
             ".ruff_cache", "test-artifacts", "node_modules"}


@cache
def repository_files() -> tuple[str, ...]:
    """Every file of the repository but this one, as paths relative to it: what git tracks or
    would (new files not ignored), or, where there is no git repository (an unpacked sdist),
    every file but built and cached ones."""
    return tuple(name for name in _all_files() if name != SELF)


def _all_files() -> tuple[str, ...]:
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=REPO, capture_output=True, check=True,
        ).stdout.decode()
        return tuple(sorted({name for name in listed.split("\0") if name and (REPO / name).is_file()}))
    except (OSError, subprocess.CalledProcessError):
        found = []
        for path in REPO.rglob("*"):
            parts = path.relative_to(REPO).parts
            if not path.is_file() or any(part in UNTRACKED or part.endswith(".egg-info") for part in parts):
                continue
            if path.suffix in (".so", ".pyc", ".c") or parts[:2] == ("bench", "results"):
                continue
            found.append(str(path.relative_to(REPO)))
        return tuple(sorted(found))


@cache
def text_of(name: str) -> str | None:
    """A file's text, or None for a file that is not UTF-8 text."""
    try:
        return (REPO / name).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return None


def line_of(text: str, index: int) -> int:
    return text.count("\n", 0, index) + 1


def sections(markdown: str) -> list[str]:
    """The numbers of a page's numbered headings (``### 6.3 Relaying`` is ``6.3``), in order."""
    found = []
    for _level, title in HEADING.findall(without_code_blocks(markdown)):
        number = NUMBERED.match(title + " ")
        if number:
            found.append(number.group(1))
    return found


def without_code_blocks(markdown: str) -> str:
    """``markdown`` with its fenced code blocks blanked out (line numbers kept)."""
    return re.sub(r"^```.*?^```", lambda m: "\n" * m.group(0).count("\n"), markdown,
                  flags=re.MULTILINE | re.DOTALL)


def citation_problems(text: str, known: set[str], *, own_page: bool = False) -> list[str]:
    """What is wrong with the section references in ``text``: a cited section that
    docs/protocol.md does not have, or a ``§`` that does not say whose it is. On docs/protocol.md
    itself (``own_page``), a bare ``§`` is a reference to one of its own sections."""
    problems = []
    claimed = [False] * len(text)
    for match in CITATION.finditer(text):
        claimed[match.start():match.end()] = [True] * (match.end() - match.start())
        problems += [f"line {line_of(text, match.start())}: cites {PROTOCOL} §{n}, which it does not have"
                     for n in ANY_SECTION.findall(match.group(0)) if n not in known]
    for match in FOREIGN.finditer(text):
        claimed[match.start():match.end()] = [True] * (match.end() - match.start())
    for match in ANY_SECTION.finditer(text):
        if claimed[match.start()]:
            continue
        line = line_of(text, match.start())
        if not own_page:
            problems.append(f"line {line}: §{match.group(1)} does not say whose section it is "
                            f"(write {PROTOCOL} §{match.group(1)}, or the RFC's name)")
        elif match.group(1) not in known:
            problems.append(f"line {line}: §{match.group(1)} is not a section of this page")
    return problems


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation gone, spaces as hyphens."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    found: set[str] = set()
    for _level, title in HEADING.findall(without_code_blocks(markdown)):
        base = slug(title)
        anchor, n = base, 0
        while anchor in found:
            n += 1
            anchor = f"{base}-{n}"
        found.add(anchor)
    return found


@cache
def protocol_sections() -> frozenset[str]:
    text = text_of(PROTOCOL)
    assert text is not None, f"{PROTOCOL} is missing"
    return frozenset(sections(text))


# -- the checker itself, on examples ----------------------------------------------------------

KNOWN = {"1", "1.1", "2", "2.6", "6", "6.1", "6.2", "6.8"}
EXAMPLES = [
    ("(docs/protocol.md §6.2)", []),
    ("(docs/protocol.md §2.6, §6.1 and §6.2)", []),
    ("(docs/protocol.md §6.1-§6.8)", []),
    ("(docs/protocol.md §6.9)", ["§6.9"]),
    ("(docs/protocol.md §6.2, §7)", ["§7"]),
    ("# member ids start at 1 (docs/protocol.md §1,\n    # §6.3); the welcome", ["§6.3"]),
    ("// (docs/protocol.md\n// §6.2), said", []),
    ("(RFC 6455 §7.1.1) and FIPS 180-4 §6.1.2", []),
    ("(RFC 6455\n        # §7.1.1). Closing", []),
    ("an empty close is answered with 1000 (§3.5)", ["does not say whose"]),
    ("docs/protocol.md §6.2 and then (§6.1) alone", ["does not say whose"]),
    ("characters (é, §, ...) count 1", []),
]


@pytest.mark.parametrize(("text", "expected"), EXAMPLES, ids=[str(i) for i in range(len(EXAMPLES))])
def test_the_checker_finds_what_it_should(text: str, expected: list[str]) -> None:
    problems = citation_problems(text, KNOWN)
    assert len(problems) == len(expected), problems
    for problem, words in zip(problems, expected, strict=True):
        assert words in problem


def test_the_checker_reads_a_pages_own_references_and_its_anchors() -> None:
    page = "# Title\n\n## 1. One\n\n### 1.1 First (see §2)\n\n```\n## 9. Not a heading\n```\n## 2. Two\n"
    assert sections(page) == ["1", "1.1", "2"]
    assert citation_problems("as §1.1 says, and RFC 9110 §6.6.1", set(sections(page)), own_page=True) == []
    assert len(citation_problems("as §3 says", set(sections(page)), own_page=True)) == 1
    assert anchors(page) >= {"title", "1-one", "11-first-see-2", "2-two"}
    assert slug("Abuse: slow, idle and flooding clients") == "abuse-slow-idle-and-flooding-clients"
    assert slug("`pugfast chat`") == "pugfast-chat"


# -- the repository ---------------------------------------------------------------------------


def test_the_protocol_page_numbers_its_sections_in_order() -> None:
    numbers = [tuple(int(part) for part in n.split(".")) for n in sections(text_of(PROTOCOL) or "")]
    assert numbers, f"{PROTOCOL} has no numbered sections"
    previous: tuple[int, ...] = (0,)
    for number in numbers:
        if len(number) == 1:
            assert number == (previous[0] + 1,), f"§{number[0]} follows §{previous}"
        else:
            parent = previous[: len(number) - 1]
            expected_last = previous[len(number) - 1] + 1 if len(previous) >= len(number) else 1
            assert number == (*parent, expected_last), f"{number} follows {previous}"
        previous = number


def test_every_citation_of_the_protocol_names_a_section_it_has() -> None:
    known = set(protocol_sections())
    problems = []
    for name in repository_files():
        text = text_of(name)
        if text is None:
            continue
        problems += [f"{name}: {p}" for p in citation_problems(text, known, own_page=name == PROTOCOL)]
    assert not problems, "\n".join(problems)


def test_nothing_cites_the_documents_outside_the_repository() -> None:
    found = []
    for name in repository_files():
        text = text_of(name)
        for match in OUTSIDE.finditer(text or ""):
            found.append(f"{name}, line {line_of(text or '', match.start())}: {match.group(0)}")
    assert not found, (
        "cited, but not in the repository (cite docs/protocol.md, README.md or docs/):\n"
        + "\n".join(found)
    )


def test_every_page_named_by_its_path_exists() -> None:
    missing = []
    for name in repository_files():
        for match in PAGE_PATH.finditer(text_of(name) or ""):
            page = match.group(1)
            if not (REPO / page).is_file():
                missing.append(f"{name} names {page}")
    assert not missing, "\n".join(missing)


def test_every_relative_link_between_the_pages_leads_somewhere() -> None:
    broken = []
    for name in PAGES:
        source = REPO / name
        for target in LINK.findall(without_code_blocks(source.read_text(encoding="utf-8"))):
            if SCHEME.match(target):
                continue  # another site: not checked here (no network)
            path_part, _, anchor = target.partition("#")
            destination = (source.parent / path_part).resolve() if path_part else source
            if not destination.is_file():
                broken.append(f"{name}: {target} (no such file)")
            elif anchor and destination.suffix == ".md" and anchor not in anchors(destination.read_text()):
                broken.append(f"{name}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


def house_map() -> dict[str, str]:
    """The paths README.md's map of the house ("How it is built") names, each with its line."""
    text = (REPO / "README.md").read_text()
    block = text[text.index("## How it is built"):].split("```")[1]
    named: dict[str, str] = {}
    parents: list[str] = []
    for line in block.splitlines()[1:]:
        indent = len(line) - len(line.lstrip(" "))
        # Descriptions run on in a column of their own, deeper than any name.
        if not line.strip() or indent > 8:
            continue
        depth = indent // 2
        names = re.match(r"([\w./]+(?:, [\w./]+)*)", line.strip())
        assert names, line
        for name in names.group(1).split(", "):
            path = "/".join([*parents[:depth], name.rstrip("/")])
            named[path] = line
        if names.group(1).endswith("/"):
            parents[depth:] = [names.group(1).rstrip("/")]
    return named


def test_the_map_of_the_house_matches_the_tree() -> None:
    import pugfast

    # The package as imported: a run against an installed wheel has no pugfast/ (nor _ext/) in
    # its copy of the checkout.
    package = Path(pugfast.__file__).resolve().parent
    named = house_map()

    def on_disk(path: str) -> Path:
        return package.parent / path if path.split("/")[0] == "pugfast" else REPO / path

    sources_here = (REPO / "_ext").is_dir()
    missing = sorted(path for path in named if not on_disk(path).exists()
                     and (sources_here or not path.startswith("_ext/")))
    assert not missing, f"README.md's map names what the tree does not have: {missing}"
    # Every module and package of pugfast is on the map, and every module of the packages
    # whose modules the map lists one by one.
    listed = {path.rpartition("/")[0] for path in named if path.count("/") == 2}
    unmapped = sorted(
        path.relative_to(package.parent).as_posix()
        for path in [*package.glob("*.py"), *(p for p in package.iterdir() if p.is_dir()), *(
            module for folder in listed for module in on_disk(folder).glob("*.py"))]
        if path.name not in ("__init__.py", "__main__.py", "__pycache__", "static")
        and path.relative_to(package.parent).as_posix() not in named
    )
    assert not unmapped, f"README.md's map leaves out: {unmapped}"
