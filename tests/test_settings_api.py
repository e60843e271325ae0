"""Contract tests for /api/settings/global/ and /api/settings/user/, from docs/contract.md.

Every assertion names the exact status and body (and the headers the contract fixes). Section
numbers refer to docs/contract.md; its §14 rows say where we differ from InvenTree 327.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from settings_server import create_app

REGISTRY = json.loads(
    (Path(__file__).resolve().parent.parent / "settings_server" / "registry.json").read_text(
        "utf-8"
    )
)
GLOBAL_DEFS = {d["key"]: d for d in REGISTRY["global"] if not d["key"].startswith("_")}
USER_DEFS = {d["key"]: d for d in REGISTRY["user"] if not d["key"].startswith("_")}

GLOBAL_FIELDS = [
    "pk",
    "key",
    "value",
    "name",
    "description",
    "type",
    "units",
    "choices",
    "model_name",
    "api_url",
    "typ",
]
USER_FIELDS = [
    "pk",
    "key",
    "value",
    "name",
    "description",
    "user",
    "type",
    "units",
    "choices",
    "model_name",
    "api_url",
    "typ",
]

LIST_ALLOW = "GET, HEAD, OPTIONS"
DETAIL_ALLOW = "GET, PUT, PATCH, HEAD, OPTIONS"

NOT_FOUND = {"detail": "Not found."}
NOT_AUTHENTICATED = {"detail": "Authentication credentials were not provided."}
PERMISSION_DENIED = {"detail": "You do not have permission to perform this action."}
CHOICE_ERROR = {"non_field_errors": ["Chosen value is not a valid option"]}
BOOL_ERROR = {"value": ["Value must be a boolean"]}
INT_ERROR = {"value": ["Value must be an integer"]}
HTML_ERROR = {"value": ["Remove HTML tags from this value"]}

# docs/contract.md §13, the default-install currency choices.
DEFAULT_CURRENCY_CHOICES = [
    {"value": "AUD", "display_name": "Australian Dollar"},
    {"value": "CAD", "display_name": "Canadian Dollar"},
    {"value": "CNY", "display_name": "Chinese Yuan"},
    {"value": "EUR", "display_name": "Euro"},
    {"value": "GBP", "display_name": "British Pound"},
    {"value": "JPY", "display_name": "Japanese Yen"},
    {"value": "NZD", "display_name": "New Zealand Dollar"},
    {"value": "USD", "display_name": "US Dollar"},
]

# docs/contract.md §13, user DATE_DISPLAY_FORMAT (the "2022/22/22" typo is data on the wire).
DATE_FORMAT_CHOICES = [
    {"value": "YYYY-MM-DD", "display_name": "2022-02-22"},
    {"value": "YYYY/MM/DD", "display_name": "2022/22/22"},
    {"value": "DD-MM-YYYY", "display_name": "22-02-2022"},
    {"value": "DD/MM/YYYY", "display_name": "22/02/2022"},
    {"value": "MM-DD-YYYY", "display_name": "02-22-2022"},
    {"value": "MM/DD/YYYY", "display_name": "02/22/2022"},
    {"value": "MMM DD YYYY", "display_name": "Feb 22 2022"},
]

G = "/api/settings/global/"
U = "/api/settings/user/"


# -- helpers -------------------------------------------------------------------------------


def compact(body: Any) -> bytes:
    """The DRF rendering of ``body``: compact separators, raw UTF-8."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def spaced(body: Any) -> bytes:
    """Django JsonResponse rendering: spaced separators, ASCII escapes."""
    return json.dumps(body).encode("ascii")


def assert_body(resp, status: int, body: Any) -> None:
    """Exact status, exact bytes (field order and compactness included), exact content type."""
    assert (resp.status_code, resp.get_json(silent=True)) == (status, body), resp.data
    assert resp.data == compact(body)
    assert resp.headers["Content-Type"] == "application/json"


def assert_unrouted(resp, url: str) -> None:
    """docs/contract.md §1/§12: the catch-all 404 in Django's spaced JSON with the absolute URL."""
    body = {"detail": "API endpoint not found", "url": url}
    assert (resp.status_code, resp.get_json(silent=True)) == (404, body), resp.data
    assert resp.data == spaced(body)
    assert resp.headers["Content-Type"] == "application/json"
    assert "Location" not in resp.headers


def wire_type(definition: dict) -> str:
    return {"bool": "boolean", "int": "integer"}.get(definition["type"], "string")


def wire_default(definition: dict) -> str:
    default = definition["default"]
    if isinstance(default, bool):
        return "True" if default else "False"
    return str(default)


def static_choices(definition: dict) -> list[dict[str, str]]:
    return [
        {"value": c["value"], "display_name": c["label"]} for c in definition.get("choices") or []
    ]


def expected_global(key: str, value: str, pk: int) -> dict[str, Any]:
    d = GLOBAL_DEFS[key]
    choices = DEFAULT_CURRENCY_CHOICES if key == "INVENTREE_DEFAULT_CURRENCY" else static_choices(d)
    return {
        "pk": pk,
        "key": key,
        "value": value,
        "name": d["name"],
        "description": d["description"],
        "type": wire_type(d),
        "units": d.get("units", ""),
        "choices": choices,
        "model_name": None,
        "api_url": None,
        "typ": "inventree",
    }


def expected_user(key: str, value: str, pk: int, user_id: int) -> dict[str, Any]:
    d = USER_DEFS[key]
    return {
        "pk": pk,
        "key": key,
        "value": value,
        "name": d["name"],
        "description": d["description"],
        "user": user_id,
        "type": wire_type(d),
        "units": d.get("units", ""),
        "choices": static_choices(d),
        "model_name": None,
        "api_url": None,
        "typ": "user",
    }


def pk_of(resp) -> int:
    pk = resp.get_json()["pk"]
    assert type(pk) is int
    return pk


def keys_of(resp) -> list[str]:
    return [row["key"] for row in resp.get_json()]


# -- fixtures ------------------------------------------------------------------------------


@pytest.fixture
def user_h(alice, auth_headers):
    return auth_headers(alice)


@pytest.fixture
def staff_h(make_user, auth_headers):
    return auth_headers(make_user("sam", staff=True))


@pytest.fixture
def super_h(make_user, auth_headers):
    return auth_headers(make_user("root", superuser=True))


@pytest.fixture
def roles(user_h, staff_h, super_h):
    return {"anon": {}, "user": user_h, "staff": staff_h, "super": super_h}


def patch(client, path, body, headers, method="patch"):
    return getattr(client, method)(path, json=body, headers=headers)


# == §2 representation ======================================================================


def test_global_detail_exact_body(client, user_h):
    resp = client.get(G + "INVENTREE_BACKUP_DAYS/", headers=user_h)
    assert_body(resp, 200, expected_global("INVENTREE_BACKUP_DAYS", "1", pk_of(resp)))
    assert list(resp.get_json()) == GLOBAL_FIELDS
    assert resp.get_json()["units"] == "days"


def test_global_bool_detail_serves_python_bool_string(client, user_h):
    resp = client.get(G + "PART_COPY_BOM/", headers=user_h)
    assert_body(resp, 200, expected_global("PART_COPY_BOM", "True", pk_of(resp)))


def test_units_mb_and_ms(client, user_h):
    assert (
        client.get(G + "INVENTREE_DOWNLOAD_IMAGE_MAX_SIZE/", headers=user_h).get_json()["units"]
        == "MB"
    )
    assert client.get(G + "BARCODE_INPUT_DELAY/", headers=user_h).get_json()["units"] == "ms"
    assert client.get(G + "INVENTREE_INSTANCE/", headers=user_h).get_json()["units"] == ""


def test_choice_setting_reports_string_type_and_choices(client, user_h):
    resp = client.get(G + "REPORT_DEFAULT_PAGE_SIZE/", headers=user_h)
    body = expected_global("REPORT_DEFAULT_PAGE_SIZE", "A4", pk_of(resp))
    assert body["choices"] == [
        {"value": v, "display_name": v} for v in ("A4", "A3", "Legal", "Letter")
    ]
    assert body["type"] == "string"
    assert_body(resp, 200, body)


def test_default_currency_choices_follow_default_codes(client, user_h):
    resp = client.get(G + "INVENTREE_DEFAULT_CURRENCY/", headers=user_h)
    assert_body(resp, 200, expected_global("INVENTREE_DEFAULT_CURRENCY", "USD", pk_of(resp)))


def test_user_detail_exact_body(client, alice, user_h):
    resp = client.get(U + "DATE_DISPLAY_FORMAT/", headers=user_h)
    body = expected_user("DATE_DISPLAY_FORMAT", "YYYY-MM-DD", pk_of(resp), alice.id)
    assert body["choices"] == DATE_FORMAT_CHOICES
    assert_body(resp, 200, body)
    assert list(resp.get_json()) == USER_FIELDS


def test_raw_utf8_in_value(client, staff_h):
    resp = patch(client, G + "INVENTREE_INSTANCE/", {"value": "Grüße ✓ 東京"}, staff_h)
    assert resp.status_code == 200
    assert "Grüße ✓ 東京".encode() in resp.data
    assert b"\\u" not in resp.data
    resp = client.get(G + "INVENTREE_INSTANCE/", headers=staff_h)
    assert_body(resp, 200, expected_global("INVENTREE_INSTANCE", "Grüße ✓ 東京", pk_of(resp)))


def test_global_list_rows_match_registry(client, user_h):
    resp = client.get(G, headers=user_h)
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == "application/json"
    rows = resp.get_json()
    assert resp.data == compact(rows)
    assert len(rows) == 136
    assert sorted(row["key"] for row in rows) == sorted(GLOBAL_DEFS)
    assert "SERVER_RESTART_REQUIRED" in keys_of(resp) and "INVENTREE_INSTANCE_ID" in keys_of(resp)
    pks = [row["pk"] for row in rows]
    assert all(type(pk) is int for pk in pks)
    assert len(set(pks)) == 136
    assert pks == sorted(pks)  # §6.3 default order: pk ascending
    for row in rows:
        assert list(row) == GLOBAL_FIELDS
        if row["key"] in ("INVENTREE_INSTANCE_ID",):
            continue
        assert row == expected_global(row["key"], wire_default(GLOBAL_DEFS[row["key"]]), row["pk"])


def test_every_value_is_a_string_of_the_right_form(client, user_h):
    for path in (G, U):
        for row in client.get(path, headers=user_h).get_json():
            assert isinstance(row["value"], str), row
            if row["type"] == "boolean":
                assert row["value"] in ("True", "False"), row
            if row["type"] == "integer":
                assert str(int(row["value"])) == row["value"], row
            for choice in row["choices"]:
                assert list(choice) == ["value", "display_name"]
                assert isinstance(choice["value"], str) and isinstance(choice["display_name"], str)


def test_instance_id_is_a_stable_uuid(client, user_h):
    first = client.get(G + "INVENTREE_INSTANCE_ID/", headers=user_h).get_json()["value"]
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", first)
    assert client.get(G + "INVENTREE_INSTANCE_ID/", headers=user_h).get_json()["value"] == first
    listed = {r["key"]: r["value"] for r in client.get(G, headers=user_h).get_json()}
    assert listed["INVENTREE_INSTANCE_ID"] == first


def test_user_list_rows_match_registry(client, alice, user_h):
    resp = client.get(U, headers=user_h)
    rows = resp.get_json()
    assert resp.status_code == 200
    assert resp.data == compact(rows)
    assert len(rows) == 34
    assert sorted(row["key"] for row in rows) == sorted(USER_DEFS)
    pks = [row["pk"] for row in rows]
    assert len(set(pks)) == 34 and pks == sorted(pks)
    for row in rows:
        assert list(row) == USER_FIELDS
        assert row == expected_user(
            row["key"], wire_default(USER_DEFS[row["key"]]), row["pk"], alice.id
        )


def test_user_pks_differ_between_users(client, make_user, auth_headers):
    h1, h2 = auth_headers(make_user("u1")), auth_headers(make_user("u2"))
    pks1 = {r["key"]: r["pk"] for r in client.get(U, headers=h1).get_json()}
    pks2 = {r["key"]: r["pk"] for r in client.get(U, headers=h2).get_json()}
    assert set(pks1.values()).isdisjoint(pks2.values())
    assert (
        client.get(U + "DATE_DISPLAY_FORMAT/", headers=h1).get_json()["pk"]
        == pks1["DATE_DISPLAY_FORMAT"]
    )
    assert (
        client.get(U + "DATE_DISPLAY_FORMAT/", headers=h2).get_json()["pk"]
        == pks2["DATE_DISPLAY_FORMAT"]
    )


def test_detail_pk_matches_list_pk_and_survives_writes(client, staff_h):
    listed = {r["key"]: r["pk"] for r in client.get(G, headers=staff_h).get_json()}
    for key in ("INVENTREE_INSTANCE", "PART_COPY_BOM", "REPORT_DEFAULT_PAGE_SIZE"):
        assert client.get(G + key + "/", headers=staff_h).get_json()["pk"] == listed[key]
    resp = patch(client, G + "INVENTREE_INSTANCE/", {"value": "changed"}, staff_h)
    assert resp.get_json()["pk"] == listed["INVENTREE_INSTANCE"]
    assert {r["key"]: r["pk"] for r in client.get(G, headers=staff_h).get_json()} == listed


def test_pks_stable_across_app_instances_on_one_sqlite_file(tmp_path):
    from settings_server.auth import authenticator

    config = {"TESTING": True, "SETTINGS_BACKEND": f"sqlite:///{tmp_path}/s.db"}

    def snapshot(app, username, create):
        users = authenticator(app).users
        user = (
            users.create(username, "pw-" + username) if create else users.get_by_username(username)
        )
        headers = {"Authorization": f"Token {authenticator(app).tokens.issue(user, 't').key}"}
        client = app.test_client()
        return (
            {r["key"]: r["pk"] for r in client.get(G, headers=headers).get_json()},
            {r["key"]: r["pk"] for r in client.get(U, headers=headers).get_json()},
        )

    first = snapshot(create_app(config), "pat", create=True)
    second = snapshot(create_app(config), "pat", create=False)
    assert len(first[0]) == 136 and len(first[1]) == 34
    assert first == second


# == §6 lists ===============================================================================


@pytest.mark.parametrize(
    "query",
    [
        "",
        "?limit=0",
        "?limit=-1",
        "?limit=abc",
        "?limit=5.0",
        "?limit=",
        "?offset=5",
        "?offset=2&limit=0",
    ],
)
def test_list_without_positive_limit_is_bare_array(client, user_h, query):
    plain = client.get(G, headers=user_h).get_json()
    resp = client.get(G + query, headers=user_h)
    assert_body(resp, 200, plain)
    assert isinstance(plain, list) and len(plain) == 136


@pytest.mark.parametrize(
    "offset, first, last, next_offset, previous",
    [
        (None, 0, 2, 2, None),  # first page: no previous
        (2, 2, 4, 4, ""),  # previous of the second page drops the offset
        (4, 4, 6, 6, "&offset=2"),
        (135, 135, 136, None, "&offset=133"),  # last page: no next
        (200, 136, 136, None, "&offset=198"),  # past the end: empty, count unchanged
    ],
)
def test_pages(client, user_h, offset, first, last, next_offset, previous):
    rows = client.get(G, headers=user_h).get_json()
    query = "?limit=2" if offset is None else f"?limit=2&offset={offset}"
    resp = client.get(G + query, headers=user_h)
    assert_body(
        resp,
        200,
        {
            "count": 136,
            "next": None if next_offset is None else f"http://localhost/api/settings/global/?limit=2&offset={next_offset}",
            "previous": None if previous is None else f"http://localhost/api/settings/global/?limit=2{previous}",
            "results": rows[first:last],
        },
    )


def test_limit_whitespace_tolerated(client, user_h):
    rows = client.get(G, headers=user_h).get_json()
    resp = client.get(G + "?limit=%202%20", headers=user_h)
    assert resp.status_code == 200
    assert resp.get_json()["results"] == rows[:2]
    assert resp.get_json()["count"] == 136


@pytest.mark.parametrize("offset", ["-5", "abc", ""])
def test_invalid_offset_means_zero(client, user_h, offset):
    rows = client.get(G, headers=user_h).get_json()
    resp = client.get(G + f"?limit=3&offset={offset}", headers=user_h)
    assert resp.status_code == 200
    body = resp.get_json()
    assert body["results"] == rows[:3]
    assert body["previous"] is None
    assert body["count"] == 136


def test_huge_limit_returns_everything(client, user_h):
    rows = client.get(G, headers=user_h).get_json()
    resp = client.get(G + "?limit=100000", headers=user_h)
    assert_body(resp, 200, {"count": 136, "next": None, "previous": None, "results": rows})


def test_kept_answers_follow_a_write(client, user_h, staff_h):
    """A detail, the whole list and a page are each kept while the stored values stay the
    same: the read after a write shows it in every one of them."""
    detail = G + "INVENTREE_INSTANCE/"
    pk = client.get(detail, headers=user_h).get_json()["pk"]
    rows = client.get(G, headers=user_h).get_json()
    page = f"?limit=1&offset={[r['pk'] for r in rows].index(pk)}"
    before = client.get(detail, headers=user_h)
    client.get(G + page, headers=user_h)
    client.patch(detail, json={"value": "kept"}, headers=staff_h)
    after = client.get(detail, headers=user_h)
    assert after.get_json()["value"] == "kept"
    assert after.headers["ETag"] != before.headers["ETag"]
    assert after.headers["X-Setting-Source"] == "stored"
    assert [r["value"] for r in client.get(G, headers=user_h).get_json() if r["pk"] == pk] == [
        "kept"
    ]
    assert client.get(G + page, headers=user_h).get_json()["results"][0]["value"] == "kept"


def test_pagination_urls_sort_params_spec_example(client, user_h):
    """§6.2 observed example: parameters sorted by name, unknown ones preserved."""
    resp = client.get(G + "?search=PART&limit=2&offset=2&ordering=-key&zzz=1&aaa=2", headers=user_h)
    assert resp.status_code == 200
    body = resp.get_json()
    part_keys = sorted((k for k in GLOBAL_DEFS if "PART" in k), reverse=True)
    assert body == {
        "count": len(part_keys),
        "next": "http://localhost/api/settings/global/?aaa=2&limit=2&offset=4&ordering=-key&search=PART&zzz=1",
        "previous": "http://localhost/api/settings/global/?aaa=2&limit=2&ordering=-key&search=PART&zzz=1",
        "results": body["results"],
    }
    assert [r["key"] for r in body["results"]] == part_keys[2:4]


def test_pagination_urls_encode_space_comma_and_keep_blank(client, user_h):
    resp = client.get(G + "?limit=1&search=part%20copy&foo=", headers=user_h)
    assert resp.get_json()["next"] == (
        "http://localhost/api/settings/global/?foo=&limit=1&offset=1&search=part+copy"
    )
    resp = client.get(G + "?limit=1&search=part,bom", headers=user_h)
    assert resp.get_json()["next"] == (
        "http://localhost/api/settings/global/?limit=1&offset=1&search=part%2Cbom"
    )


def test_pagination_url_uses_host_header(client, user_h):
    resp = client.get(G + "?limit=2", headers={**user_h, "Host": "inventree.example:8000"})
    assert (
        resp.get_json()["next"]
        == "http://inventree.example:8000/api/settings/global/?limit=2&offset=2"
    )


def test_user_list_pagination(client, user_h):
    rows = client.get(U, headers=user_h).get_json()
    resp = client.get(U + "?limit=2", headers=user_h)
    assert_body(
        resp,
        200,
        {
            "count": 34,
            "next": "http://localhost/api/settings/user/?limit=2&offset=2",
            "previous": None,
            "results": rows[:2],
        },
    )


@pytest.mark.parametrize(
    ("search", "expected"),
    [
        ("part copy", ["PART_COPY_BOM", "PART_COPY_PARAMETERS", "PART_COPY_TESTS"]),
        ("part,bom", ["PART_BOM_USE_INTERNAL_PRICE", "PART_COPY_BOM"]),
        ("Part_Copy_Bom", ["PART_COPY_BOM"]),
        ("  ", sorted(GLOBAL_DEFS)),
        ("days", sorted(k for k in GLOBAL_DEFS if "DAYS" in k)),
        ("no_such_fragment", []),
    ],
)
def test_search_on_key_only(client, user_h, search, expected):
    resp = client.get(G, query_string={"search": search}, headers=user_h)
    assert resp.status_code == 200
    assert sorted(keys_of(resp)) == expected


def test_search_days_ignores_units_and_names(client, user_h):
    keys = keys_of(client.get(G + "?search=days", headers=user_h))
    assert "INVENTREE_BACKUP_DAYS" in keys
    assert all("DAYS" in key for key in keys)
    # CURRENCY_UPDATE_INTERVAL has units "days" but no DAYS in its key
    assert "CURRENCY_UPDATE_INTERVAL" not in keys


def test_search_keeps_pk_order(client, user_h):
    resp = client.get(G + "?search=part", headers=user_h)
    pks = [row["pk"] for row in resp.get_json()]
    assert pks == sorted(pks) and len(pks) == len([k for k in GLOBAL_DEFS if "PART" in k])


@pytest.mark.parametrize("flag", ["1", "true", "YES", "on", "t"])
def test_search_regex(client, user_h, flag):
    resp = client.get(G, query_string={"search": "^PART_C", "search_regex": flag}, headers=user_h)
    assert sorted(keys_of(resp)) == sorted(k for k in GLOBAL_DEFS if k.startswith("PART_C"))
    assert len(keys_of(resp)) > 3


def test_search_regex_falsy_is_literal(client, user_h):
    resp = client.get(G, query_string={"search": "^PART_C", "search_regex": "0"}, headers=user_h)
    assert_body(resp, 200, [])


@pytest.mark.parametrize(
    "pattern, reason",
    [
        ("PART_(", "missing )"),
        ("(PART)\\1", "invalid escape sequence"),  # backreferences: not linear-time
        ("(?<=PART)_", "invalid perl operator"),  # look-behind: likewise
        ("P" * 257, "longer than 256 characters"),
    ],
)
def test_search_regex_refused_is_400_naming_search(client, user_h, pattern, reason):
    resp = client.get(G, query_string={"search": pattern, "search_regex": "1"}, headers=user_h)
    assert resp.status_code == 400
    [message] = resp.get_json()["search"]
    assert message.startswith("Invalid regular expression: ") and reason in message


ONE_KEY = {"search": "^INVENTREE_INSTANCE$", "search_regex": "1", "limit": "1"}


def test_the_same_query_answers_the_same_every_time(client, user_h, staff_h):
    """Loaded query arguments are kept per query string: a refused one is refused again, and a
    kept page still follows the rows."""
    for _ in range(2):
        resp = client.get(G, query_string={"search": "PART_(", "search_regex": "1"}, headers=user_h)
        assert resp.status_code == 400
        resp = client.get(G, query_string=ONE_KEY, headers=user_h)
        assert resp.get_json()["count"] == 1
    client.patch(G + "INVENTREE_INSTANCE/", json={"value": "kept"}, headers=staff_h)
    resp = client.get(G, query_string=ONE_KEY, headers=user_h)
    assert resp.get_json()["results"][0]["value"] == "kept"


def test_search_regex_catastrophic_for_backtracking_is_answered(client, user_h):
    # (\w+)+! backtracks exponentially on a long key in Python's re; RE2 answers in linear time
    resp = client.get(G, query_string={"search": r"(\w+)+!", "search_regex": "1"}, headers=user_h)
    assert_body(resp, 200, [])
    resp = client.get(G, query_string={"search": r"^(\w+)+_DAYS$", "search_regex": "1"},
                      headers=user_h)
    expected = sorted(k for k in GLOBAL_DEFS if k.endswith("_DAYS"))
    assert sorted(keys_of(resp)) == expected and len(expected) > 1


def test_search_whole_without_regex_matches_nothing(client, user_h):
    resp = client.get(G, query_string={"search": "PART", "search_whole": "1"}, headers=user_h)
    assert_body(resp, 200, [])


def test_search_count_reflects_filter(client, user_h):
    resp = client.get(G, query_string={"search": "part copy", "limit": "1"}, headers=user_h)
    body = resp.get_json()
    assert body["count"] == 3
    assert body["next"] == "http://localhost/api/settings/global/?limit=1&offset=1&search=part+copy"


def test_user_list_search(client, user_h):
    resp = client.get(U + "?search=search_preview", headers=user_h)
    assert sorted(keys_of(resp)) == sorted(k for k in USER_DEFS if "SEARCH_PREVIEW" in k)


@pytest.mark.parametrize(
    ("ordering", "sort_key", "reverse"),
    [
        ("-key", "key", True),
        ("key", "key", False),
        ("-pk", "pk", True),
        ("pk", "pk", False),
        ("name", "name", False),
        ("-name", "name", True),
        ("key,-pk", "key", False),
        ("bogus,-key", "key", True),
        ("value", "pk", False),
        ("bogus", "pk", False),
        ("method", "pk", False),
    ],
)
def test_ordering(client, user_h, ordering, sort_key, reverse):
    rows = client.get(G, headers=user_h).get_json()
    resp = client.get(G, query_string={"ordering": ordering}, headers=user_h)
    assert resp.status_code == 200
    assert resp.get_json() == sorted(rows, key=lambda r: r[sort_key], reverse=reverse)


def test_user_list_ordering_by_name(client, user_h):
    rows = client.get(U, headers=user_h).get_json()
    resp = client.get(U + "?ordering=-name", headers=user_h)
    assert resp.get_json() == sorted(rows, key=lambda r: r["name"], reverse=True)


def test_unknown_params_ignored(client, user_h):
    rows = client.get(G, headers=user_h).get_json()
    assert_body(client.get(G + "?key=PART_COPY_BOM&type=boolean", headers=user_h), 200, rows)


# == §1 / §5.1 details and routing ==========================================================


@pytest.mark.parametrize("path_key", ["inventree_backup_days", "Inventree_Backup_Days"])
def test_detail_key_case_insensitive(client, user_h, path_key):
    canonical = client.get(G + "INVENTREE_BACKUP_DAYS/", headers=user_h)
    resp = client.get(G + path_key + "/", headers=user_h)
    assert_body(resp, 200, canonical.get_json())
    assert resp.get_json()["key"] == "INVENTREE_BACKUP_DAYS"


def test_user_detail_key_case_insensitive(client, user_h):
    resp = client.get(U + "date_display_format/", headers=user_h)
    assert resp.status_code == 200
    assert resp.get_json()["key"] == "DATE_DISPLAY_FORMAT"


@pytest.mark.parametrize(
    "path",
    [
        G + "_PENDING_MIGRATIONS/",
        G + "_pending_migrations/",
        G + "_PLUGIN_REGISTRY_HASH/",
        G + "NOT_A_SETTING/",
        G + "DATE_DISPLAY_FORMAT/",
        U + "INVENTREE_BACKUP_DAYS/",
        U + "NOT_A_SETTING/",
        U + "_ANYTHING/",
        G + "NOTIFICATION_METHOD_MAIL/",
        U + "NOTIFICATION_METHOD_MAIL/",
    ],
)
def test_detail_not_found(client, staff_h, path):
    assert_body(client.get(path, headers=staff_h), 404, NOT_FOUND)
    assert_body(patch(client, path, {"value": "1"}, staff_h), 404, NOT_FOUND)
    assert_body(patch(client, path, {"value": "1"}, staff_h, "put"), 404, NOT_FOUND)


@pytest.mark.parametrize(
    "path",
    [
        "/api/settings/global/INVENTREE-INSTANCE/",
        "/api/settings/global",
        "/api/settings/global/INVENTREE_INSTANCE",
        "/api/settings/user",
        "/api/settings/user/DATE_DISPLAY_FORMAT",
        "/api/settings/",
        "/api/settings",
        "/api/settings/global/INVENTREE_INSTANCE/anything/else/",
        "/api/settings/global/INVENTREE_INSTANCE/extra/",
        "/api/settings/user/DATE_DISPLAY_FORMAT/extra/",
    ],
)
@pytest.mark.parametrize("method", ["get", "post", "put", "patch", "delete"])
def test_unrouted_paths(client, user_h, path, method):
    """§1 catch-all; §14 row 12: trailing extra segments are not served (the route does not
    match, so the catch-all body applies)."""
    assert_unrouted(getattr(client, method)(path, headers=user_h), "http://localhost" + path)


def test_unrouted_anonymous_and_query_string(client):
    assert_unrouted(
        client.get("/api/settings/global?x=1"), "http://localhost/api/settings/global?x=1"
    )
    assert_unrouted(
        client.delete("/api/settings/global/A-B/"), "http://localhost/api/settings/global/A-B/"
    )


def test_unrouted_with_invalid_token_is_401(client):
    resp = client.get("/api/settings/global", headers={"Authorization": "Token nonsense"})
    assert_body(resp, 401, {"detail": "Invalid token."})
    assert resp.headers["WWW-Authenticate"] == "Token"


def test_format_json_accepted(client, user_h, staff_h):
    plain = client.get(G + "INVENTREE_INSTANCE/", headers=user_h)
    assert_body(
        client.get(G + "INVENTREE_INSTANCE/?format=json", headers=user_h), 200, plain.get_json()
    )
    assert_body(
        client.get(G + "?format=json", headers=user_h),
        200,
        client.get(G, headers=user_h).get_json(),
    )
    resp = client.patch(
        G + "INVENTREE_INSTANCE/?format=json", json={"value": "py"}, headers=staff_h
    )
    assert_body(resp, 200, expected_global("INVENTREE_INSTANCE", "py", pk_of(resp)))


@pytest.mark.parametrize("fmt", ["xml", "api", "yaml", ""])
def test_other_format_is_not_found(client, user_h, fmt):
    assert_body(client.get(G + f"INVENTREE_INSTANCE/?format={fmt}", headers=user_h), 404, NOT_FOUND)
    assert_body(client.get(U + f"?format={fmt}", headers=user_h), 404, NOT_FOUND)


@pytest.mark.parametrize("accept", ["text/html", "application/xml"])
def test_unacceptable_accept_header(client, user_h, accept):
    for path in (G, G + "INVENTREE_INSTANCE/", U, U + "DATE_DISPLAY_FORMAT/"):
        resp = client.get(path, headers={**user_h, "Accept": accept})
        assert_body(resp, 406, {"detail": "Could not satisfy the request Accept header."})


@pytest.mark.parametrize("accept", ["application/json", "*/*", "application/*"])
def test_acceptable_accept_header(client, user_h, accept):
    resp = client.get(G + "INVENTREE_INSTANCE/", headers={**user_h, "Accept": accept})
    assert_body(resp, 200, expected_global("INVENTREE_INSTANCE", "InvenTree", pk_of(resp)))


# == §5.3 writes ============================================================================

INSTANCE = G + "INVENTREE_INSTANCE/"


def current(client, path, headers):
    return client.get(path, headers=headers).get_json()["value"]


def test_put_without_value(client, staff_h):
    for body in ({}, {"key": "INVENTREE_INSTANCE"}):
        assert_body(
            patch(client, INSTANCE, body, staff_h, "put"),
            400,
            {"value": ["This field is required."]},
        )
    assert_body(client.put(INSTANCE, headers=staff_h), 400, {"value": ["This field is required."]})
    assert current(client, INSTANCE, staff_h) == "InvenTree"


def test_put_form_without_value(client, staff_h):
    resp = client.put(INSTANCE, data={"other": "x"}, headers=staff_h)
    assert_body(resp, 400, {"value": ["This field is required."]})


def test_patch_without_value_is_unchanged(client, staff_h):
    patch(client, INSTANCE, {"value": "before"}, staff_h)
    resp = patch(client, INSTANCE, {}, staff_h)
    assert_body(resp, 200, expected_global("INVENTREE_INSTANCE", "before", pk_of(resp)))
    resp = patch(client, INSTANCE, {"name": "ignored"}, staff_h)
    assert_body(resp, 200, expected_global("INVENTREE_INSTANCE", "before", pk_of(resp)))


@pytest.mark.parametrize("method", ["patch", "put"])
def test_other_body_fields_ignored(client, staff_h, method):
    pk = client.get(INSTANCE, headers=staff_h).get_json()["pk"]
    body = {
        "value": "x",
        "key": "OTHER",
        "pk": 999,
        "name": "N",
        "type": "integer",
        "typ": "user",
        "user": 5,
        "choices": [1],
        "units": "MB",
    }
    resp = patch(client, INSTANCE, body, staff_h, method)
    assert_body(resp, 200, expected_global("INVENTREE_INSTANCE", "x", pk))
    assert_body(
        client.get(INSTANCE, headers=staff_h), 200, expected_global("INVENTREE_INSTANCE", "x", pk)
    )


def test_html_in_other_fields_ignored(client, staff_h):
    """§14 row 14: only ``value`` is sanitised."""
    resp = patch(
        client, INSTANCE, {"value": "ok", "name": "<b>x</b>", "key": "<script>1</script>"}, staff_h
    )
    assert_body(resp, 200, expected_global("INVENTREE_INSTANCE", "ok", pk_of(resp)))


@pytest.mark.parametrize("value", ["<b>x</b>", "<script>alert(1)</script>", "a <i>b</i>", "<br>"])
def test_html_in_value_rejected(client, staff_h, value):
    assert_body(patch(client, INSTANCE, {"value": value}, staff_h), 400, HTML_ERROR)
    assert current(client, INSTANCE, staff_h) == "InvenTree"


def test_html_in_user_value_rejected(client, user_h):
    assert_body(
        patch(client, U + "LAST_USED_PRINTING_MACHINES/", {"value": "<b>m</b>"}, user_h),
        400,
        HTML_ERROR,
    )


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        ("  Multi\nLine\tTab  ", "MultiLineTab"),
        ("a < b & c > d", "a < b & c > d"),
        ("a\u200eb\u200fc\u202ad\u202ee", "abcde"),
        ("x\x00y\x1fz\x7fw\x85v\x9f", "xyzwv"),
        ("\r\nline\r\n", "line"),
        ("tab\x0bbed", "tabbed"),
    ],
)
def test_value_sanitising(client, staff_h, sent, stored):
    resp = patch(client, INSTANCE, {"value": sent}, staff_h)
    assert_body(resp, 200, expected_global("INVENTREE_INSTANCE", stored, pk_of(resp)))
    assert current(client, INSTANCE, staff_h) == stored


def test_length_limit(client, staff_h):
    resp = patch(client, INSTANCE, {"value": "a" * 2001}, staff_h)
    assert_body(
        resp, 400, {"value": ["Ensure this value has at most 2000 characters (it has 2001)."]}
    )
    resp = patch(client, INSTANCE, {"value": "é" * 2500}, staff_h)
    assert_body(
        resp, 400, {"value": ["Ensure this value has at most 2000 characters (it has 2500)."]}
    )
    resp = patch(client, INSTANCE, {"value": "a" * 2000}, staff_h)
    assert_body(resp, 200, expected_global("INVENTREE_INSTANCE", "a" * 2000, pk_of(resp)))


def test_length_counted_after_trimming(client, staff_h):
    resp = patch(client, INSTANCE, {"value": "  " + "b" * 2000 + "  "}, staff_h)
    assert_body(resp, 200, expected_global("INVENTREE_INSTANCE", "b" * 2000, pk_of(resp)))


@pytest.mark.parametrize(
    ("sent", "stored"),
    [(None, ""), (True, "True"), (False, "False"), (12.5, "12.5"), (7, "7"), (0, "0")],
)
def test_json_scalars_on_string_setting(client, staff_h, sent, stored):
    resp = patch(client, INSTANCE, {"value": sent}, staff_h)
    assert_body(resp, 200, expected_global("INVENTREE_INSTANCE", stored, pk_of(resp)))


@pytest.mark.parametrize("sent", [[1, 2], {"a": 1}, [], {}])
def test_json_array_or_object_value_rejected(client, staff_h, sent):
    """§14 row 13."""
    assert_body(
        patch(client, INSTANCE, {"value": sent}, staff_h), 400, {"value": ["Not a valid string."]}
    )
    assert current(client, INSTANCE, staff_h) == "InvenTree"


@pytest.mark.parametrize(("raw", "type_name"), [("[1, 2]", "list"), ('"x"', "str"), ("5", "int")])
def test_non_object_body_rejected(client, staff_h, raw, type_name):
    """§14 row 9."""
    resp = client.patch(INSTANCE, data=raw, content_type="application/json", headers=staff_h)
    assert_body(
        resp,
        400,
        {"non_field_errors": [f"Invalid data. Expected a dictionary, but got {type_name}."]},
    )


def test_malformed_json(client, staff_h):
    for method in ("patch", "put"):
        resp = getattr(client, method)(
            INSTANCE, data="not json", content_type="application/json", headers=staff_h
        )
        assert_body(
            resp, 400, {"detail": "JSON parse error - Expecting value: line 1 column 1 (char 0)"}
        )


def test_text_plain_unsupported(client, staff_h):
    resp = client.patch(INSTANCE, data="value=x", content_type="text/plain", headers=staff_h)
    assert_body(resp, 415, {"detail": 'Unsupported media type "text/plain" in request.'})
    assert current(client, INSTANCE, staff_h) == "InvenTree"


def test_form_encoded_body(client, staff_h):
    resp = client.patch(INSTANCE, data={"value": "  from form  ", "key": "X"}, headers=staff_h)
    assert_body(resp, 200, expected_global("INVENTREE_INSTANCE", "from form", pk_of(resp)))
    resp = client.put(G + "PART_COPY_BOM/", data={"value": "off"}, headers=staff_h)
    assert_body(resp, 200, expected_global("PART_COPY_BOM", "False", pk_of(resp)))


def test_multipart_body(client, staff_h):
    resp = client.patch(
        INSTANCE, data={"value": "multi"}, content_type="multipart/form-data", headers=staff_h
    )
    assert_body(resp, 200, expected_global("INVENTREE_INSTANCE", "multi", pk_of(resp)))
    assert current(client, INSTANCE, staff_h) == "multi"


def test_write_visible_in_detail_and_list(client, staff_h, user_h):
    patch(client, G + "INVENTREE_COMPANY_NAME/", {"value": "ACME"}, staff_h)
    assert current(client, G + "INVENTREE_COMPANY_NAME/", user_h) == "ACME"
    listed = {r["key"]: r["value"] for r in client.get(G, headers=user_h).get_json()}
    assert listed["INVENTREE_COMPANY_NAME"] == "ACME"
    paged = client.get(G + "?search=INVENTREE_COMPANY_NAME&limit=5", headers=user_h).get_json()
    assert [r["value"] for r in paged["results"]] == ["ACME"]


# -- booleans (§14 row 2) --

BOOL = G + "PART_COPY_BOM/"


@pytest.mark.parametrize(
    "sent",
    ["1", "y", "yes", "t", "true", "ok", "on", "TRUE", "Yes", " on ", "OK", "\ttrue\n", True, 1],
)
def test_bool_truthy(client, staff_h, sent):
    patch(client, BOOL, {"value": "False"}, staff_h)
    resp = patch(client, BOOL, {"value": sent}, staff_h)
    assert_body(resp, 200, expected_global("PART_COPY_BOM", "True", pk_of(resp)))
    assert current(client, BOOL, staff_h) == "True"


@pytest.mark.parametrize(
    "sent",
    ["0", "n", "no", "f", "false", "off", "", "FALSE", " No ", "OFF", "  ", False, None, 0],
)
def test_bool_falsy(client, staff_h, sent):
    resp = patch(client, BOOL, {"value": sent}, staff_h)
    assert_body(resp, 200, expected_global("PART_COPY_BOM", "False", pk_of(resp)))
    assert current(client, BOOL, staff_h) == "False"


@pytest.mark.parametrize("sent", ["banana", "-1", "x", "2", "truee", "yes please", 1.0, "1.0"])
def test_bool_invalid(client, staff_h, sent):
    assert_body(patch(client, BOOL, {"value": sent}, staff_h), 400, BOOL_ERROR)
    assert current(client, BOOL, staff_h) == "True"


def test_bool_spec_example(client, staff_h):
    """§13: PATCH PART_COPY_BOM {"value":"yes"} -> 200 with "True"."""
    patch(client, BOOL, {"value": "no"}, staff_h)
    resp = patch(client, BOOL, {"value": "yes"}, staff_h)
    assert_body(resp, 200, expected_global("PART_COPY_BOM", "True", pk_of(resp)))


# -- integers (§14 row 3) --

BACKUP = G + "INVENTREE_BACKUP_DAYS/"
STALE = G + "STOCK_STALE_DAYS/"


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        (" 7 ", "7"),
        ("+7", "7"),
        ("1_0", "10"),
        ("007", "7"),
        ("٣", "3"),
        (7, "7"),
        ("\t12\n", "12"),
    ],
)
def test_int_parsed_and_canonical(client, staff_h, sent, stored):
    resp = patch(client, BACKUP, {"value": sent}, staff_h)
    assert_body(resp, 200, expected_global("INVENTREE_BACKUP_DAYS", stored, pk_of(resp)))
    assert current(client, BACKUP, staff_h) == stored


@pytest.mark.parametrize(("sent", "stored"), [("-5", "-5"), (str(10**20), str(10**20)), ("0", "0")])
def test_unbounded_int(client, staff_h, sent, stored):
    resp = patch(client, STALE, {"value": sent}, staff_h)
    assert_body(resp, 200, expected_global("STOCK_STALE_DAYS", stored, pk_of(resp)))


@pytest.mark.parametrize("sent", ["abc", "5.5", "15.0", "", 12.5, None, True, "1 0", "0x10"])
def test_int_invalid(client, staff_h, sent):
    assert_body(patch(client, BACKUP, {"value": sent}, staff_h), 400, INT_ERROR)
    assert current(client, BACKUP, staff_h) == "1"


def test_int_spec_example(client, staff_h):
    """§13 with §14 row 3: lower-case path, "0" below min; "abc" is now a 400."""
    path = G + "inventree_backup_days/"
    resp = patch(client, path, {"value": "0"}, staff_h)
    assert_body(
        resp, 400, {"non_field_errors": ["Ensure this value is greater than or equal to 1."]}
    )
    assert_body(patch(client, path, {"value": "abc"}, staff_h), 400, INT_ERROR)
    assert current(client, BACKUP, staff_h) == "1"


@pytest.mark.parametrize(
    ("sent", "status", "body"),
    [
        ("0", 400, {"non_field_errors": ["Ensure this value is greater than or equal to 1."]}),
        ("-3", 400, {"non_field_errors": ["Ensure this value is greater than or equal to 1."]}),
        ("26", 400, {"non_field_errors": ["Ensure this value is less than or equal to 25."]}),
        ("1", 200, None),
        ("25", 200, None),
    ],
)
def test_int_bounds(client, staff_h, sent, status, body):
    path = G + "INVENTREE_DOWNLOAD_IMAGE_MAX_SIZE/"
    resp = patch(client, path, {"value": sent}, staff_h)
    if status == 200:
        assert_body(
            resp, 200, expected_global("INVENTREE_DOWNLOAD_IMAGE_MAX_SIZE", sent, pk_of(resp))
        )
    else:
        assert_body(resp, status, body)
        assert current(client, path, staff_h) == "1"


def test_user_int_bounds(client, user_h):
    resp = patch(client, U + "SEARCH_PREVIEW_RESULTS/", {"value": "0"}, user_h)
    assert_body(
        resp, 400, {"non_field_errors": ["Ensure this value is greater than or equal to 1."]}
    )
    resp = patch(client, U + "SEARCH_PREVIEW_RESULTS/", {"value": "x"}, user_h)
    assert_body(resp, 400, INT_ERROR)


# -- choices --


@pytest.mark.parametrize("sent", ["A5", "a4", "LETTER", "", "A4 A3"])
def test_static_choice_rejected(client, staff_h, sent):
    path = G + "REPORT_DEFAULT_PAGE_SIZE/"
    assert_body(patch(client, path, {"value": sent}, staff_h), 400, CHOICE_ERROR)
    assert current(client, path, staff_h) == "A4"


@pytest.mark.parametrize(
    ("sent", "stored"), [("Letter", "Letter"), (" A3 ", "A3"), ("Legal", "Legal")]
)
def test_static_choice_accepted(client, staff_h, sent, stored):
    resp = patch(client, G + "REPORT_DEFAULT_PAGE_SIZE/", {"value": sent}, staff_h)
    assert_body(resp, 200, expected_global("REPORT_DEFAULT_PAGE_SIZE", stored, pk_of(resp)))


def test_user_choice(client, alice, user_h):
    path = U + "DATE_DISPLAY_FORMAT/"
    assert_body(patch(client, path, {"value": "YYYY.MM.DD"}, user_h), 400, CHOICE_ERROR)
    assert_body(patch(client, path, {"value": "dd/mm/yyyy"}, user_h), 400, CHOICE_ERROR)
    resp = patch(client, path, {"value": "DD/MM/YYYY"}, user_h)
    assert_body(
        resp, 200, expected_user("DATE_DISPLAY_FORMAT", "DD/MM/YYYY", pk_of(resp), alice.id)
    )


def test_default_currency_follows_currency_codes(client, staff_h):
    """§13 / §8."""
    resp = patch(client, G + "CURRENCY_CODES/", {"value": "usd, eur ,gbp"}, staff_h)
    assert_body(resp, 200, expected_global("CURRENCY_CODES", "usd, eur ,gbp", pk_of(resp)))
    resp = client.get(G + "INVENTREE_DEFAULT_CURRENCY/", headers=staff_h)
    body = expected_global("INVENTREE_DEFAULT_CURRENCY", "USD", pk_of(resp))
    body["choices"] = [
        {"value": "USD", "display_name": "US Dollar"},
        {"value": "EUR", "display_name": "Euro"},
        {"value": "GBP", "display_name": "British Pound"},
    ]
    assert_body(resp, 200, body)
    assert_body(
        patch(client, G + "INVENTREE_DEFAULT_CURRENCY/", {"value": "JPY"}, staff_h),
        400,
        CHOICE_ERROR,
    )
    assert_body(
        patch(client, G + "INVENTREE_DEFAULT_CURRENCY/", {"value": "eur"}, staff_h),
        400,
        CHOICE_ERROR,
    )
    resp = patch(client, G + "INVENTREE_DEFAULT_CURRENCY/", {"value": "EUR"}, staff_h)
    body["value"] = "EUR"
    assert_body(resp, 200, body)
    listed = {r["key"]: r for r in client.get(G, headers=staff_h).get_json()}
    assert listed["INVENTREE_DEFAULT_CURRENCY"] == body


@pytest.mark.parametrize("sent", ["USD,XYZ", "USD,usd", "", "NOPE", ",,"])
def test_currency_codes_invalid(client, staff_h, sent):
    resp = patch(client, G + "CURRENCY_CODES/", {"value": sent}, staff_h)
    assert resp.status_code == 400
    body = resp.get_json()
    assert list(body) == ["non_field_errors"]
    assert len(body["non_field_errors"]) == 1 and isinstance(body["non_field_errors"][0], str)
    assert current(client, G + "CURRENCY_CODES/", staff_h) == "AUD,CAD,CNY,EUR,GBP,JPY,NZD,USD"


def test_pricing_decimal_places_cross_check(client, staff_h):
    mn, mx = G + "PRICING_DECIMAL_PLACES_MIN/", G + "PRICING_DECIMAL_PLACES/"
    assert patch(client, mx, {"value": "3"}, staff_h).status_code == 200
    resp = patch(client, mn, {"value": "4"}, staff_h)
    assert resp.status_code == 400 and list(resp.get_json()) == ["non_field_errors"]
    assert current(client, mn, staff_h) == "0"
    resp = patch(client, mn, {"value": "3"}, staff_h)
    assert_body(resp, 200, expected_global("PRICING_DECIMAL_PLACES_MIN", "3", pk_of(resp)))
    resp = patch(client, mx, {"value": "2"}, staff_h)
    assert resp.status_code == 400 and list(resp.get_json()) == ["non_field_errors"]
    assert current(client, mx, staff_h) == "3"
    # the setting's own bounds still apply
    assert patch(client, mx, {"value": "6"}, staff_h).status_code == 200
    assert_body(
        patch(client, mn, {"value": "5"}, staff_h),
        400,
        {"non_field_errors": ["Ensure this value is less than or equal to 4."]},
    )
    assert_body(
        patch(client, mx, {"value": "7"}, staff_h),
        400,
        {"non_field_errors": ["Ensure this value is less than or equal to 6."]},
    )


@pytest.mark.parametrize("sent", ["BO-{foo}", "BO-", "BO-{ref", "{ref}-{bogus:02d}", "BO-}{ref}"])
def test_reference_pattern_invalid(client, staff_h, sent):
    path = G + "BUILDORDER_REFERENCE_PATTERN/"
    resp = patch(client, path, {"value": sent}, staff_h)
    assert resp.status_code == 400
    body = resp.get_json()
    assert list(body) == ["value"] and len(body["value"]) == 1 and isinstance(body["value"][0], str)
    assert current(client, path, staff_h) == "BO-{ref:04d}"


@pytest.mark.parametrize("sent", ["BO-{ref:05d}", "{date}-{ref}", "SO{ref}"])
def test_reference_pattern_valid(client, staff_h, sent):
    resp = patch(client, G + "SALESORDER_REFERENCE_PATTERN/", {"value": sent}, staff_h)
    assert_body(resp, 200, expected_global("SALESORDER_REFERENCE_PATTERN", sent, pk_of(resp)))


def test_sso_group_map_json(client, staff_h):
    path = G + "SSO_GROUP_MAP/"
    assert_body(
        patch(client, path, {"value": "{not json"}, staff_h),
        400,
        {"value": ["Value does not pass validation checks"]},
    )
    resp = patch(client, path, {"value": '{"a": "b"}'}, staff_h)
    assert_body(resp, 200, expected_global("SSO_GROUP_MAP", '{"a": "b"}', pk_of(resp)))


def test_icon_validator_non_field(client, staff_h):
    resp = patch(
        client, G + "PART_CATEGORY_DEFAULT_ICON/", {"value": "definitely not an icon"}, staff_h
    )
    assert resp.status_code == 400 and list(resp.get_json()) == ["non_field_errors"]


def test_signup_mail_restriction_non_field(client, staff_h):
    path = G + "LOGIN_SIGNUP_MAIL_RESTRICTION/"
    resp = patch(client, path, {"value": "example.com"}, staff_h)
    assert resp.status_code == 400 and list(resp.get_json()) == ["non_field_errors"]
    resp = patch(client, path, {"value": "@example.com,@test.org"}, staff_h)
    assert_body(
        resp,
        200,
        expected_global("LOGIN_SIGNUP_MAIL_RESTRICTION", "@example.com,@test.org", pk_of(resp)),
    )


@pytest.mark.parametrize("body", [{"value": "False"}, {"value": "True"}, {}])
def test_plugin_on_startup_sets_restart_required(client, staff_h, body):
    assert current(client, G + "SERVER_RESTART_REQUIRED/", staff_h) == "False"
    resp = patch(client, G + "PLUGIN_ON_STARTUP/", body, staff_h)
    expected = body.get("value", "False")
    assert_body(resp, 200, expected_global("PLUGIN_ON_STARTUP", expected, pk_of(resp)))
    assert current(client, G + "SERVER_RESTART_REQUIRED/", staff_h) == "True"


def test_other_saves_do_not_set_restart_required(client, staff_h):
    patch(client, BOOL, {"value": "False"}, staff_h)
    patch(client, INSTANCE, {"value": "x"}, staff_h)
    assert current(client, G + "SERVER_RESTART_REQUIRED/", staff_h) == "False"


def test_failed_plugin_on_startup_write_does_not_set_restart(client, staff_h):
    assert_body(
        patch(client, G + "PLUGIN_ON_STARTUP/", {"value": "banana"}, staff_h), 400, BOOL_ERROR
    )
    assert current(client, G + "SERVER_RESTART_REQUIRED/", staff_h) == "False"


# == §4 permissions =========================================================================

STATUS_BODY = {
    401: NOT_AUTHENTICATED,
    403: PERMISSION_DENIED,
}


def assert_denied_or_ok(resp, status, method="GET"):
    assert resp.status_code == status, (resp.status_code, resp.data)
    if status in STATUS_BODY:
        assert_body(resp, status, STATUS_BODY[status])
    if status == 401:
        assert resp.headers["WWW-Authenticate"] == "Token"
    if status == 405:
        assert_body(resp, 405, {"detail": f'Method "{method}" not allowed.'})


ROLES = ["anon", "user", "staff", "super"]


def _matrix(expected):
    return list(zip(ROLES, expected, strict=True))


@pytest.mark.parametrize(("role", "status"), _matrix([401, 200, 200, 200]))
def test_matrix_global_get(client, roles, role, status):
    resp = client.get(G, headers=roles[role])
    assert_denied_or_ok(resp, status)
    if status == 200:
        assert len(resp.get_json()) == 136
        assert resp.headers["Allow"] == LIST_ALLOW
    resp = client.get(INSTANCE, headers=roles[role])
    assert_denied_or_ok(resp, status)
    if status == 200:
        assert_body(resp, 200, expected_global("INVENTREE_INSTANCE", "InvenTree", pk_of(resp)))
        assert resp.headers["Allow"] == DETAIL_ALLOW


@pytest.mark.parametrize(("role", "status"), _matrix([401, 403, 200, 200]))
@pytest.mark.parametrize("method", ["patch", "put"])
def test_matrix_global_write(client, roles, staff_h, role, status, method):
    resp = patch(client, INSTANCE, {"value": f"by-{role}"}, roles[role], method)
    assert_denied_or_ok(resp, status)
    if status == 200:
        assert_body(resp, 200, expected_global("INVENTREE_INSTANCE", f"by-{role}", pk_of(resp)))
        assert resp.headers["Allow"] == DETAIL_ALLOW
    assert current(client, INSTANCE, staff_h) == (f"by-{role}" if status == 200 else "InvenTree")


@pytest.mark.parametrize(("role", "status"), _matrix([401, 403, 403, 405]))
@pytest.mark.parametrize("path", [G, U])
def test_matrix_post_list(client, roles, role, status, path):
    resp = client.post(path, json={"key": "X", "value": "1"}, headers=roles[role])
    assert_denied_or_ok(resp, status, "POST")
    if status == 405:
        assert resp.headers["Allow"] == LIST_ALLOW


@pytest.mark.parametrize(("role", "status"), _matrix([401, 403, 405, 405]))
def test_matrix_delete_global_detail(client, roles, role, status):
    resp = client.delete(INSTANCE, headers=roles[role])
    assert_denied_or_ok(resp, status, "DELETE")
    if status == 405:
        assert resp.headers["Allow"] == DETAIL_ALLOW


@pytest.mark.parametrize(("role", "status"), _matrix([401, 200, 200, 200]))
def test_matrix_user_list(client, roles, role, status):
    resp = client.get(U, headers=roles[role])
    assert_denied_or_ok(resp, status)
    if status == 200:
        assert len(resp.get_json()) == 34
        assert resp.headers["Allow"] == LIST_ALLOW


@pytest.mark.parametrize(("role", "status"), _matrix([401, 200, 200, 200]))
@pytest.mark.parametrize("method", ["get", "patch", "put"])
def test_matrix_user_detail(client, roles, role, status, method):
    """§14 row 8: anonymous user detail is 401 with WWW-Authenticate: Token."""
    path = U + "TABLE_STRING_MAX_LENGTH/"
    if method == "get":
        resp = client.get(path, headers=roles[role])
    else:
        resp = patch(client, path, {"value": "55"}, roles[role], method)
    assert_denied_or_ok(resp, status)
    if status == 200:
        assert resp.get_json()["value"] == ("100" if method == "get" else "55")
        assert resp.headers["Allow"] == DETAIL_ALLOW


@pytest.mark.parametrize("role", ROLES)
def test_matrix_delete_user_detail_405_even_anon(client, roles, role):
    resp = client.delete(U + "TABLE_STRING_MAX_LENGTH/", headers=roles[role])
    assert_body(resp, 405, {"detail": 'Method "DELETE" not allowed.'})
    assert resp.headers["Allow"] == DETAIL_ALLOW


def test_invalid_token_on_settings(client):
    for path in (G, INSTANCE, U, U + "DATE_DISPLAY_FORMAT/"):
        resp = client.get(path, headers={"Authorization": "Token inv-bogus"})
        assert_body(resp, 401, {"detail": "Invalid token."})
        assert resp.headers["WWW-Authenticate"] == "Token"


def test_order_unknown_key_malformed_json_is_404(client, staff_h, user_h):
    resp = client.patch(
        G + "NO_SUCH_KEY/", data="{oops", content_type="application/json", headers=staff_h
    )
    assert_body(resp, 404, NOT_FOUND)
    resp = client.patch(
        U + "NO_SUCH_KEY/", data="{oops", content_type="application/json", headers=user_h
    )
    assert_body(resp, 404, NOT_FOUND)
    resp = client.put(G + "NO_SUCH_KEY/", data="x", content_type="text/plain", headers=staff_h)
    assert_body(resp, 404, NOT_FOUND)


def test_order_non_staff_malformed_json_is_403(client, user_h):
    resp = client.patch(INSTANCE, data="{oops", content_type="application/json", headers=user_h)
    assert_body(resp, 403, PERMISSION_DENIED)
    resp = client.patch(
        G + "NO_SUCH_KEY/", data="{oops", content_type="application/json", headers=user_h
    )
    assert_body(resp, 403, PERMISSION_DENIED)


def test_order_anonymous_malformed_json_is_401(client):
    resp = client.patch(INSTANCE, data="{oops", content_type="application/json")
    assert_body(resp, 401, NOT_AUTHENTICATED)
    resp = client.patch(U + "NO_SUCH_KEY/", data="{oops", content_type="application/json")
    assert_body(resp, 401, NOT_AUTHENTICATED)


def test_order_body_parsing_before_validation(client, staff_h):
    resp = client.put(INSTANCE, data="x", content_type="text/plain", headers=staff_h)
    assert_body(resp, 415, {"detail": 'Unsupported media type "text/plain" in request.'})


def test_allow_header_on_400_and_404(client, staff_h):
    resp = patch(client, BOOL, {"value": "banana"}, staff_h)
    assert resp.headers["Allow"] == DETAIL_ALLOW
    resp = client.get(G + "NOT_A_SETTING/", headers=staff_h)
    assert resp.headers["Allow"] == DETAIL_ALLOW


# == isolation ==============================================================================


def test_user_setting_write_is_private(client, alice, bob, auth_headers):
    ha, hb = auth_headers(alice), auth_headers(bob)
    path = U + "DATE_DISPLAY_FORMAT/"
    resp = patch(client, path, {"value": "MM/DD/YYYY"}, ha)
    assert_body(
        resp, 200, expected_user("DATE_DISPLAY_FORMAT", "MM/DD/YYYY", pk_of(resp), alice.id)
    )
    resp_b = client.get(path, headers=hb)
    assert_body(
        resp_b, 200, expected_user("DATE_DISPLAY_FORMAT", "YYYY-MM-DD", pk_of(resp_b), bob.id)
    )
    assert pk_of(resp_b) != pk_of(resp)
    listed_a = {r["key"]: r for r in client.get(U, headers=ha).get_json()}
    listed_b = {r["key"]: r for r in client.get(U, headers=hb).get_json()}
    assert listed_a["DATE_DISPLAY_FORMAT"]["value"] == "MM/DD/YYYY"
    assert listed_b["DATE_DISPLAY_FORMAT"]["value"] == "YYYY-MM-DD"
    assert {r["user"] for r in listed_a.values()} == {alice.id}
    assert {r["user"] for r in listed_b.values()} == {bob.id}


def test_user_writes_do_not_touch_global(client, user_h, staff_h):
    patch(client, U + "LAST_USED_PRINTING_MACHINES/", {"value": "m1"}, user_h)
    assert "m1" not in [r["value"] for r in client.get(G, headers=staff_h).get_json()]
