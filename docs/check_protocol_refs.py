#!/usr/bin/env python3
"""Check that every "protocol N.M" citation resolves to a heading of docs/protocol.md.

Scans bench/, studies/, tests/, examples/, docker/, README.md and docs/ (except protocol.md itself)
for citations such as "protocol 7.2", "protocol section 5", "Protocol 1.6-1.8", "protocol 5.2, 6.4"
and "protocol 7.12, 7.4, 7.2 and 7.7" (a citation may wrap onto the next line). Ranges are expanded
("1.6-1.8" is 1.6, 1.7 and 1.8). A number resolves when a Markdown heading of docs/protocol.md starts
with it ("## 1. Models", "### 7.17 ...").

Exit status 0 with a count when every cited number resolves; 1 with a list of those that do not.

    python docs/check_protocol_refs.py
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTOCOL = ROOT / "docs" / "protocol.md"
SCAN = ["bench", "studies", "tests", "examples", "docker", "README.md", "docs"]
SUFFIXES = {".py", ".md", ".toml", ".txt", ".csv", ".yaml", ".yml", ".sh", ".ini", ".cfg", ".ipynb", ".rst", ""}
SKIP_DIRS = {"__pycache__", ".git", "build", "dist", "site", ".venv", "venv"}

NUM = r"\d+(?:\.\d+)*"
ITEM = rf"{NUM}(?:\s*[-–]\s*{NUM})?"
# "protocol 5.3", "protocol section 4", "protocol sections 3 and 4", "Protocol 1.5-1.8",
# "protocol 5.2, 6.4", "protocol 7.12, 7.4, 7.2 and 7.7"
CITATION = re.compile(
    rf"\bprotocol(?:\s+sections?)?\s+(?P<list>{ITEM}(?:\s*(?:,|and|&)\s*{ITEM})*)",
    re.IGNORECASE,
)
HEADING = re.compile(rf"^#{{1,6}}\s+(?P<num>{NUM})\.?(?:\s|$)")


def headings(path: Path) -> set[str]:
    """The section numbers the headings of protocol.md start with."""
    found = set()
    in_fence = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("```"):
            in_fence = not in_fence
            continue
        match = None if in_fence else HEADING.match(line)
        if match:
            found.add(match.group("num"))
    return found


def expand(item: str) -> list[str]:
    """"1.6-1.8" -> ["1.6", "1.7", "1.8"]; "5.3" -> ["5.3"]."""
    parts = re.split(r"\s*[-–]\s*", item.strip())
    if len(parts) == 1:
        return parts
    start, end = (p.split(".") for p in parts)
    if len(start) != len(end) or start[:-1] != end[:-1] or int(end[-1]) < int(start[-1]):
        return parts  # not a simple range: check both ends as given
    prefix = ".".join(start[:-1])
    return [f"{prefix}.{i}" if prefix else str(i) for i in range(int(start[-1]), int(end[-1]) + 1)]


def files() -> list[Path]:
    out = []
    for name in SCAN:
        path = ROOT / name
        if path.is_file():
            out.append(path)
        elif path.is_dir():
            for f in sorted(path.rglob("*")):
                if f.is_file() and f.suffix in SUFFIXES and not SKIP_DIRS.intersection(f.relative_to(ROOT).parts):
                    out.append(f)
    return [f for f in out if f.resolve() not in (PROTOCOL.resolve(), Path(__file__).resolve())]


def citations() -> dict[str, list[str]]:
    """Cited number -> the places ("path:line") that cite it."""
    cited: dict[str, list[str]] = {}
    for path in files():
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        for match in CITATION.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            for item in re.split(r"\s*(?:,|and|&)\s*", match.group("list")):
                for number in expand(item):
                    cited.setdefault(number, []).append(f"{path.relative_to(ROOT)}:{line}")
    return cited


def main() -> int:
    if not PROTOCOL.is_file():
        print(f"{PROTOCOL.relative_to(ROOT)} is missing", file=sys.stderr)
        return 1
    known = headings(PROTOCOL)
    cited = citations()
    missing = {n: places for n, places in cited.items() if n not in known}
    key = lambda n: [int(p) for p in n.split(".")]  # noqa: E731
    if missing:
        print(f"{len(missing)} cited protocol section(s) with no heading in docs/protocol.md:")
        for number in sorted(missing, key=key):
            print(f"  {number}: {', '.join(missing[number][:5])}{' ...' if len(missing[number]) > 5 else ''}")
        return 1
    total = sum(len(p) for p in cited.values())
    print(f"OK: {total} protocol citations of {len(cited)} sections, all headings of docs/protocol.md "
          f"({len(known)} headings).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
