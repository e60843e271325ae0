"""The marshmallow field and schema that check a setting write, built from its definition.

A write's ``value`` goes through one field (:func:`value_field`), in this order:

1. sanitised: arrays and objects are refused, ``null`` is ``""``, other JSON scalars are
   written as Python prints them (``true`` -> ``"True"``); text loses control characters, bidi
   marks and newlines, is trimmed, must hold no HTML markup and at most :data:`MAX_LENGTH`
   characters;
2. converted by the setting's type (booleans from :data:`TRUTHY`/:data:`FALSY`, integers,
   finite numbers), with InvenTree's messages;
3. checked by the definition's named validators (:mod:`settings_server.validators`) and bounds,
   all of them, every failure reported;
4. if all passed, checked against the setting's choices (static, or ``choices_from``);

and loads as the string that is stored (``True``, ``12``). The registry builds each
definition's field when it is loaded; one schema, :class:`SettingWrite`, loads a write body
``{"value": ...}`` with the field of the setting being written (:func:`load_value`).

Format errors answer under ``value``; checks InvenTree runs on the model (bounds, choices, most
named validators) answer under ``non_field_errors`` (docs/contract.md §5.3).
Such messages are marked :class:`~settings_server.validators.NonFieldMessage`;
:class:`SettingWrite` files them where they belong, so every error leaves the schema as the
DRF body the client sees.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate
from marshmallow.experimental.context import Context

from . import validators
from .validators import NonFieldMessage

MAX_LENGTH = 2000
TRUTHY = frozenset({"1", "y", "yes", "t", "true", "ok", "on"})
FALSY = frozenset({"0", "n", "no", "f", "false", "off", ""})
NON_FIELD_ERRORS = "non_field_errors"



@dataclass(frozen=True)
class Write:
    """A write being checked: the setting's field, and what its checks look at besides the
    value."""

    field: fields.Field
    context: validators.Context


#: The write :class:`SettingWrite` is loading (see :func:`load_value`).
WriteContext = Context[Write]

# Control characters (but not newline, removed on its own below), DEL and C1, bidi marks.
_STRIPPED = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\n]")
# Markup an HTML sanitiser would remove: tags, comments, declarations, processing instructions.
_MARKUP = re.compile(r"</?[A-Za-z][^<>]*>|<!--|<![A-Za-z]|<\?")


def clean_text(raw: str) -> str:
    """``raw`` without control characters, bidi marks and newlines, trimmed; markup an HTML
    sanitiser would strip raises :class:`ValidationError` (bare ``<``, ``>``, ``&`` pass)."""
    text = _STRIPPED.sub("", raw).strip()
    if _MARKUP.search(text):
        raise ValidationError("Remove HTML tags from this value")
    return text


class _LengthWithCount(validate.Length):
    """:class:`~marshmallow.validate.Length` whose message may also name the length found."""

    def _format_error(self, value: Any, message: str) -> str:
        return (self.error or message).format(
            input=value, min=self.min, max=self.max, equal=self.equal, length=len(value)
        )


_LENGTH = _LengthWithCount(
    max=MAX_LENGTH, error="Ensure this value has at most {max} characters (it has {length})."
)
_NOT_A_STRING = "Not a valid string."


def non_field(check: Callable[[Any], Any]) -> Callable[[Any], None]:
    """``check`` (a marshmallow validator) with its messages reported under
    ``non_field_errors``."""

    def checked(value: Any) -> None:
        try:
            check(value)
        except ValidationError as exc:
            raise ValidationError([NonFieldMessage(m) for m in exc.messages]) from None

    return checked


class _Named:
    """A named validator of the registry, run with the write's :data:`WriteContext`."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, value: Any) -> None:
        validators.run(self.name, value, WriteContext.get().context)

    def __repr__(self) -> str:
        return f"<validator {self.name}>"


class _SettingValue(fields.Field):
    """Steps 1 and 4 of the module docstring around a marshmallow field class that does step 2
    (mixed in before it) and its validators, step 3."""

    def __init__(
        self, *, choices: Sequence[str] = (), choices_from: str | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.static_choices = tuple(choices)
        self.choices_from = choices_from

    def deserialize(self, value: Any, attr: str | None = None, data: Any = None, **kwargs: Any):
        native = super().deserialize("" if value is None else value, attr, data, **kwargs)
        canonical = str(native)  # True -> "True", 12 -> "12"
        if self.choices_from:
            choices = WriteContext.get().context.choices
        else:
            choices = self.static_choices
        if choices:
            non_field(validate.OneOf(choices, error="Chosen value is not a valid option"))(
                canonical
            )
        return canonical

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        return super()._deserialize(self.prepare(_sanitise(value)), attr, data, **kwargs)

    def prepare(self, text: str) -> str:
        """The sanitised text as the conversion of step 2 reads it."""
        return text.strip()


def _sanitise(raw: Any) -> str:
    if isinstance(raw, (list, dict)):
        raise ValidationError(_NOT_A_STRING)
    if not isinstance(raw, str):
        if isinstance(raw, float) and not math.isfinite(raw):
            raise ValidationError(_NOT_A_STRING)
        return str(raw)  # JSON scalars as Python prints them: true -> "True", 12.5 -> "12.5"
    text = clean_text(raw)
    _LENGTH(text)
    return text


class BooleanValue(_SettingValue, fields.Boolean):
    def prepare(self, text: str) -> str:
        return text.strip().lower()


class IntegerValue(_SettingValue, fields.Integer):
    pass


class NumberValue(_SettingValue, fields.Float):
    pass


class TextValue(_SettingValue, fields.String):
    def prepare(self, text: str) -> str:
        return text


def value_field(definition: Any) -> fields.Field:
    """The field that checks a write of ``definition`` (a
    :class:`~settings_server.registry.SettingDefinition`) and loads the stored string."""
    checks: list[Callable[[Any], Any]] = [_Named(name) for name in definition.validators]
    if definition.min is not None:
        checks.append(non_field(validate.Range(
            min=definition.min, error="Ensure this value is greater than or equal to {min}."
        )))
    if definition.max is not None:
        checks.append(non_field(validate.Range(
            max=definition.max, error="Ensure this value is less than or equal to {max}."
        )))
    options: dict[str, Any] = {
        "required": True,
        "validate": checks,
        "choices": [choice.value for choice in definition.choices],
        "choices_from": definition.choices_from,
    }
    if definition.type == "bool":
        return BooleanValue(
            truthy=TRUTHY, falsy=FALSY, error_messages={"invalid": "Value must be a boolean"},
            **options,
        )
    if definition.type == "int":
        return IntegerValue(error_messages={"invalid": "Value must be an integer"}, **options)
    if definition.type == "float":
        number = "Value must be a number"
        return NumberValue(
            allow_nan=False, error_messages={"invalid": number, "special": number}, **options
        )
    return TextValue(**options)


class WireValue(fields.String):
    """The ``value`` of a write body as sent, any JSON: a string on the wire, it is checked and
    converted by the setting's own :class:`SettingWrite`, which knows its type."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        return value


class _FieldOfTheWrite(fields.Field):
    """:class:`SettingWrite`'s ``value``: loaded by the field of the setting being written."""

    def deserialize(self, value: Any, attr: str | None = None, data: Any = None, **kwargs: Any):
        return WriteContext.get().field.deserialize(value, attr, data, **kwargs)


class SettingWrite(Schema):
    """``{"value": ...}`` for the setting in :data:`WriteContext`; loads ``{"value": stored
    string}``. Raises :class:`ValidationError` whose ``messages`` are the DRF body of the 400."""

    value = _FieldOfTheWrite(required=True)

    def handle_error(self, error: ValidationError, data: Any, **kwargs: Any) -> None:
        body: dict[str, list[str]] = {}
        for message in error.messages.get("value", ()):  # type: ignore[union-attr]
            field = NON_FIELD_ERRORS if isinstance(message, NonFieldMessage) else "value"
            body.setdefault(field, []).append(str(message))
        raise ValidationError(body) from None


_SETTING_WRITE = SettingWrite()


def load_value(field: fields.Field, value: Any, context: validators.Context) -> str:
    """The string to store for a write of ``value`` to the setting whose field (from
    :func:`value_field`) is ``field``; raises :class:`ValidationError` with the 400 body."""
    with WriteContext(Write(field, context)):
        return _SETTING_WRITE.load({"value": value})["value"]
