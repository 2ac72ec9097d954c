"""What `pip install .` ships: every package of the source tree, and the migrations of every backend."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_package_in_the_tree_is_installed() -> None:
    # pyproject.toml lists the packages by hand (migrations/ is mapped into archiver.migrations), so
    # a new subpackage missing from the list would install without it and fail only on import.
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    in_tree = {
        ".".join(init.parent.relative_to(ROOT).parts) for init in (ROOT / "archiver").rglob("__init__.py")
    } | {"archiver.migrations"}
    assert listed == in_tree


def test_every_backends_migrations_ship_as_package_data() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    patterns = config["package-data"]["archiver.migrations"]
    migrations = ROOT / config["package-dir"]["archiver.migrations"]
    shipped = {p for pattern in patterns for p in migrations.glob(pattern)}
    assert shipped == set(migrations.rglob("*.sql")) and shipped


def test_the_web_uis_templates_and_assets_ship_as_package_data() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    ui = ROOT / "archiver" / "web" / "ui"
    shipped = {p for pattern in config["package-data"]["archiver.web.ui"] for p in ui.glob(pattern)}
    assets = {p for folder in ("templates", "static") for p in (ui / folder).rglob("*") if p.is_file()}
    assert shipped == assets and any(p.suffix == ".html" for p in shipped) and any(p.suffix == ".css" for p in shipped)
