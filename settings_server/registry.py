"""The settings registry: the one place that says which settings exist and what they accept.

Definitions are data (``registry.json`` beside this module, plus an optional operator file named
by ``SETTINGS_REGISTRY_FILE`` in JSON, TOML or YAML with the same schema). The API, validation
and the OpenAPI document are all derived from the :class:`SettingsRegistry` built here.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from marshmallow import ValidationError
from marshmallow.fields import Field

from . import validators
from .fields import load_value, value_field

BUILTIN_REGISTRY = Path(__file__).with_name("registry.json")

TYPES = ("bool", "int", "float", "str", "choice")
WIRE_TYPES = {"bool": "boolean", "int": "integer"}  # everything else is "string"
DEFAULT_FACTORIES = ("uuid4",)
DEFINITION_FIELDS = {
    "key", "name", "description", "type", "default", "choices", "choices_from", "units", "min",
    "max", "validators", "protected", "hidden", "requires_restart", "default_factory",
    "model_filters", "required", "category",
}
#: Where a global setting without a ``category`` is shown on the settings page.
DEFAULT_CATEGORY = "Other"


class RegistryError(ValueError):
    """A definition that cannot work; the message names the file, the key and the problem."""


@dataclass(frozen=True)
class Choice:
    value: str
    label: str


@dataclass(frozen=True)
class SettingDefinition:
    """One setting: what it is called, what it holds and what a write must satisfy."""

    key: str
    name: str = ""
    description: str = ""
    type: str = "str"
    default: Any = ""
    choices: tuple[Choice, ...] = ()
    choices_from: str | None = None
    units: str = ""
    min: int | float | None = None
    max: int | float | None = None
    validators: tuple[str, ...] = ()
    protected: bool = False
    hidden: bool = False
    requires_restart: bool = False
    default_factory: str | None = None
    model_filters: dict | None = None
    required: bool = False
    method: str | None = None  # notification settings only
    #: the settings page's panel (InvenTree's: Server, Login, Barcodes, ...); not served by the API
    category: str = DEFAULT_CATEGORY

    @property
    def wire_type(self) -> str:
        return WIRE_TYPES.get(self.type, "string")

    @cached_property
    def wire_default(self) -> str:
        return to_wire(self.default)

    @cached_property
    def value_field(self) -> Field:
        """The marshmallow field a write of this setting is loaded with (see
        :mod:`settings_server.fields`), built when the registry is loaded."""
        return value_field(self)

    @cached_property
    def related_keys(self) -> tuple[str, ...]:
        """Other settings of the same kind that choices or validators read."""
        keys = [validators.argument(name) for name in self.validators]
        if self.choices_from == "currencies":
            keys.append("CURRENCY_CODES")
        return tuple(key for key in keys if key)


def to_wire(value: Any) -> str:
    """How a native value appears in the API ``value`` field."""
    if value is None:
        return ""
    return str(value)  # bool -> "True"/"False", int -> decimal, str unchanged


@dataclass(frozen=True)
class NotificationMethod:
    name: str
    description: str = ""
    settings: tuple[SettingDefinition, ...] = ()


@dataclass
class SettingsRegistry:
    """Every global, user and notification setting, in definition order."""

    global_settings: dict[str, SettingDefinition] = field(default_factory=dict)
    user_settings: dict[str, SettingDefinition] = field(default_factory=dict)
    notification_methods: dict[str, NotificationMethod] = field(default_factory=dict)
    currencies: dict[str, str] = field(default_factory=dict)

    @property
    def notification_settings(self) -> dict[str, SettingDefinition]:
        return {d.key: d for m in self.notification_methods.values() for d in m.settings}


def load_registry(extra_file: str | Path | None = None) -> SettingsRegistry:
    """The built-in registry, extended by ``extra_file`` if given, checked whole.

    Raises :class:`RegistryError` naming the file, the key and the problem.
    """
    registry = SettingsRegistry()
    _extend(registry, _read(BUILTIN_REGISTRY), BUILTIN_REGISTRY)
    if extra_file:
        path = Path(extra_file)
        _extend(registry, _read(path), path)
    return registry


def _read(path: Path) -> Mapping[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RegistryError(f"{path}: cannot read registry file: {exc.strerror}") from exc
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as exc:  # each parser has its own error type
        raise RegistryError(f"{path}: not valid {path.suffix.lstrip('.') or 'JSON'}: {exc}") from exc
    if not isinstance(data, Mapping):
        raise RegistryError(f"{path}: the top level must be a mapping with 'global' and/or 'user'")
    unknown = set(data) - {"api_version", "global", "user", "notification_methods", "currencies"}
    if unknown:
        raise RegistryError(f"{path}: unknown top-level entries {sorted(unknown)}")
    return data


def _extend(registry: SettingsRegistry, data: Mapping[str, Any], path: Path) -> None:
    registry.currencies.update(data.get("currencies") or {})
    taken = {**registry.global_settings, **registry.user_settings, **registry.notification_settings}
    for kind, target in (("global", registry.global_settings), ("user", registry.user_settings)):
        for entry in _entries(data, kind, path):
            definition = _definition(entry, path, registry)
            if definition.key in target:
                raise RegistryError(f"{path}: {definition.key}: duplicate {kind} setting")
            target[definition.key] = definition
    for entry in _entries(data, "notification_methods", path):
        name = entry.get("method") if isinstance(entry, Mapping) else None
        if not isinstance(name, str) or not name:
            raise RegistryError(f"{path}: notification method without a 'method' name: {entry!r}")
        if name in registry.notification_methods:
            raise RegistryError(f"{path}: {name}: duplicate notification method")
        settings = []
        for setting in entry.get("settings") or ():
            definition = _definition(setting, path, registry, method=name)
            if definition.key in taken or any(s.key == definition.key for s in settings):
                raise RegistryError(f"{path}: {definition.key}: duplicate notification setting")
            settings.append(definition)
        registry.notification_methods[name] = NotificationMethod(
            name, str(entry.get("description", "")), tuple(settings)
        )


def _entries(data: Mapping[str, Any], section: str, path: Path) -> Iterable[Any]:
    entries = data.get(section) or []
    if not isinstance(entries, list):
        raise RegistryError(f"{path}: '{section}' must be a list of definitions")
    return entries


def _definition(
    entry: Any, path: Path, registry: SettingsRegistry, method: str | None = None
) -> SettingDefinition:
    if not isinstance(entry, Mapping) or not isinstance(entry.get("key"), str):
        raise RegistryError(f"{path}: a definition needs a string 'key': {entry!r}")
    key = entry["key"]

    def problem(message: str) -> RegistryError:
        return RegistryError(f"{path}: {key}: {message}")

    if key != key.upper() or not key.replace("_", "").isalnum():
        raise problem("keys are upper case letters, digits and underscores")
    unknown = set(entry) - DEFINITION_FIELDS
    if unknown:
        raise problem(f"unknown fields {sorted(unknown)}")
    kind = entry.get("type", "str")
    if kind not in TYPES:
        raise problem(f"unknown type {kind!r}; use one of {', '.join(TYPES)}")
    choices = entry.get("choices")
    if choices is not None and (
        not isinstance(choices, list)
        or not all(isinstance(c, Mapping) and isinstance(c.get("value"), str) for c in choices)
    ):
        raise problem("choices must be a list of {value, label} with string values")
    choices_from = entry.get("choices_from")
    if choices_from not in (None, "currencies"):
        raise problem(f"unknown choices_from {choices_from!r}; the only source is 'currencies'")
    if kind == "choice" and not choices and not choices_from:
        raise problem("a choice setting needs choices or choices_from")
    for name in entry.get("validators") or ():
        if not validators.exists(name):
            raise problem(f"unknown validator {name!r}; known: {', '.join(validators.NAMES)}")
    category = entry.get("category", DEFAULT_CATEGORY)
    if not isinstance(category, str) or not category.strip() or len(category) > 64:
        raise problem("category must be a non-empty name of at most 64 characters")
    factory = entry.get("default_factory")
    if factory not in (None, *DEFAULT_FACTORIES):
        raise problem(f"unknown default_factory {factory!r}")
    try:
        definition = SettingDefinition(
            key=key,
            name=str(entry.get("name", "")),
            description=str(entry.get("description", "")),
            type=kind,
            default=entry.get("default", False if kind == "bool" else ""),
            choices=tuple(Choice(c["value"], str(c.get("label", c["value"]))) for c in choices or ()),
            choices_from=choices_from,
            units=str(entry.get("units", "")),
            min=entry.get("min"),
            max=entry.get("max"),
            validators=tuple(entry.get("validators") or ()),
            protected=bool(entry.get("protected", False)),
            hidden=bool(entry.get("hidden", False)),
            requires_restart=bool(entry.get("requires_restart", False)),
            default_factory=factory,
            model_filters=entry.get("model_filters") if isinstance(entry.get("model_filters"), dict) else None,
            required=bool(entry.get("required", False)),
            method=method,
            category=category.strip(),
        )
    except (TypeError, ValueError) as exc:
        raise problem(str(exc)) from exc
    _check_default(definition, registry, problem)
    return definition


def _check_default(definition: SettingDefinition, registry: SettingsRegistry, problem) -> None:
    """The default must pass the definition's own type, bounds and choices."""
    if definition.type == "bool" and not isinstance(definition.default, bool):
        raise problem(f"default {definition.default!r} is not a boolean")
    if definition.type == "int" and (
        isinstance(definition.default, bool) or not isinstance(definition.default, int)
    ):
        raise problem(f"default {definition.default!r} is not an integer")
    context = validators.Context(currencies=registry.currencies, choices=list(registry.currencies))
    try:
        load_value(definition.value_field, definition.wire_default, context)
    except ValidationError as exc:
        raise problem(f"default {definition.default!r} is invalid: {exc.messages}") from exc
