"""The repository explains itself: no reference points at a design file outside it.

The design contract is docs/design.md; code and documents cite it as "docs/design.md §N".
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Built from pieces so that this file does not match itself.
OUTSIDE_REFERENCE = re.compile("SPEC" + r"\s*§|" + "SPEC" + r"\.md")


def _repository_files() -> list[str]:
    try:
        listed = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return sorted(
        name
        for name in set(listed)
        if name.endswith((".py", ".md", ".toml")) and (ROOT / name).is_file()
    )


def test_design_document_exists_with_numbered_sections():
    text = (ROOT / "docs" / "design.md").read_text(encoding="utf-8")
    numbers = [int(n) for n in re.findall(r"^## (\d+)\. ", text, flags=re.MULTILINE)]
    assert numbers == list(range(1, 11))


def test_no_reference_to_a_design_file_outside_the_repository():
    hits = []
    for name in _repository_files():
        text = (ROOT / name).read_text(encoding="utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), 1):
            if OUTSIDE_REFERENCE.search(line):
                hits.append(f"{name}:{number}: {line.strip()}")
    assert not hits, "cite docs/design.md §N instead:\n" + "\n".join(hits)


def test_design_section_references_exist():
    """Every "docs/design.md §N" names one of its sections (1–10)."""
    bad = []
    for name in _repository_files():
        text = (ROOT / name).read_text(encoding="utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), 1):
            for section in re.findall(r"design\.md\s*§(\d+)", line):
                if not 1 <= int(section) <= 10:
                    bad.append(f"{name}:{number}: §{section}")
    assert not bad, bad
