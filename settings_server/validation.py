"""The write pipeline of SPEC §5.3 (with the §14 differences): sanitise, coerce, check.

Every failure is a :class:`ValidationFailed` carrying the exact DRF-shaped body the client sees,
``{"value": [...]}`` or ``{"non_field_errors": [...]}``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

from . import validators
from .validators import ValidationFailed, form_error, value_error

MAX_LENGTH = 2000
TRUTHY = frozenset({"1", "y", "yes", "t", "true", "ok", "on"})
FALSY = frozenset({"0", "n", "no", "f", "false", "off", ""})

# Control characters (but not newline, removed on its own below), DEL and C1, bidi marks.
_STRIPPED = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\n]")
# Markup an HTML sanitiser would remove: tags, comments, declarations, processing instructions.
_MARKUP = re.compile(r"</?[A-Za-z][^<>]*>|<!--|<![A-Za-z]|<\?")


def sanitise(raw: Any) -> str:
    """Steps 1-3: a body ``value`` as the stored string (before type normalisation)."""
    if isinstance(raw, (list, dict)):
        raise value_error("Not a valid string.")
    if raw is None:
        return ""
    if not isinstance(raw, str):
        if isinstance(raw, float) and not math.isfinite(raw):
            raise value_error("Not a valid string.")
        return str(raw)  # JSON scalars as Python prints them: true -> "True", 12.5 -> "12.5"
    text = clean_text(raw)
    if len(text) > MAX_LENGTH:
        raise value_error(
            f"Ensure this value has at most {MAX_LENGTH} characters (it has {len(text)})."
        )
    return text


def clean_text(raw: str) -> str:
    """``raw`` without control characters, bidi marks and newlines, trimmed; markup an HTML
    sanitiser would strip raises :class:`ValidationFailed` (bare ``<``, ``>``, ``&`` pass)."""
    text = _STRIPPED.sub("", raw).strip()
    if _MARKUP.search(text):
        raise value_error("Remove HTML tags from this value")
    return text


def normalise(
    definition,
    text: str,
    choices: Sequence[str],
    context: validators.Context | None = None,
) -> str:
    """Steps 4-7: the canonical stored string for ``text``, or :class:`ValidationFailed`.

    ``choices`` are the currently valid choice values (empty: anything goes); ``context`` gives
    the values of related settings and the known currencies to the named validators.
    """
    native = _coerce(definition.type, text)
    errors: list[str] = []
    if definition.min is not None and native < definition.min:
        errors.append(f"Ensure this value is greater than or equal to {definition.min}.")
    if definition.max is not None and native > definition.max:
        errors.append(f"Ensure this value is less than or equal to {definition.max}.")
    body: dict[str, list[str]] = {}
    for name in definition.validators:
        try:
            validators.run(name, native, context or validators.Context())
        except ValidationFailed as exc:
            for field, messages in exc.body.items():
                body.setdefault(field, []).extend(messages)
    if errors:
        body.setdefault("non_field_errors", []).extend(errors)
    if body:
        raise ValidationFailed(body)
    canonical = _canonical(native)
    if choices and canonical not in choices:
        raise form_error("Chosen value is not a valid option")
    return canonical


def _coerce(kind: str, text: str) -> Any:
    folded = text.strip()
    if kind == "bool":
        if folded.lower() in TRUTHY:
            return True
        if folded.lower() in FALSY:
            return False
        raise value_error("Value must be a boolean")
    if kind == "int":
        try:
            return int(folded)
        except ValueError:
            raise value_error("Value must be an integer") from None
    if kind == "float":
        try:
            number = float(folded)
        except ValueError:
            raise value_error("Value must be a number") from None
        if not math.isfinite(number):
            raise value_error("Value must be a number")
        return number
    return text


def _canonical(native: Any) -> str:
    return str(native)
