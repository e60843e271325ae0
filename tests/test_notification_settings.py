"""Contract tests for /api/settings/notification/ (docs/contract.md §7, §4.1, §14 rows 10 and 11)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

REGISTRY = json.loads(
    (Path(__file__).resolve().parent.parent / "settings_server" / "registry.json").read_text(
        "utf-8"
    )
)
MAIL = next(
    s
    for m in REGISTRY["notification_methods"]
    if m["method"] == "mail"
    for s in m["settings"]
    if s["key"] == "NOTIFICATION_METHOD_MAIL"
)

N = "/api/settings/notification/"
FIELDS = [
    "pk",
    "key",
    "value",
    "name",
    "description",
    "type",
    "choices",
    "model_name",
    "model_filters",
    "api_url",
    "typ",
    "required",
    "method",
]
LIST_ALLOW = "GET, HEAD, OPTIONS"
DETAIL_ALLOW = "GET, PUT, PATCH, HEAD, OPTIONS"
NOT_FOUND = {"detail": "Not found."}
NOT_AUTHENTICATED = {"detail": "Authentication credentials were not provided."}
PERMISSION_DENIED = {"detail": "You do not have permission to perform this action."}
BOOL_ERROR = {"value": ["Value must be a boolean"]}


def compact(body: Any) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def assert_body(resp, status: int, body: Any) -> None:
    assert (resp.status_code, resp.get_json(silent=True)) == (status, body), resp.data
    assert resp.data == compact(body)
    assert resp.headers["Content-Type"] == "application/json"


def assert_unrouted(resp, url: str) -> None:
    body = {"detail": "API endpoint not found", "url": url}
    assert (resp.status_code, resp.get_json(silent=True)) == (404, body), resp.data
    assert resp.data == json.dumps(body).encode("ascii")
    assert resp.headers["Content-Type"] == "application/json"


def mail_row(pk: int, value: str = "True") -> dict[str, Any]:
    return {
        "pk": pk,
        "key": "NOTIFICATION_METHOD_MAIL",
        "value": value,
        "name": MAIL["name"],
        "description": MAIL["description"],
        "type": "boolean",
        "choices": [],
        "model_name": None,
        "model_filters": None,
        "api_url": None,
        "typ": "notification",
        "required": False,
        "method": "mail",
    }


def own_row(client, headers) -> dict[str, Any]:
    rows = client.get(N, headers=headers).get_json()
    assert [r["key"] for r in rows] == ["NOTIFICATION_METHOD_MAIL"]
    return rows[0]


@pytest.fixture
def ha(alice, auth_headers):
    return auth_headers(alice)


@pytest.fixture
def hb(bob, auth_headers):
    return auth_headers(bob)


@pytest.fixture
def roles(ha, make_user, auth_headers):
    return {
        "anon": {},
        "user": ha,
        "staff": auth_headers(make_user("sam", staff=True)),
        "super": auth_headers(make_user("root", superuser=True)),
    }


# == §14 row 10: materialised per user ======================================================


def test_new_user_list(client, ha):
    resp = client.get(N, headers=ha)
    rows = resp.get_json()
    assert isinstance(rows, list) and len(rows) == 1
    pk = rows[0]["pk"]
    assert type(pk) is int
    assert_body(resp, 200, [mail_row(pk)])
    assert list(rows[0]) == FIELDS
    assert "units" not in rows[0] and "user" not in rows[0]
    assert resp.headers["Allow"] == LIST_ALLOW


def test_detail_by_pk(client, ha):
    pk = own_row(client, ha)["pk"]
    resp = client.get(f"{N}{pk}/", headers=ha)
    assert_body(resp, 200, mail_row(pk))
    assert resp.headers["Allow"] == DETAIL_ALLOW


def test_pks_unique_per_user_and_stable(client, ha, hb):
    pa, pb = own_row(client, ha)["pk"], own_row(client, hb)["pk"]
    assert pa != pb
    assert own_row(client, ha)["pk"] == pa
    client.patch(f"{N}{pa}/", json={"value": "False"}, headers=ha)
    assert own_row(client, ha)["pk"] == pa


@pytest.mark.parametrize("method", ["patch", "put"])
def test_write_false_sticks_for_that_user_only(client, ha, hb, method):
    pa, pb = own_row(client, ha)["pk"], own_row(client, hb)["pk"]
    resp = getattr(client, method)(f"{N}{pa}/", json={"value": "False"}, headers=ha)
    assert_body(resp, 200, mail_row(pa, "False"))
    assert_body(client.get(f"{N}{pa}/", headers=ha), 200, mail_row(pa, "False"))
    assert_body(client.get(N, headers=ha), 200, [mail_row(pa, "False")])
    assert_body(client.get(N, headers=hb), 200, [mail_row(pb, "True")])
    assert_body(client.get(f"{N}{pb}/", headers=hb), 200, mail_row(pb, "True"))


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        ("no", "False"),
        ("off", "False"),
        (False, "False"),
        ("", "False"),
        (" YES ", "True"),
        (True, "True"),
        ("1", "True"),
    ],
)
def test_bool_normalisation(client, ha, sent, stored):
    pk = own_row(client, ha)["pk"]
    client.patch(f"{N}{pk}/", json={"value": "False" if stored == "True" else "True"}, headers=ha)
    assert_body(
        client.patch(f"{N}{pk}/", json={"value": sent}, headers=ha), 200, mail_row(pk, stored)
    )


@pytest.mark.parametrize("sent", ["banana", "-1", "2", "maybe"])
def test_bool_invalid(client, ha, sent):
    pk = own_row(client, ha)["pk"]
    assert_body(client.patch(f"{N}{pk}/", json={"value": sent}, headers=ha), 400, BOOL_ERROR)
    assert own_row(client, ha)["value"] == "True"


def test_put_without_value_and_patch_without_value(client, ha):
    pk = own_row(client, ha)["pk"]
    assert_body(
        client.put(f"{N}{pk}/", json={}, headers=ha), 400, {"value": ["This field is required."]}
    )
    assert_body(
        client.patch(f"{N}{pk}/", json={"method": "slack", "key": "X"}, headers=ha),
        200,
        mail_row(pk),
    )


def test_write_body_errors(client, ha):
    pk = own_row(client, ha)["pk"]
    path = f"{N}{pk}/"
    assert_body(
        client.patch(path, data="nope", content_type="application/json", headers=ha),
        400,
        {"detail": "JSON parse error - Expecting value: line 1 column 1 (char 0)"},
    )
    assert_body(
        client.patch(path, data="[]", content_type="application/json", headers=ha),
        400,
        {"non_field_errors": ["Invalid data. Expected a dictionary, but got list."]},
    )
    assert_body(
        client.patch(path, data="x", content_type="text/plain", headers=ha),
        415,
        {"detail": 'Unsupported media type "text/plain" in request.'},
    )
    assert_body(
        client.patch(path, json={"value": "<b>x</b>"}, headers=ha),
        400,
        {"value": ["Remove HTML tags from this value"]},
    )
    assert_body(client.patch(path, data={"value": "off"}, headers=ha), 200, mail_row(pk, "False"))


# == §14 row 11: another user's id is 404 ===================================================


@pytest.mark.parametrize("method", ["get", "patch", "put"])
def test_other_users_row_is_not_found(client, ha, hb, roles, method):
    pb = own_row(client, hb)["pk"]
    missing = max(own_row(client, ha)["pk"], pb) + 10_000_000
    for headers in (ha, roles["staff"], roles["super"]):
        for pk in (pb, missing):
            if method == "get":
                resp = client.get(f"{N}{pk}/", headers=headers)
            else:
                resp = getattr(client, method)(
                    f"{N}{pk}/", json={"value": "False"}, headers=headers
                )
            assert_body(resp, 404, NOT_FOUND)
    assert own_row(client, hb)["value"] == "True"


def test_other_users_row_malformed_body_still_404(client, ha, hb):
    pb = own_row(client, hb)["pk"]
    resp = client.patch(f"{N}{pb}/", data="{oops", content_type="application/json", headers=ha)
    assert_body(resp, 404, NOT_FOUND)


@pytest.mark.parametrize(
    "path", ["abc/", "1", "-1/", "1.0/", "NOTIFICATION_METHOD_MAIL/", "1/extra/"]
)
def test_non_integer_id_is_unrouted(client, ha, path):
    for method in ("get", "patch", "delete"):
        assert_unrouted(
            getattr(client, method)(N + path, headers=ha), "http://localhost" + N + path
        )


def test_notification_list_unrouted_without_slash(client, ha):
    assert_unrouted(
        client.get("/api/settings/notification", headers=ha),
        "http://localhost/api/settings/notification",
    )


# == list features ==========================================================================


@pytest.mark.parametrize(
    ("search", "count"),
    [("mail", 1), ("METHOD mail", 1), ("notification,mail", 1), ("slack", 0), ("", 1)],
)
def test_list_search(client, ha, search, count):
    pk = own_row(client, ha)["pk"]
    resp = client.get(N, query_string={"search": search}, headers=ha)
    assert_body(resp, 200, [mail_row(pk)] * count)


def test_list_search_regex(client, ha):
    pk = own_row(client, ha)["pk"]
    assert_body(
        client.get(N + "?search=^NOTIFICATION_&search_regex=1", headers=ha), 200, [mail_row(pk)]
    )
    assert_body(client.get(N + "?search=^NOTIFICATION_", headers=ha), 200, [])


def test_list_pagination(client, ha):
    pk = own_row(client, ha)["pk"]
    assert_body(
        client.get(N + "?limit=1", headers=ha),
        200,
        {"count": 1, "next": None, "previous": None, "results": [mail_row(pk)]},
    )
    assert_body(
        client.get(N + "?limit=1&offset=1", headers=ha),
        200,
        {
            "count": 1,
            "next": None,
            "previous": "http://localhost/api/settings/notification/?limit=1",
            "results": [],
        },
    )
    assert_body(client.get(N + "?limit=0", headers=ha), 200, [mail_row(pk)])
    assert_body(client.get(N + "?ordering=-name,method&zzz=1", headers=ha), 200, [mail_row(pk)])


def test_list_negotiation(client, ha):
    pk = own_row(client, ha)["pk"]
    assert_body(client.get(N + "?format=json", headers=ha), 200, [mail_row(pk)])
    assert_body(client.get(N + "?format=xml", headers=ha), 404, NOT_FOUND)
    assert_body(
        client.get(N, headers={**ha, "Accept": "text/html"}),
        406,
        {"detail": "Could not satisfy the request Accept header."},
    )


# == §4.1 matrix ============================================================================

ROLES = ["anon", "user", "staff", "super"]


def _check(resp, status, method="GET"):
    body = {
        401: NOT_AUTHENTICATED,
        403: PERMISSION_DENIED,
        405: {"detail": f'Method "{method}" not allowed.'},
    }.get(status)
    if body is not None:
        assert_body(resp, status, body)
    else:
        assert resp.status_code == status, resp.data
    if status == 401:
        assert resp.headers["WWW-Authenticate"] == "Token"


@pytest.mark.parametrize(("role", "status"), list(zip(ROLES, [401, 200, 200, 200], strict=True)))
def test_matrix_list_get(client, roles, role, status):
    resp = client.get(N, headers=roles[role])
    _check(resp, status)
    if status == 200:
        assert [r["key"] for r in resp.get_json()] == ["NOTIFICATION_METHOD_MAIL"]


@pytest.mark.parametrize(("role", "status"), list(zip(ROLES, [401, 403, 403, 405], strict=True)))
def test_matrix_list_post(client, roles, role, status):
    resp = client.post(
        N, json={"key": "NOTIFICATION_METHOD_MAIL", "value": "True"}, headers=roles[role]
    )
    _check(resp, status, "POST")
    if status == 405:
        assert resp.headers["Allow"] == LIST_ALLOW


@pytest.mark.parametrize("role", ["user", "staff", "super"])
@pytest.mark.parametrize("method", ["get", "patch", "put"])
def test_matrix_own_detail(client, roles, role, method):
    pk = own_row(client, roles[role])["pk"]
    if method == "get":
        resp = client.get(f"{N}{pk}/", headers=roles[role])
        assert_body(resp, 200, mail_row(pk))
    else:
        resp = getattr(client, method)(f"{N}{pk}/", json={"value": "False"}, headers=roles[role])
        assert_body(resp, 200, mail_row(pk, "False"))


@pytest.mark.parametrize("method", ["get", "patch", "put"])
def test_matrix_anon_on_existing_row_is_401(client, ha, method):
    pk = own_row(client, ha)["pk"]
    resp = getattr(client, method)(
        f"{N}{pk}/", **({} if method == "get" else {"json": {"value": "False"}})
    )
    _check(resp, 401)
    assert own_row(client, ha)["value"] == "True"


@pytest.mark.parametrize("method", ["get", "patch"])
def test_matrix_anon_on_missing_id_is_404(client, method):
    """§4.1: "GET/PATCH notification detail, nonexistent id: 404 (even anon)"."""
    resp = getattr(client, method)(
        f"{N}987654321/", **({} if method == "get" else {"json": {"value": "x"}})
    )
    assert_body(resp, 404, NOT_FOUND)


@pytest.mark.parametrize("role", ROLES)
def test_matrix_delete_is_405(client, roles, ha, role):
    pk = own_row(client, roles[role] if role != "anon" else ha)["pk"]
    resp = client.delete(f"{N}{pk}/", headers=roles[role])
    _check(resp, 405, "DELETE")
    assert resp.headers["Allow"] == DETAIL_ALLOW
    assert own_row(client, roles[role] if role != "anon" else ha)["pk"] == pk
