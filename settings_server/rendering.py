"""Responses as DRF renders them, and setting objects pre-rendered to JSON once.

Everything in a served setting but its pk, value, owner and dynamic choices comes from the
registry, so it is encoded once per definition instead of on every request, with slots for
what changes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from flask import Response

_MARK = "\ue000"  # a private-use character: never part of registry text
_SLOT = re.compile(f'"{_MARK}(\\w+){_MARK}"')
encode_string = json.encoder.encode_basestring  # JSON string literal, raw UTF-8


def compact(value: Any) -> str:
    """JSON as DRF renders it: no spaces, raw UTF-8."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


ALLOW_ORDER = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")


def allow_header(methods) -> str:
    """An ``Allow`` header value in DRF's order."""
    return ", ".join(method for method in ALLOW_ORDER if method in methods)


def json_response(body: Any, status: int = 200, *, spaced: bool = False) -> Response:
    """A JSON response as DRF renders it: compact and raw UTF-8, or as Django's JsonResponse
    (``spaced``: spaces after separators, ASCII escapes). The content type carries no charset."""
    return raw_json_response(json.dumps(body) if spaced else compact(body), status)


def raw_json_response(text: str | bytes, status: int = 200) -> Response:
    """A response whose body is JSON text already."""
    return JSONResponse(text, status=status, mimetype="application/json")


class JSONResponse(Response):
    """A JSON answer, whose headers go out as they are when werkzeug has nothing to fix.

    On the way out werkzeug copies a response's headers, checking every value again, to fix
    a relative ``Location`` or ``Content-Location``, drop ``Content-Length`` for 1xx, 204 and
    304, or add a missing one. A JSON answer has its length from the start (``set_data``)
    and is not a redirect, so there is usually nothing to fix; when something is, werkzeug
    does it. Measured with ``bench/inprocess.py --instructions`` (Redis): a global detail
    876k instructions with the copy, 830k without; the global list 997k, 956k."""

    def get_wsgi_headers(self, environ: Any) -> Any:
        status = self.status_code
        if status >= 200 and status not in (204, 304):
            length = False
            for key, _value in self.headers:
                name = key.lower()
                if name == "content-length":
                    length = True
                elif name in ("location", "content-location"):
                    break
            else:
                if length:
                    return self.headers
        return super().get_wsgi_headers(environ)


def slot(name: str) -> str:
    """A placeholder to put in a template's fields; filled by :meth:`RowTemplate.render`."""
    return f"{_MARK}{name}{_MARK}"


class Row(NamedTuple):
    """A served setting: what lists sort and search on, and its JSON text."""

    pk: int
    key: str
    name: str
    json: str


def json_array(rows: Sequence[Row]) -> str:
    """The JSON array of ``rows``."""
    return f"[{','.join([row.json for row in rows])}]"


class FixedRows(list[Row]):
    """Rows that are never changed once made (served again while what they show is
    unchanged): what is rendered from them (the whole array, a page) is encoded once, when
    first asked for, and kept with them (up to :attr:`KEPT` renderings)."""

    KEPT = 64
    _rendered: dict[Any, bytes] | None = None

    def rendered(self, key: Any, render: Callable[[], str]) -> bytes:
        """``render()`` UTF-8, made once for each ``key`` (which names all it depends on
        besides these rows)."""
        if self._rendered is None:
            self._rendered = {}
        try:
            return self._rendered[key]
        except KeyError:
            pass
        if len(self._rendered) >= self.KEPT:
            self._rendered.clear()
        text = self._rendered[key] = render().encode()
        return text

    def array(self) -> bytes:
        """:func:`json_array` of these rows, UTF-8."""
        return self.rendered(None, lambda: json_array(self))


class RowTemplate:
    """The compact JSON of ``fields``, with each :func:`slot` left open for raw JSON text."""

    def __init__(self, fields: dict[str, Any]) -> None:
        self._parts = _SLOT.split(compact(fields))  # literal, slot name, literal, ...
        self._slots = range(1, len(self._parts), 2)

    def render(self, slots: dict[str, str]) -> str:
        """The JSON text with every slot filled from ``slots`` (which may hold more)."""
        parts = self._parts.copy()
        for i in self._slots:
            parts[i] = slots[parts[i]]
        return "".join(parts)
