"""Named validators that registry definitions refer to in their ``validators`` list.

A name may take one argument after a colon, the key of another setting of the same kind whose
current value the check compares against (``at_most_setting:PRICING_DECIMAL_PLACES``).
Each validator raises :class:`ValidationFailed` with the envelope SPEC §5.3 gives it: format
checks answer under ``value``, plain checks under ``non_field_errors``.
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Context:
    """What a validator may look at besides the value itself."""

    related: Mapping[str, str] = field(default_factory=dict)  # wire values of related settings
    currencies: Mapping[str, str] = field(default_factory=dict)  # known code -> name


class ValidationFailed(Exception):
    """A rejected write; ``body`` is the response body."""

    def __init__(self, body: dict[str, list[str]]) -> None:
        super().__init__(body)
        self.body = body


def value_error(message: str) -> ValidationFailed:
    """A format error, reported under the ``value`` field."""
    return ValidationFailed({"value": [message]})


def form_error(message: str) -> ValidationFailed:
    """A plain validator's error, reported under ``non_field_errors``."""
    return ValidationFailed({"non_field_errors": [message]})


_URL = re.compile(
    r"^(?:https?|ftps?)://"
    r"(?:[^\s:@/]+(?::[^\s@/]*)?@)?"  # user:password@
    r"(?:localhost|\d{1,3}(?:\.\d{1,3}){3}|\[[0-9A-Fa-f:.]+\]"  # localhost, IPv4, IPv6
    r"|(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)"  # a host name, TLD optional
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?)"
    r"(?::\d{1,5})?(?:[/?#]\S*)?$",
    re.IGNORECASE,
)


def url(value: str, context: Context) -> None:
    if value and not _URL.match(value):
        raise form_error("Enter a valid URL.")


def currency_codes(value: str, context: Context) -> None:
    seen: set[str] = set()
    for part in value.split(","):
        code = part.strip().upper()
        if not code:
            continue
        if code not in context.currencies:
            raise form_error(f"Invalid currency code: '{code}'")
        if code in seen:
            raise form_error(f"Duplicate currency code: '{code}'")
        seen.add(code)
    if not seen:
        raise form_error("No valid currency codes provided")


def reference_pattern(value: str, context: Context) -> None:
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(value) if name is not None]
    except ValueError:
        raise value_error("Invalid reference pattern: unbalanced braces") from None
    unknown = sorted({name for name in fields if name not in ("ref", "date", "?")})
    if unknown:
        raise value_error(f"Invalid reference pattern: unknown field '{unknown[0]}'")
    if "ref" not in fields:
        raise value_error("Reference pattern must contain the {ref} field")


# Fields of an InvenTree part that a part-name template may use.
PART_FIELDS = frozenset({
    "IPN", "active", "assembly", "category", "component", "default_expiry", "default_location",
    "default_supplier", "description", "full_name", "is_template", "keywords", "link",
    "minimum_stock", "name", "notes", "pk", "purchaseable", "revision", "salable", "testable",
    "trackable", "units", "variant_of", "virtual",
})
_TEMPLATE_BLOCK = re.compile(r"{{(.*?)}}", re.DOTALL)
_PART_FIELD = re.compile(r"\bpart\.(\w+)")


def part_name_template(value: str, context: Context) -> None:
    import jinja2
    import jinja2.sandbox

    for block in _TEMPLATE_BLOCK.findall(value):
        names = _PART_FIELD.findall(block)
        if not names:
            raise value_error("Each template block must reference a part field (part.<field>)")
        for name in names:
            if name not in PART_FIELDS:
                raise value_error(f"Unknown part field in template: '{name}'")
    part = {name: "" for name in PART_FIELDS} | {"name": "Part", "IPN": "IPN", "revision": "A"}
    try:
        jinja2.sandbox.SandboxedEnvironment().from_string(value).render(part=part)
    except jinja2.TemplateError as exc:
        raise value_error(f"Invalid part name template: {exc}") from None


_ICON = re.compile(r"^ti:[a-z0-9]+(?:-[a-z0-9]+)*:(?:outline|filled)$")


def icon(value: str, context: Context) -> None:
    if value and not _ICON.match(value):
        raise form_error(f"Invalid icon '{value}': use 'ti:<name>:<outline|filled>'")


def json_text(value: str, context: Context) -> None:
    try:
        json.loads(value)
    except ValueError:
        raise value_error("Value does not pass validation checks") from None


_MAIL_DOMAIN = re.compile(r"^@[a-zA-Z0-9.\-_]+$")


def mail_domains(value: str, context: Context) -> None:
    if not value:
        return
    for entry in value.split(","):
        entry = entry.strip()
        if not entry or not _MAIL_DOMAIN.match(entry):
            raise form_error(f"Invalid domain name: '{entry}'")


def _related_int(context: Context, key: str) -> int | None:
    try:
        return int(context.related[key])
    except (KeyError, ValueError):
        return None  # unknown or unparseable: nothing to compare against


def at_most_setting(value: int, context: Context, key: str) -> None:
    other = _related_int(context, key)
    if other is not None and value > other:
        raise form_error(f"Ensure this value is less than or equal to {other} ({key}).")


def at_least_setting(value: int, context: Context, key: str) -> None:
    other = _related_int(context, key)
    if other is not None and value < other:
        raise form_error(f"Ensure this value is greater than or equal to {other} ({key}).")


_PLAIN: dict[str, Callable[[Any, Context], None]] = {
    "url": url,
    "currency_codes": currency_codes,
    "reference_pattern": reference_pattern,
    "part_name_template": part_name_template,
    "icon": icon,
    "json": json_text,
    "mail_domains": mail_domains,
}
_WITH_SETTING: dict[str, Callable[[Any, Context, str], None]] = {
    "at_most_setting": at_most_setting,
    "at_least_setting": at_least_setting,
}
NAMES = tuple(_PLAIN) + tuple(f"{name}:KEY" for name in _WITH_SETTING)


def _split(name: str) -> tuple[str, str | None]:
    base, _, argument = name.partition(":")
    return base, argument or None


def exists(name: str) -> bool:
    base, argument = _split(name)
    return (base in _PLAIN and argument is None) or (base in _WITH_SETTING and bool(argument))


def argument(name: str) -> str | None:
    """The setting key a validator compares against, if any."""
    return _split(name)[1]


def run(name: str, value: Any, context: Context) -> None:
    base, arg = _split(name)
    if arg is None:
        _PLAIN[base](value, context)
    else:
        _WITH_SETTING[base](value, context, arg)
