"""Named validators on hostile input: a clear 400, never a 500, never a runaway check."""

from __future__ import annotations

import pytest

TEMPLATE = "/api/settings/global/PART_NAME_FORMAT/"


@pytest.fixture
def staff(make_user, auth_headers):
    return auth_headers(make_user("sam", staff=True))


@pytest.mark.parametrize(
    "template",
    [
        "{{ part.IPN if part.IPN }}{{ ' | ' if part.IPN }}{{ part.name }}",
        "{{ part.name|upper }} {% if part.IPN %}[{{ part.IPN }}]{% endif %}",
        "{{ part.name ~ ' - ' ~ part.revision }}",
        "{{ part.name|replace('-', ' ') }}",
        "Part: {{ part.name }}",
    ],
)
def test_part_name_templates_that_name_part_fields_are_stored(client, staff, template):
    response = client.patch(TEMPLATE, json={"value": template}, headers=staff)
    assert response.status_code == 200
    assert response.get_json()["value"] == template


@pytest.mark.parametrize(
    "template, message",
    [
        ("{{ part.name.__class__ }}", "Unknown part field in template: '__class__'"),
        ("{{ part.bogus }}", "Unknown part field in template: 'bogus'"),
        ("{{ 'text' }}", "Each template block must reference a part field (part.<field>)"),
        ("{% for x in range(99999) %}{{ part.name }}{% endfor %}", "cannot use 'For'"),
        ("{{ part.name * 1000000000 }}", "cannot use 'Mul'"),
        ("{{ part.name|center(99999999999) }}", "can use only the filters"),
        ("{{ lipsum(99999) }}", "cannot use 'Call'"),
        ("{{ part.name ~ cycler }}", "Unknown name in template: 'cycler'"),
        ("{{ part.name", "Invalid part name template: unexpected end of template"),
    ],
)
def test_part_name_templates_that_could_run_away_are_refused(client, staff, template, message):
    before = client.get(TEMPLATE, headers=staff).get_json()["value"]
    response = client.patch(TEMPLATE, json={"value": template}, headers=staff)
    assert response.status_code == 400
    (error,) = response.get_json()["value"]
    assert message in error
    assert client.get(TEMPLATE, headers=staff).get_json()["value"] == before


def test_json_nested_too_deeply_is_a_parse_error(client, staff):
    body = '{"value":' + "[" * 100_000 + "]" * 100_000 + "}"
    response = client.patch(
        "/api/settings/global/INVENTREE_INSTANCE/", data=body, content_type="application/json",
        headers=staff,
    )
    assert response.status_code == 400
    assert response.get_json() == {"detail": "JSON parse error - nested too deeply"}


@pytest.mark.parametrize(
    "pattern, message",
    [
        ("BO-{ref:09999999999d}", "field width too large"),
        ("BO-{ref:%Q}", "Invalid reference pattern: Invalid format specifier"),
        ("BO-{ref", "unbalanced braces"),
        ("BO-{}", "unknown field ''"),
        ("BO-{date}", "must contain the {ref} field"),
    ],
)
def test_bad_reference_patterns_are_refused(client, staff, pattern, message):
    response = client.patch(
        "/api/settings/global/BUILDORDER_REFERENCE_PATTERN/", json={"value": pattern}, headers=staff
    )
    assert response.status_code == 400
    (error,) = response.get_json()["value"]
    assert message in error


@pytest.mark.parametrize("pattern", ["BO-{ref:04d}", "{date:%Y}-{ref:06d}", "RMA{ref}"])
def test_reference_patterns_with_ref_are_stored(client, staff, pattern):
    response = client.patch(
        "/api/settings/global/BUILDORDER_REFERENCE_PATTERN/", json={"value": pattern}, headers=staff
    )
    assert response.status_code == 200 and response.get_json()["value"] == pattern
