"""Architecture decision records keep the layout the product owner asked for.

Every ``docs/adr/NNNN-kebab-title.md`` must have, in this order and spelled exactly so::

    # <the ADR's title>
    ## Question
    ## Assumptions
    ## Options Considered
    ### Option <name>        (one or more; ADR 0001 has the analysis's four)
    #### Risk and impact
    #### Pros
    #### Cons
    ## Recommended option
    ### Decisioning
    ### Implication
    #### Must
    #### SHOULD
    #### MAY

with a ``- Status:`` and ``- Date:`` line under the title, no empty section, and every
bullet under Must / SHOULD / MAY stating its RFC 2119 keyword. ``docs/adr/README.md``
must list every ADR exactly once (with its title and status) and nothing that does not
exist; links between ADRs must resolve. Numbers are unique and contiguous from 0001:
a decision that changes gets a new ADR that supersedes the old one, which stays, so no
number is ever freed or reused.

The checker functions are tested on synthetic documents too, so that each rule is shown
to be able to fail.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pytest

ADR_DIR = Path(__file__).resolve().parents[1] / "docs" / "adr"
INDEX = ADR_DIR / "README.md"

FILE_NAME = re.compile(r"^(?P<number>\d{4})-[a-z0-9]+(?:-[a-z0-9]+)*\.md$")
HEADING = re.compile(r"^(?P<hashes>#{1,6})\s+(?P<text>.*?)\s*#*\s*$")
FENCE = re.compile(r"^\s*(```|~~~)")
STATUS = re.compile(
    r"^- Status: (?P<status>Proposed|Accepted|Deprecated"
    r"|Superseded by \[ADR (?P<by>\d{4})\]\((?P<target>\d{4}-[a-z0-9-]+\.md)\))\s*$"
)
DATE = re.compile(r"^- Date: (?P<date>\d{4}-\d{2}-\d{2})\s*$")
INDEX_LINK = re.compile(r"\[(?P<text>[^\]]+)\]\((?:\./)?(?P<target>[^)#\s]+\.md)\)")

HEAD = [(2, "Question"), (2, "Assumptions"), (2, "Options Considered")]
OPTION_SECTIONS = [(4, "Risk and impact"), (4, "Pros"), (4, "Cons")]
TAIL = [
    (2, "Recommended option"),
    (3, "Decisioning"),
    (3, "Implication"),
    (4, "Must"),
    (4, "SHOULD"),
    (4, "MAY"),
]
KEYWORD = {"Must": "MUST", "SHOULD": "SHOULD", "MAY": "MAY"}

# ADR 0001 weighs exactly the four options of seed/architecture-options.md.
ADR_0001_OPTIONS = {
    "monolithic": ("monolithic",),
    "two services": ("two", "services"),
    "two consumers": ("single service", "two consumers"),
    "hybrid": ("hybrid", "worker pool", "overflow"),
}


@dataclass(frozen=True)
class Heading:
    """One ATX heading outside code fences."""

    level: int
    text: str
    line: int


@dataclass(frozen=True)
class Adr:
    """What the checks need to know about one ADR file."""

    path: Path
    number: int
    title: str
    status: str
    superseded_by: str | None
    headings: list[Heading]


# --------------------------------------------------------------------------- parsing


def headings_of(text: str) -> list[Heading]:
    """ATX headings of ``text``, skipping fenced code blocks (diagrams, samples)."""
    found: list[Heading] = []
    fence: str | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        marker = FENCE.match(line)
        if marker:
            if fence is None:
                fence = marker.group(1)
            elif marker.group(1) == fence:
                fence = None
            continue
        if fence is not None:
            continue
        match = HEADING.match(line)
        if match:
            found.append(Heading(len(match.group("hashes")), match.group("text"), number))
    return found


def expected_layout(option_count: int) -> list[tuple[int, str | None]]:
    """The heading sequence for ``option_count`` options (``None``: any option name)."""
    layout: list[tuple[int, str | None]] = [(1, None), *HEAD]
    for _ in range(option_count):
        layout += [(3, None), *OPTION_SECTIONS]
    return layout + TAIL


def section_bodies(text: str, headings: list[Heading]) -> dict[int, str]:
    """Text between each heading (by index) and the next one."""
    lines = text.splitlines()
    bodies: dict[int, str] = {}
    for i, heading in enumerate(headings):
        end = headings[i + 1].line - 1 if i + 1 < len(headings) else len(lines)
        bodies[i] = "\n".join(lines[heading.line : end]).strip()
    return bodies


def bullets(body: str) -> list[str]:
    """Top-level bullet items of a section (continuation lines joined)."""
    items: list[str] = []
    for line in body.splitlines():
        if re.match(r"^[-*] ", line):
            items.append(line[2:].strip())
        elif items and line.startswith("  ") and line.strip():
            items[-1] += " " + line.strip()
    return items


# --------------------------------------------------------------------------- checks


def check_adr_text(text: str) -> list[str]:
    """Problems with one ADR's structure (empty when it is well formed)."""
    problems: list[str] = []
    headings = headings_of(text)
    if not headings or headings[0].level != 1:
        return ["the first heading must be the ADR's title as a level-1 heading (# Title)"]
    title = headings[0].text
    if not title or title.lower() == "title":
        problems.append("the level-1 heading must be the ADR's actual title")
    if sum(h.level == 1 for h in headings) != 1:
        problems.append("exactly one level-1 heading (the title) is allowed")

    options = [h for h in headings if h.level == 3 and h.text.startswith("Option ")]
    if not options:
        problems.append("at least one '### Option <name>' is required")
    layout = expected_layout(len(options))
    actual = [(h.level, h.text) for h in headings]
    if len(actual) != len(layout):
        problems.append(
            f"{len(actual)} headings where the layout with {len(options)} option(s) has "
            f"{len(layout)}: {[('#' * lv) + ' ' + tx for lv, tx in actual]}"
        )
    for i, ((level, text_), (want_level, want_text)) in enumerate(
        zip(actual, layout, strict=False)
    ):
        if i == 0:
            continue
        ok = level == want_level and (
            text_ == want_text
            if want_text is not None
            else text_.startswith("Option ") and len(text_) > len("Option ")
        )
        if not ok:
            wanted = f"{'#' * want_level} {want_text or 'Option <name>'}"
            problems.append(
                f"line {headings[i].line}: found '{'#' * level} {text_}', expected '{wanted}'"
            )
            break

    bodies = section_bodies(text, headings)
    for i, heading in enumerate(headings):
        has_children = i + 1 < len(headings) and headings[i + 1].level > heading.level
        if not has_children and not bodies[i]:
            problems.append(f"line {heading.line}: section '{heading.text}' is empty")
        if heading.level == 4 and heading.text in KEYWORD:
            items = bullets(bodies[i])
            if not items:
                problems.append(f"'{heading.text}' must list its statements as bullets")
            keyword = KEYWORD[heading.text]
            for item in items:
                if not re.search(rf"\b{keyword}\b", item):
                    problems.append(f"'{heading.text}' item lacks '{keyword}': {item[:70]!r}")

    preamble = bodies[0].splitlines() if headings else []
    if not any(STATUS.match(line) for line in preamble):
        problems.append("a '- Status: Proposed|Accepted|Deprecated|Superseded by ...' line")
    dates = [m for line in preamble if (m := DATE.match(line))]
    if not dates:
        problems.append("a '- Date: YYYY-MM-DD' line under the title is required")
    else:
        try:
            date.fromisoformat(dates[0].group("date"))
        except ValueError:
            problems.append(f"invalid date {dates[0].group('date')!r}")
    return problems


def parse_adr(path: Path) -> Adr:
    """Read one ADR file (assumes :func:`check_adr_text` passed)."""
    text = path.read_text(encoding="utf-8")
    headings = headings_of(text)
    status, superseded_by = "", None
    for line in section_bodies(text, headings)[0].splitlines():
        match = STATUS.match(line)
        if match:
            status = match.group("status")
            superseded_by = match.group("target")
    name = FILE_NAME.match(path.name)
    assert name is not None, path.name
    return Adr(path, int(name.group("number")), headings[0].text, status, superseded_by, headings)


def check_numbering(names: list[str]) -> list[str]:
    """Problems with ADR file names and numbers in one directory listing."""
    problems: list[str] = []
    numbers: dict[int, str] = {}
    for name in sorted(names):
        if name == "README.md" or not name.endswith(".md"):
            continue
        match = FILE_NAME.match(name)
        if match is None:
            problems.append(f"{name}: ADR files are named NNNN-kebab-title.md")
            continue
        number = int(match.group("number"))
        if number in numbers:
            problems.append(f"{name}: number {number:04d} is already {numbers[number]}")
        numbers[number] = name
    if numbers and sorted(numbers) != list(range(1, max(numbers) + 1)):
        missing = sorted(set(range(1, max(numbers) + 1)) - set(numbers))
        problems.append(
            f"numbers must run from 0001 without gaps (missing {missing}): an ADR is "
            "superseded, never deleted, so its number is never freed for reuse"
        )
    return problems


def check_index(index_text: str, adrs: list[Adr]) -> list[str]:
    """Problems with the index: every ADR once, with its title and status; no dead link.

    Each table row describes the ADR of its first link (later links in the row, such as
    "superseded by", are references); every link anywhere must point at an existing ADR.
    """
    problems: list[str] = []
    by_name = {adr.path.name: adr for adr in adrs}
    rows: dict[str, int] = {}
    for line in index_text.splitlines():
        links = [m.group("target") for m in INDEX_LINK.finditer(line)]
        links = [t for t in links if FILE_NAME.match(t)]
        for target in links:
            if target not in by_name:
                problems.append(f"the index links {target}, which does not exist")
        if not line.startswith("|") or not links or links[0] not in by_name:
            continue
        adr = by_name[links[0]]
        rows[adr.path.name] = rows.get(adr.path.name, 0) + 1
        if adr.title not in line:
            problems.append(f"the index row for {adr.path.name} lacks its title {adr.title!r}")
        if adr.status.split(" [")[0] not in line:
            problems.append(f"the index row for {adr.path.name} lacks its status {adr.status!r}")
    for name in by_name:
        if rows.get(name, 0) == 0:
            problems.append(f"{name} is not listed in the index")
        elif rows[name] > 1:
            problems.append(f"{name} has {rows[name]} index rows")
    return problems


def check_supersession(adrs: list[Adr]) -> list[str]:
    """A superseded ADR names an existing, later ADR."""
    problems: list[str] = []
    by_name = {adr.path.name: adr for adr in adrs}
    for adr in adrs:
        if adr.superseded_by is None:
            continue
        successor = by_name.get(adr.superseded_by)
        if successor is None:
            problems.append(f"{adr.path.name} is superseded by a missing {adr.superseded_by}")
        elif successor.number <= adr.number:
            problems.append(f"{adr.path.name} is superseded by an earlier ADR")
    return problems


# --------------------------------------------------------------------------- the repo

ADR_FILES = sorted(p for p in ADR_DIR.glob("*.md") if p.name != "README.md")


def test_there_are_adrs_and_an_index() -> None:
    assert INDEX.is_file(), "docs/adr/README.md (the index) is missing"
    assert any(p.name.startswith("0001-") for p in ADR_FILES), "ADR 0001 is missing"


def test_file_names_and_numbers() -> None:
    assert check_numbering([p.name for p in ADR_DIR.iterdir()]) == []


@pytest.mark.parametrize("path", ADR_FILES, ids=lambda p: p.name[:4])
def test_adr_layout(path: Path) -> None:
    assert check_adr_text(path.read_text(encoding="utf-8")) == []


def test_adr_0001_weighs_all_four_options() -> None:
    (path,) = [p for p in ADR_FILES if p.name.startswith("0001-")]
    adr = parse_adr(path)
    names = [h.text.lower() for h in adr.headings if h.level == 3 and h.text.startswith("Option")]
    assert len(names) == 4, names
    for option, words in ADR_0001_OPTIONS.items():
        assert sum(all(w in n for w in words) for n in names) == 1, (option, names)


def dead_adr_links(text: str, existing: set[str]) -> list[str]:
    """Links to ``NNNN-*.md`` files in ``text`` that do not exist."""
    targets = {m.group("target") for m in INDEX_LINK.finditer(text)}
    return sorted(t for t in targets if FILE_NAME.match(t) and t not in existing)


@pytest.mark.parametrize("path", ADR_FILES, ids=lambda p: p.name[:4])
def test_links_between_adrs_resolve(path: Path) -> None:
    assert dead_adr_links(path.read_text(encoding="utf-8"), {p.name for p in ADR_FILES}) == []


def test_dead_link_checker() -> None:
    text = "See [0002](0002-b.md) and [0009](0009-gone.md) and [x](other.md)."
    assert dead_adr_links(text, {"0002-b.md"}) == ["0009-gone.md"]


def test_index_lists_every_adr_and_nothing_else() -> None:
    adrs = [parse_adr(p) for p in ADR_FILES]
    assert check_index(INDEX.read_text(encoding="utf-8"), adrs) == []
    assert check_supersession(adrs) == []


# --------------------------------------------------------------------------- the checker

GOOD = """\
# Use a queue

- Status: Accepted
- Date: 2026-11-29

## Question
Why?
## Assumptions
Some.
## Options Considered
Two.
### Option A queue
#### Risk and impact
Low.
#### Pros
Fast.
#### Cons
None.
### Option No queue
#### Risk and impact
High.
#### Pros
Simple.
#### Cons
Slow.
## Recommended option
A queue.
### Decisioning
Because.
### Implication
Then:
#### Must
- The service MUST use a queue.
#### SHOULD
- It SHOULD batch
  its sends.
#### MAY
- It MAY use FIFO.
"""


def test_checker_accepts_a_well_formed_adr() -> None:
    assert check_adr_text(GOOD) == []


@pytest.mark.parametrize(
    ("old", "new", "problem"),
    [
        ("# Use a queue", "# Title", "actual title"),
        ("# Use a queue\n", "## Use a queue\n", "level-1 heading"),
        ("## Options Considered", "## Options Concidered", "expected '## Options Considered'"),
        ("### Decisioning", "### Dessisioning", "expected '### Decisioning'"),
        ("#### SHOULD", "#### Should", "expected '#### SHOULD'"),
        ("#### Pros\nFast.\n#### Cons", "#### Cons\nFast.\n#### Pros", "expected '#### Pros'"),
        ("### Option A queue\n#### Risk and impact\nLow.\n", "", "expected"),
        ("### Option A queue", "### Option A queue\n#### Notes\nx", "expected"),
        ("### Option A queue", "### Choice A", "expected '### Option <name>'"),
        ("- The service MUST use a queue.", "- The service must use a queue.", "lacks 'MUST'"),
        ("- It MAY use FIFO.", "It MAY use FIFO.", "as bullets"),
        ("#### Cons\nNone.", "#### Cons\n", "is empty"),
        ("- Status: Accepted\n", "", "Status"),
        ("- Date: 2026-11-29", "- Date: 2026-11-31", "invalid date"),
        ("# Use a queue\n", "# Use a queue\n# Again\n", "exactly one level-1"),
    ],
)
def test_checker_rejects(old: str, new: str, problem: str) -> None:
    assert old in GOOD
    problems = check_adr_text(GOOD.replace(old, new, 1))
    assert any(problem in p for p in problems), problems


def test_checker_ignores_headings_in_code_fences() -> None:
    fenced = GOOD.replace("Two.\n", "Two.\n```\n# not a heading\n## Nor this\n```\n", 1)
    assert check_adr_text(fenced) == []


@pytest.mark.parametrize(
    ("names", "problem"),
    [
        (["0001-a.md", "0001-b.md"], "already"),
        (["0001-a.md", "0003-c.md"], "without gaps"),
        (["0001-a.md", "2-b.md"], "NNNN-kebab-title"),
        (["0001-A_Title.md"], "NNNN-kebab-title"),
    ],
)
def test_numbering_rejects(names: list[str], problem: str) -> None:
    assert any(problem in p for p in check_numbering(names))


def _adr(tmp_path: Path, name: str, title: str, status: str = "Accepted") -> Adr:
    return Adr(tmp_path / name, int(name[:4]), title, status, None, [])


def test_index_checker(tmp_path: Path) -> None:
    one = _adr(tmp_path, "0001-use-a-queue.md", "Use a queue")
    two = _adr(tmp_path, "0002-batch-sends.md", "Batch sends")
    good = (
        "| ADR | Title | Status |\n|---|---|---|\n"
        "| 0001 | [Use a queue](0001-use-a-queue.md) | Accepted |\n"
        "| 0002 | [Batch sends](0002-batch-sends.md) | Accepted |\n"
    )
    assert check_index(good, [one, two]) == []
    assert any(
        "not listed" in p for p in check_index(good, [one, two, _adr(tmp_path, "0003-x.md", "X")])
    )
    dead = good + "| 0003 | [Gone](0003-gone.md) | Accepted |\n"
    assert any("does not exist" in p for p in check_index(dead, [one, two]))
    renamed = good.replace("[Batch sends]", "[Batch]").replace("| Batch sends", "| Batch")
    assert any("lacks its title" in p for p in check_index(renamed, [one, two]))
    twice = good + "| 0002 | [Batch sends](0002-batch-sends.md) | Accepted |\n"
    assert any("2 index rows" in p for p in check_index(twice, [one, two]))
    wrong_status = good.replace("batch-sends.md) | Accepted", "batch-sends.md) | Proposed")
    assert any("lacks its status" in p for p in check_index(wrong_status, [one, two]))


def test_supersession_checker(tmp_path: Path) -> None:
    old = Adr(tmp_path / "0002-b.md", 2, "B", "Superseded", "0001-a.md", [])
    new = _adr(tmp_path, "0001-a.md", "A")
    assert any("earlier" in p for p in check_supersession([old, new]))
    dangling = Adr(tmp_path / "0001-a.md", 1, "A", "Superseded", "0009-z.md", [])
    assert any("missing" in p for p in check_supersession([dangling]))
