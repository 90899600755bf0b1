"""What CI and production install is what was tested: every package pinned with hashes in
requirements.lock, installed by `make` with --require-hashes, at versions past known advisories."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
# Versions with published advisories that the floors in pyproject.toml must exclude.
VULNERABLE = {"aiohttp": "3.12.13", "h11": "0.15.0", "requests": "2.32.3", "urllib3": "2.4.0", "orjson": "3.9.14"}


def locked() -> dict[str, tuple[Version, list[str]]]:
    """name -> (pinned version, its hashes) from requirements.lock."""
    text = (ROOT / "requirements.lock").read_text().replace("\\\n", " ")
    pins: dict[str, tuple[Version, list[str]]] = {}
    for line in text.splitlines():
        match = re.match(r"^([A-Za-z0-9_.-]+)==(\S+)(.*)$", line.strip())
        if match:
            pins[match[1].lower().replace("_", "-")] = (Version(match[2]), re.findall(r"--hash=sha256:\w+", match[3]))
    return pins


def declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]]


def test_every_locked_package_has_hashes() -> None:
    pins = locked()
    assert len(pins) > 20
    assert all(hashes for _, hashes in pins.values()), [n for n, (_, h) in pins.items() if not h]


@pytest.mark.parametrize("requirement", declared(), ids=str)
def test_every_dependency_is_locked_within_its_range(requirement: Requirement) -> None:
    if requirement.marker is not None and not requirement.marker.evaluate():
        return
    version, _ = locked()[requirement.name.lower().replace("_", "-")]
    assert requirement.specifier.contains(version, prereleases=True)


@pytest.mark.parametrize("name, bad", sorted(VULNERABLE.items()))
def test_floors_exclude_versions_with_advisories(name: str, bad: str) -> None:
    requirement = next(r for r in declared() if r.name.lower() == name)
    assert not requirement.specifier.contains(bad)
    assert requirement.specifier.contains(str(locked()[name][0]))


def test_make_installs_from_the_lock_with_hashes() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert "--require-hashes -r requirements.lock" in makefile
    assert "--no-deps -e ." in makefile
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_aiogram_is_pinned_to_its_minor_series() -> None:
    """The bot is written against one aiogram minor release: an upgrade is a deliberate change of the pin."""
    aiogram = next(r for r in declared() if r.name.lower() == "aiogram")
    pinned = locked()["aiogram"][0]
    series = f"{pinned.major}.{pinned.minor}"
    assert aiogram.specifier.contains(f"{series}.0") and aiogram.specifier.contains(f"{series}.99")
    assert not aiogram.specifier.contains(f"{pinned.major}.{pinned.minor + 1}.0")
    assert not aiogram.specifier.contains(f"{pinned.major}.{pinned.minor - 1}.99")


def test_the_dev_tools_the_suite_and_checks_run_with_are_locked() -> None:
    dev = {
        Requirement(r).name.lower()
        for r in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["dev"]
    }
    assert {"pytest-xdist", "ruff", "mypy"} <= dev
    assert {"pytest-xdist", "ruff", "mypy"} <= set(locked())
