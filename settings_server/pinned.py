"""Pinned settings: global values fixed by the server's configuration, as InvenTree's
``INVENTREE_GLOBAL_SETTINGS``.

``SETTINGS_OVERRIDES`` is a JSON object ``{"KEY": value}``; ``SETTINGS_OVERRIDES_FILE`` names a
file holding one, as JSON, TOML or YAML (by its suffix). Both may be set: the variable's entries
win. The values are checked as writes are (:meth:`SettingsService.pin`) when the app is made, so
a bad key or value stops the start; they are never logged.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

SUFFIXES = {".json": "JSON", ".toml": "TOML", ".yaml": "YAML", ".yml": "YAML"}


class PinnedSettingsError(ValueError):
    """The pinned settings cannot be read or do not pass validation (the start stops)."""


def read(config: Mapping[str, Any]) -> dict[str, Any]:
    """The pinned ``{KEY: value}`` the configuration asks for (empty when none)."""
    pinned: dict[str, Any] = {}
    path = config.get("SETTINGS_OVERRIDES_FILE")
    if path:
        pinned.update(_object(_parse_file(Path(path)), f"SETTINGS_OVERRIDES_FILE {path}"))
    text = config.get("SETTINGS_OVERRIDES")
    if text:
        try:
            parsed = json.loads(text)
        except ValueError as exc:
            raise PinnedSettingsError(f"SETTINGS_OVERRIDES is not JSON: {exc}") from None
        pinned.update(_object(parsed, "SETTINGS_OVERRIDES"))
    return pinned


def _parse_file(path: Path) -> Any:
    form = SUFFIXES.get(path.suffix.lower())
    if form is None:
        raise PinnedSettingsError(
            f"SETTINGS_OVERRIDES_FILE {path}: name a .json, .toml, .yaml or .yml file"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PinnedSettingsError(f"SETTINGS_OVERRIDES_FILE {path}: {exc.strerror}") from None
    try:
        if form == "JSON":
            return json.loads(text)
        if form == "TOML":
            return tomllib.loads(text)
        return yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise PinnedSettingsError(f"SETTINGS_OVERRIDES_FILE {path} is not {form}: {exc}") from None


def _object(parsed: Any, where: str) -> dict[str, Any]:
    if not isinstance(parsed, dict) or not all(isinstance(key, str) for key in parsed):
        raise PinnedSettingsError(f'{where} must be an object of settings: {{"KEY": value}}')
    return parsed
