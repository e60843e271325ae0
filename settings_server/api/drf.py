"""flask-smorest as the InvenTree (Django REST framework) clients expect it.

flask-smorest parses arguments with webargs and answers 422 ``{"errors": ...}``, paginates with
``page``/``page_size`` and an ``X-Pagination`` header. DRF clients send bodies as JSON, form or
multipart under one set of rules, page with ``limit``/``offset`` and read the page in the body,
and expect 400 with the field errors as the whole body. Those wire shapes live here, in
subclasses of the libraries' own extension points:

* :class:`Parser` (webargs): a ``body`` location read as DRF's parsers read a request, a fast
  path for requests without a query string, and every validation error raised as the bare
  ``ValidationError`` that the app's one handler answers (``errors.init_app``);
* :class:`LimitOffsetParameters` and :class:`RowPage` (flask-smorest ``PaginationParameters``
  and ``Page``), and :meth:`Blueprint.paginate`, which parses ``limit``/``offset`` with
  :class:`LimitOffset` and puts the page in the body: a bare array without a positive
  ``limit``, else ``{"count","next","previous","results"}`` with DRF's URLs.
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, NoReturn
from urllib.parse import parse_qsl, urlencode

import flask_smorest
from flask import Request, Response, request
from flask_smorest.pagination import Page, PaginationParameters
from marshmallow import EXCLUDE, Schema, ValidationError, fields, post_load
from webargs.flaskparser import FlaskParser

from ..errors import fail, fail_detail
from ..rendering import FixedRows, Row, compact, json_array, raw_json_response

FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
BODY = "body"  # the location of a write body: JSON, form or multipart, by content type


class Parser(FlaskParser):
    """webargs' Flask parser with DRF's body parsing and error shape."""

    DEFAULT_VALIDATION_STATUS = 400
    __location_map__: ClassVar[dict[str, str]] = {**FlaskParser.__location_map__, BODY: "load_body"}

    #: Distinct query strings whose loaded arguments are kept, per schema.
    KEPT_QUERIES = 256

    def __init__(self) -> None:
        super().__init__()
        self._loaded: dict[tuple[int, bytes], Any] = {}

    def parse(self, argmap: Any, req: Request | None = None, *, location: str | None = None,
              **kwargs: Any) -> Any:
        """Query arguments are a function of the query string alone, so each distinct one is
        loaded once (up to :data:`KEPT_QUERIES`; an invalid one raises every time): list GETs
        repeat theirs, and without a query string there is nothing to parse at all. Measured
        in-process (best of 7 x 5,000): loading ``?limit=25&offset=25`` anew costs 30 us for
        ``LimitOffset`` and 40 us for ``ListQuery``; kept, 3 us each."""
        if location != "query" or not isinstance(argmap, Schema):
            return super().parse(argmap, req, location=location, **kwargs)
        key = (id(argmap), request.query_string)
        try:
            return self._loaded[key]
        except KeyError:
            pass
        if request.query_string:
            loaded = super().parse(argmap, req, location=location, **kwargs)
        else:
            loaded = argmap.load({})
        if len(self._loaded) >= self.KEPT_QUERIES:
            self._loaded.clear()
        self._loaded[key] = loaded
        return loaded

    def load_body(self, req: Request, schema: Schema) -> Any:
        """The body as DRF reads it: form and multipart as fields, anything else JSON; no body
        is no fields. 415 for another content type, 400 for bad JSON or JSON that is not an
        object."""
        mimetype = req.mimetype
        if mimetype in FORM_TYPES:
            return self.load_form(req, schema)
        body = req.get_data(cache=True)
        if not body and not mimetype:
            return {}
        if mimetype != "application/json" and not mimetype.endswith("+json"):
            fail_detail(415, f'Unsupported media type "{req.content_type}" in request.')
        if not body:
            return {}
        try:
            data = json.loads(body)
        except ValueError as exc:
            fail_detail(400, f"JSON parse error - {exc}")
        except RecursionError:
            fail_detail(400, "JSON parse error - nested too deeply")
        if not isinstance(data, dict):
            fail(400, {"non_field_errors": [
                f"Invalid data. Expected a dictionary, but got {type(data).__name__}."
            ]})
        return data

    def handle_error(self, error: ValidationError, req: Request, schema: Schema, *,
                     error_status_code: int | None, error_headers: Any) -> NoReturn:
        """The field errors without webargs' location level: the body DRF answers."""
        (messages,) = error.messages.values()  # type: ignore[union-attr]
        raise ValidationError(messages) from None


class LimitOffsetParameters(PaginationParameters):
    """``limit`` rows from ``offset``; ``limit`` ``None``: the whole list, unpaginated."""

    def __init__(self, limit: int | None, offset: int) -> None:
        super().__init__(page=None, page_size=limit)
        self.offset = offset

    @property
    def first_item(self) -> int:
        return self.offset


class PositiveIntegerOrNone(fields.Integer):
    """InvenTree's lenient reading: anything but a positive integer is ``None``, not an
    error."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int | None:
        try:
            number = super()._deserialize(value, attr, data, **kwargs)
        except ValidationError:
            return None
        return number if number > 0 else None


class LimitOffset(Schema):
    """DRF's ``LimitOffsetPagination`` arguments."""

    class Meta:
        unknown = EXCLUDE

    limit = PositiveIntegerOrNone(load_default=None, metadata={
        "description": "Page size; without a positive limit the whole list is a bare array."
    })
    offset = PositiveIntegerOrNone(load_default=None, metadata={
        "description": "Index of the first row of the page."
    })

    @post_load
    def parameters(self, data: dict[str, Any], **_: Any) -> LimitOffsetParameters:
        return LimitOffsetParameters(data["limit"], data["offset"] or 0)


class RowPage(Page):
    """One page of pre-rendered rows, as DRF's ``LimitOffsetPagination`` renders it."""

    page_params: LimitOffsetParameters

    def __init__(self, collection: Sequence[Row], page_params: LimitOffsetParameters) -> None:
        # Page counts the items into its parameters: a copy, as the parser keeps the loaded one
        super().__init__(collection, copy.copy(page_params))

    def response(self) -> Response:
        params = self.page_params
        limit, offset, count = params.page_size, params.offset, self.item_count
        head = {
            "count": count,
            "next": _page_url(limit, offset + limit) if offset + limit < count else None,
            "previous": _page_url(limit, offset - limit) if offset > 0 else None,
        }

        def render() -> str:
            return f'{compact(head)[:-1]},"results":{json_array(self.items)}}}'

        rows = self.collection
        if isinstance(rows, FixedRows):  # the same page of the same rows: made once
            return raw_json_response(rows.rendered((limit, offset, *head.values()), render))
        return raw_json_response(render())


#: The environ entries a page URL is made from (with ``limit`` and ``offset``).
_URL_PARTS = ("wsgi.url_scheme", "HTTP_HOST", "SERVER_NAME", "SERVER_PORT", "SCRIPT_NAME",
              "PATH_INFO", "QUERY_STRING")
_page_urls: dict[tuple[Any, ...], str] = {}
KEPT_PAGE_URLS = 1024


def _page_url(limit: int, offset: int) -> str:
    """The request URL with ``limit`` and ``offset`` replaced; DRF sorts the parameters.

    A function of the request's URL, so each one is made once (up to :data:`KEPT_PAGE_URLS`):
    measured with ``bench/inprocess.py``, making the ``next`` URL of ``?limit=25`` was 40% of
    the list view's time (``host_url`` alone 20%)."""
    environ = request.environ
    key = (*(environ.get(part) for part in _URL_PARTS), limit, offset)
    try:
        return _page_urls[key]
    except KeyError:
        pass
    params = [(k, v) for k, v in parse_qsl(request.query_string.decode(), keep_blank_values=True)
              if k not in ("limit", "offset")]
    params.append(("limit", str(limit)))
    if offset > 0:
        params.append(("offset", str(offset)))
    params.sort(key=lambda kv: kv[0])
    url = f"{request.host_url}{request.path.lstrip('/')}?{urlencode(params)}"
    if len(_page_urls) >= KEPT_PAGE_URLS:
        _page_urls.clear()
    _page_urls[key] = url
    return url


class Blueprint(flask_smorest.Blueprint):
    """A flask-smorest blueprint with :class:`Parser` and DRF's pagination."""

    ARGUMENTS_PARSER = PAGINATION_ARGUMENTS_PARSER = Parser()
    PAGINATION_HEADER_NAME = None  # the page is in the body
    DEFAULT_LOCATION_CONTENT_TYPE_MAPPING: ClassVar[dict[str, str]] = {
        **flask_smorest.Blueprint.DEFAULT_LOCATION_CONTENT_TYPE_MAPPING,
        BODY: "application/json",
    }
    _LIMIT_OFFSET = LimitOffset()

    def paginate(  # type: ignore[override]
        self,
        pager: type[RowPage] = RowPage,
        *,
        default_limit: int | None = None,
        max_limit: int | None = None,
        **_: Any,
    ) -> Callable:
        """flask-smorest's post-pagination (the view returns every row, ``pager`` cuts the
        page) with :class:`LimitOffset` arguments and the page in the body. With a
        ``default_limit`` the list is always paged, as DRF's ``default_limit`` and
        ``max_limit`` do (a larger limit is cut to ``max_limit``)."""

        def decorator(func: Callable[..., Sequence[Row]]) -> Callable[..., Response]:
            @functools.wraps(func)
            def wrapper(*args: Any, **kwargs: Any) -> Response:
                params = self.PAGINATION_ARGUMENTS_PARSER.parse(
                    self._LIMIT_OFFSET, request, location="query"
                )
                rows = func(*args, **kwargs)
                if default_limit is not None:
                    limit = min(params.page_size or default_limit, max_limit or default_limit)
                    params = LimitOffsetParameters(limit, params.offset)
                if params.page_size is None:
                    array = rows.array() if isinstance(rows, FixedRows) else json_array(rows)
                    return raw_json_response(array)
                return pager(rows, params).response()

            wrapper._apidoc = copy.deepcopy(getattr(wrapper, "_apidoc", {}))
            wrapper._apidoc["pagination"] = {
                "parameters": {"in": "query", "schema": LimitOffset},
                "response": {},
            }
            return wrapper

        return decorator
