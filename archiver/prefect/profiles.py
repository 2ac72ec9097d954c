"""Prefect's profiles, read the way the Prefect CLI reads them (prefect/settings/sources.py).

`prefect cloud login` and `prefect config set` write the API URL and key into a profile, not the
environment; reading the active profile lets the archiver work wherever `prefect` commands do.
The file is `$PREFECT_PROFILES_PATH`, else `$PREFECT_HOME/profiles.toml` (PREFECT_HOME defaults to
~/.prefect); the profile is `$PREFECT_PROFILE`, else the file's `active` key.
"""

from __future__ import annotations

import logging
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from archiver.errors import ConfigError

DEFAULT_PREFECT_HOME = "~/.prefect"

log = logging.getLogger("archiver.prefect.profiles")


@dataclass(frozen=True)
class Profile:
    """The active profile's settings (PREFECT_* names), and where they came from."""

    name: str | None
    path: Path
    settings: Mapping[str, Any] = field(default_factory=dict, repr=False)


def prefect_home(environ: Mapping[str, str]) -> Path:
    """Prefect's home folder: $PREFECT_HOME, else ~/.prefect (its profiles, results and our archive)."""
    return Path(environ.get("PREFECT_HOME") or DEFAULT_PREFECT_HOME).expanduser()


def profiles_path(environ: Mapping[str, str]) -> Path:
    if environ.get("PREFECT_PROFILES_PATH"):
        return Path(environ["PREFECT_PROFILES_PATH"]).expanduser()
    return prefect_home(environ) / "profiles.toml"


def active_profile(environ: Mapping[str, str]) -> Profile:
    """The active profile; empty when there is no profiles file or no such profile in it."""
    path = profiles_path(environ)
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return Profile(None, path)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read Prefect profiles file {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        # Prefect warns and goes on without profiles; so do we (settings may come from elsewhere).
        log.warning("ignoring Prefect profiles file %s: it is not valid TOML (%s)", path, exc)
        return Profile(None, path)
    name = environ.get("PREFECT_PROFILE") or document.get("active")
    profiles = document.get("profiles", {})
    if not isinstance(name, str) or not isinstance(profiles, dict) or not isinstance(profiles.get(name), dict):
        return Profile(name if isinstance(name, str) else None, path)
    return Profile(name, path, profiles[name])
