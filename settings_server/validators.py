"""Named validators that registry definitions refer to in their ``validators`` list.

A name may take one argument after a colon, the key of another setting of the same kind whose
current value the check compares against (``at_most_setting:PRICING_DECIMAL_PLACES``).
Each validator raises a marshmallow :class:`~marshmallow.ValidationError` where the client
expects it, as InvenTree answers: format checks under ``value`` (:func:`value_error`), checks on
the model under ``non_field_errors`` (:func:`form_error`); see :mod:`settings_server.fields`.
"""

from __future__ import annotations

import datetime
import json
import re
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from marshmallow import ValidationError


@dataclass(frozen=True)
class Context:
    """What a write is checked against besides the value itself."""

    related: Mapping[str, str] = field(default_factory=dict)  # wire values of related settings
    currencies: Mapping[str, str] = field(default_factory=dict)  # known code -> name
    choices: Sequence[str] = ()  # the valid values of a ``choices_from`` setting now


class NonFieldMessage(str):
    """An error message reported under ``non_field_errors`` instead of the field's name."""


def value_error(message: str) -> ValidationError:
    """A format error, reported under the ``value`` field."""
    return ValidationError(message)


def form_error(message: str) -> ValidationError:
    """A check on the model, reported under ``non_field_errors``."""
    return ValidationError(NonFieldMessage(message))


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


_WIDE = re.compile(r"\d{4,}")  # a field width or precision of 1000 or more


def reference_pattern(value: str, context: Context) -> None:
    try:
        fields = [
            (name, spec) for _, name, spec, _ in string.Formatter().parse(value) if name is not None
        ]
    except ValueError:
        raise value_error("Invalid reference pattern: unbalanced braces") from None
    names = {name for name, _ in fields}
    unknown = sorted(names - {"ref", "date", "?"})
    if unknown:
        raise value_error(f"Invalid reference pattern: unknown field '{unknown[0]}'")
    if "ref" not in names:
        raise value_error("Reference pattern must contain the {ref} field")
    if any(_WIDE.search(spec or "") for _, spec in fields):
        raise value_error("Invalid reference pattern: field width too large")
    try:
        value.format(ref=1, date=datetime.date(2022, 2, 22), **{"?": ""})
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise value_error(f"Invalid reference pattern: {exc}") from None


# Fields of an InvenTree part that a part-name template may use.
PART_FIELDS = frozenset({
    "IPN", "active", "assembly", "category", "component", "default_expiry", "default_location",
    "default_supplier", "description", "full_name", "is_template", "keywords", "link",
    "minimum_stock", "name", "notes", "pk", "purchaseable", "revision", "salable", "testable",
    "trackable", "units", "variant_of", "virtual",
})
# What a part-name template may contain: part fields, text, conditions, comparisons, ``~`` and
# string filters with constant arguments. No loops, calls, assignments or arithmetic, so that
# checking (and later rendering) a template can neither run away nor reach anything but a part.
_TEMPLATE_NODES = frozenset({
    "Template", "Output", "TemplateData", "If", "CondExpr", "Getattr", "Name", "Const",
    "Concat", "And", "Or", "Not", "Compare", "Operand", "Filter",
})
_TEMPLATE_FILTERS = frozenset({
    "capitalize", "default", "e", "escape", "lower", "replace", "string", "title", "trim", "upper",
})


def part_name_template(value: str, context: Context) -> None:
    import jinja2
    from jinja2 import nodes
    from jinja2.sandbox import SandboxedEnvironment

    environment = SandboxedEnvironment()
    try:
        tree = environment.parse(value)
    except jinja2.TemplateSyntaxError as exc:
        raise value_error(f"Invalid part name template: {exc.message}") from None
    for node in tree.find_all(nodes.Node):
        kind = type(node).__name__
        if kind not in _TEMPLATE_NODES:
            raise value_error(f"Part name templates cannot use '{kind}' (loops, calls, arithmetic)")
        if isinstance(node, nodes.Name) and node.name != "part":
            raise value_error(f"Unknown name in template: '{node.name}' (only part)")
        if isinstance(node, nodes.Getattr) and (
            not isinstance(node.node, nodes.Name) or node.attr not in PART_FIELDS
        ):
            raise value_error(f"Unknown part field in template: '{node.attr}'")
        if isinstance(node, nodes.Filter) and (
            node.name not in _TEMPLATE_FILTERS or node.kwargs or node.dyn_args or node.dyn_kwargs
            or not all(isinstance(arg, nodes.Const) for arg in node.args)
        ):
            raise value_error(
                f"Part name templates can use only the filters "
                f"{', '.join(sorted(_TEMPLATE_FILTERS))}, with constant arguments"
            )
    for output in tree.find_all(nodes.Output):
        for block in output.nodes:
            if not isinstance(block, (nodes.TemplateData, nodes.Getattr)) and not any(
                True for _ in block.find_all(nodes.Getattr)
            ):
                raise value_error("Each template block must reference a part field (part.<field>)")
    part = {name: "" for name in PART_FIELDS} | {"name": "Part", "IPN": "IPN", "revision": "A"}
    try:
        environment.from_string(value).render(part=part)
    except Exception as exc:  # noqa: BLE001 - any failure to render is the template's fault
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
