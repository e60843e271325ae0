"""The registry: the shipped definitions, its self-checks and operator extension files."""

from __future__ import annotations

import json

import pytest

from settings_server import create_app
from settings_server.registry import RegistryError, load_registry


def test_shipped_registry_matches_inventree_327():
    registry = load_registry()
    assert len(registry.global_settings) == 137
    assert len(registry.user_settings) == 34
    served = [k for k in registry.global_settings if not k.startswith("_")]
    assert len(served) == 136
    types = [d.type for d in registry.global_settings.values()]
    assert (types.count("bool"), types.count("int"), types.count("str"), types.count("choice")) == (96, 18, 18, 5)
    mail = registry.notification_methods["mail"].settings[0]
    assert (mail.key, mail.type, mail.default, mail.method) == ("NOTIFICATION_METHOD_MAIL", "bool", True, "mail")
    assert registry.notification_methods["slack"].settings == ()
    assert len(registry.currencies) == 308


def test_every_shipped_global_setting_has_one_of_inventrees_panels():
    panels = {"Server", "Login", "Barcodes", "Notifications", "Pricing", "Labels", "Reporting",
              "Parts", "Stock", "Build orders", "Purchase orders", "Sales orders", "Return orders"}
    registry = load_registry()
    served = [d for k, d in registry.global_settings.items() if not k.startswith("_")]
    assert {d.category for d in served} <= panels
    by_key = {d.key: d.category for d in served}
    assert (by_key["BARCODE_ENABLE"], by_key["LOGIN_ENABLE_REG"], by_key["RETURNORDER_ENABLED"]) == (
        "Barcodes", "Login", "Return orders")


def test_operator_settings_name_their_own_category_or_land_in_other(tmp_path):
    path = write(tmp_path, "extra.yaml", (
        "global:\n  - {key: SITE_BANNER, type: str, category: Front page}\n"
        "  - {key: SITE_FOOTER, type: str}\n"
    ))
    registry = load_registry(path)
    assert registry.global_settings["SITE_BANNER"].category == "Front page"
    assert registry.global_settings["SITE_FOOTER"].category == "Other"


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


EXTRA = {
    "global": [{"key": "SITE_BANNER", "name": "Banner", "type": "str", "default": "hi"}],
    "user": [{"key": "FAVOURITE_NUMBER", "type": "int", "default": 7, "min": 1, "max": 9, "units": "pts"}],
    "notification_methods": [
        {"method": "sms", "settings": [{"key": "NOTIFICATION_METHOD_SMS", "type": "bool", "default": False,
                                        "required": True, "model_filters": {"part": 1}}]}
    ],
}


@pytest.mark.parametrize(
    "name, text",
    [
        ("extra.json", json.dumps(EXTRA)),
        ("extra.yaml", (
            "global:\n  - {key: SITE_BANNER, name: Banner, type: str, default: hi}\n"
            "user:\n  - {key: FAVOURITE_NUMBER, type: int, default: 7, min: 1, max: 9, units: pts}\n"
        )),
        ("extra.toml", (
            '[[global]]\nkey = "SITE_BANNER"\nname = "Banner"\ntype = "str"\ndefault = "hi"\n'
            '[[user]]\nkey = "FAVOURITE_NUMBER"\ntype = "int"\ndefault = 7\nmin = 1\nmax = 9\n'
            'units = "pts"\n'
        )),
    ],
)
def test_operator_file_adds_settings_served_by_the_api(tmp_path, name, text, make_user, auth_headers):
    path = write(tmp_path, name, text)
    app = create_app({"TESTING": True, "SETTINGS_BACKEND": "memory://", "SETTINGS_REGISTRY_FILE": str(path)})
    from settings_server.auth import authenticator

    user = authenticator(app).users.create("op", "pw-op", is_staff=True)
    headers = {"Authorization": f"Token {authenticator(app).tokens.issue(user, 't').key}"}
    client = app.test_client()
    banner = client.get("/api/settings/global/site_banner/", headers=headers).get_json()
    assert (banner["key"], banner["value"], banner["name"]) == ("SITE_BANNER", "hi", "Banner")
    assert len(client.get("/api/settings/global/", headers=headers).get_json()) == 137
    number = client.get("/api/settings/user/FAVOURITE_NUMBER/", headers=headers).get_json()
    assert (number["value"], number["type"], number["units"]) == ("7", "integer", "pts")
    response = client.patch("/api/settings/user/FAVOURITE_NUMBER/", json={"value": 10}, headers=headers)
    assert response.get_json() == {"non_field_errors": ["Ensure this value is less than or equal to 9."]}


def test_operator_notification_method(tmp_path):
    app = create_app({"TESTING": True, "SETTINGS_BACKEND": "memory://",
                      "SETTINGS_REGISTRY_FILE": str(write(tmp_path, "n.json", json.dumps(EXTRA)))})
    from settings_server.auth import authenticator

    user = authenticator(app).users.create("op", "pw-op")
    headers = {"Authorization": f"Token {authenticator(app).tokens.issue(user, 't').key}"}
    rows = app.test_client().get("/api/settings/notification/", headers=headers).get_json()
    sms = next(r for r in rows if r["method"] == "sms")
    assert (sms["key"], sms["value"], sms["required"], sms["model_filters"]) == (
        "NOTIFICATION_METHOD_SMS", "False", True, {"part": 1})
    assert [r["method"] for r in rows] == ["mail", "sms"]


@pytest.mark.parametrize(
    "definition, problem",
    [
        ({"key": "X_ONE", "type": "colour"}, "unknown type 'colour'"),
        ({"key": "X_ONE", "type": "int", "default": 50, "min": 1, "max": 25}, "less than or equal to 25"),
        ({"key": "X_ONE", "type": "choice", "default": "C", "choices": [{"value": "A", "label": "a"}]},
         "Chosen value is not a valid option"),
        ({"key": "X_ONE", "type": "bool", "default": "yes"}, "is not a boolean"),
        ({"key": "X_ONE", "type": "str", "validators": ["shout"]}, "unknown validator 'shout'"),
        ({"key": "X_ONE", "type": "str", "default": "nope", "validators": ["reference_pattern"]},
         "must contain the {ref} field"),
        ({"key": "INVENTREE_INSTANCE", "type": "str"}, "duplicate global setting"),
        ({"key": "lower_case"}, "upper case"),
        ({"key": "X_ONE", "colour": "red"}, "unknown fields ['colour']"),
        ({"key": "X_ONE", "category": ""}, "category must be a non-empty name"),
        ({"key": "X_ONE", "category": ["Server"]}, "category must be a non-empty name"),
    ],
)
def test_bad_definition_stops_the_start_naming_file_key_and_problem(tmp_path, definition, problem):
    path = write(tmp_path, "bad.json", json.dumps({"global": [definition]}))
    with pytest.raises(RegistryError) as raised:
        create_app({"TESTING": True, "SETTINGS_BACKEND": "memory://", "SETTINGS_REGISTRY_FILE": str(path)})
    message = str(raised.value)
    assert str(path) in message and definition["key"] in message and problem in message


@pytest.mark.parametrize(
    "name, text, problem",
    [
        ("broken.json", "{", "not valid json"),
        ("broken.yaml", "global: [", "not valid yaml"),
        ("broken.toml", "global = [", "not valid toml"),
        ("list.json", "[]", "top level must be a mapping"),
        ("typo.json", '{"globals": []}', "unknown top-level entries"),
        ("shape.json", '{"global": {"key": "X"}}', "must be a list"),
    ],
)
def test_bad_file_stops_the_start(tmp_path, name, text, problem):
    path = write(tmp_path, name, text)
    with pytest.raises(RegistryError, match=problem) as raised:
        load_registry(path)
    assert str(path) in str(raised.value)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(RegistryError, match="cannot read registry file") as raised:
        load_registry(tmp_path / "absent.json")
    assert "absent.json" in str(raised.value)


def test_readme_example_registry_file_loads(tmp_path):
    from pathlib import Path

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    start = readme.index("```yaml\n") + len("```yaml\n")
    path = write(tmp_path, "example.yaml", readme[start : readme.index("```", start)])
    registry = load_registry(path)
    assert "SITE_BANNER" in registry.global_settings
    assert registry.user_settings["ROWS_PER_PAGE"].max == 500
    assert registry.notification_methods["sms"].settings[0].key == "NOTIFICATION_METHOD_SMS"
