"""The ``<!-- bench:NAME -->`` blocks of docs/benchmarks.md: find them, replace one in place,
keep them through a regeneration of the whole file (``make bench``).

A block is everything between ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->``; text
between ``<!-- notes:NAME -->`` and ``<!-- /notes:NAME -->`` inside an existing block is
hand-written and survives a rewrite of the block.
"""

from __future__ import annotations

import re
from pathlib import Path

from phasediff.files import atomic_write_text

__all__ = ["extract_blocks", "keep_bench_blocks", "write_block", "write_text"]

_BLOCK_RE = re.compile(
    r"<!-- bench:(?P<name>[A-Za-z0-9_-]+) -->.*?<!-- /bench:(?P=name) -->", re.DOTALL
)


def write_text(path: Path, text: str) -> None:
    """Create the parent directory, then write ``text`` atomically (``phasediff.files``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)


def extract_blocks(text: str) -> dict[str, str]:
    """Every ``<!-- bench:NAME -->…<!-- /bench:NAME -->`` block of a Markdown text, by NAME
    (markers included, in order of appearance)."""
    return {m.group("name"): m.group(0) for m in _BLOCK_RE.finditer(text)}


def keep_bench_blocks(old_text: str, new_text: str) -> str:
    """``new_text`` with every bench block of ``old_text`` that ``new_text`` lacks appended at
    the end: what ``make bench`` (bench/run.py) uses so that regenerating docs/benchmarks.md
    from scratch does not lose the sections written by ``phasediff bench`` and the bench/
    scripts."""
    present = extract_blocks(new_text)
    missing = [block for name, block in extract_blocks(old_text).items() if name not in present]
    if not missing:
        return new_text
    return new_text.rstrip("\n") + "\n\n" + "\n\n".join(missing) + "\n"


def _notes_re(name: str) -> re.Pattern[str]:
    s = re.escape(name)
    return re.compile(rf"<!-- notes:{s} -->.*?<!-- /notes:{s} -->", re.DOTALL)


def write_block(path: str | Path, name: str, body: str) -> Path:
    """Put ``body`` between the markers of block ``name`` in the Markdown file ``path``
    (created if missing; the block is appended at the end when it is not there yet).
    Hand-written notes between ``<!-- notes:NAME -->`` and ``<!-- /notes:NAME -->`` in the old
    block replace the (empty) notes placeholder of the new one. Everything outside the block
    is left as is."""
    path = Path(path)
    old = path.read_text(encoding="utf-8") if path.is_file() else ""
    block = f"<!-- bench:{name} -->\n{body.strip()}\n<!-- /bench:{name} -->"
    previous = extract_blocks(old).get(name)
    if previous is not None:
        notes = _notes_re(name).search(previous)
        if notes is not None and _notes_re(name).search(block):
            block = _notes_re(name).sub(lambda _: notes.group(0), block, count=1)
        start = old.index(previous)
        text = old[:start] + block + old[start + len(previous) :]
    else:
        text = (old.rstrip("\n") + "\n\n" if old.strip() else "") + block + "\n"
    write_text(path, text)
    return path
