"""The caller's account and API tokens: ``/api/user/me/`` and ``/api/user/token/`` (docs/contract.md §11)."""

from __future__ import annotations

from typing import Any

from flask import Response
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import EXCLUDE, Schema, fields

from ..auth import authenticator, request_metadata, require_user
from ..errors import fail
from ..rendering import json_response
from ..tokens import InvalidTokenName, sanitise_name
from ..users import User

blp = Blueprint("user", __name__, url_prefix="/api/user", description="The caller's account")


class UserProfile(Schema):
    """Profile fields InvenTree clients read; settings-server keeps no profiles, so they hold
    neutral values."""

    language = fields.String(allow_none=True)
    theme = fields.Raw(allow_none=True)
    widgets = fields.Raw(allow_none=True)
    displayname = fields.String(allow_none=True)
    position = fields.String(allow_none=True)
    status = fields.String(allow_none=True)
    location = fields.String(allow_none=True)
    active = fields.Boolean()
    contact = fields.String(allow_none=True)
    type = fields.String()
    organisation = fields.String(allow_none=True)
    primary_group = fields.Integer(allow_none=True)


class MeUser(Schema):
    """The authenticated user, fields in InvenTree's order."""

    pk = fields.Integer()
    username = fields.String()
    first_name = fields.String()
    last_name = fields.String()
    email = fields.String()
    groups = fields.List(fields.Dict())
    is_staff = fields.Boolean()
    is_superuser = fields.Boolean()
    is_active = fields.Boolean()
    profile = fields.Nested(UserProfile)


class GetAuthToken(Schema):
    """A newly issued token; the secret is shown only in this response."""

    token = fields.String()
    name = fields.String()
    expiry = fields.Date()


class TokenQuery(Schema):
    """Query of ``GET /api/user/token/``; other parameters (``format``) are left to others."""

    class Meta:
        unknown = EXCLUDE

    name = fields.String(load_default="", metadata={"description": "Name of the token"})


_NEUTRAL_PROFILE: dict[str, Any] = {
    "language": None,
    "theme": None,
    "widgets": None,
    "displayname": None,
    "position": None,
    "status": None,
    "location": None,
    "active": True,
    "contact": None,
    "type": "internal",
    "organisation": None,
    "primary_group": None,
}


def me_body(user: User) -> dict[str, Any]:
    """The §11.3 body for ``user``."""
    return MeUser().dump(
        {
            "pk": user.id,
            "username": user.username,
            "first_name": user.first_name,
            "last_name": user.last_name,
            "email": user.email,
            "groups": [],
            "is_staff": user.is_staff,
            "is_superuser": user.is_superuser,
            "is_active": user.is_active,
            "profile": _NEUTRAL_PROFILE,
        }
    )


@blp.route("/me/")
class Me(MethodView):
    @blp.response(200, MeUser)
    def get(self) -> Response:
        """The authenticated user."""
        return json_response(me_body(require_user()))


@blp.route("/token/")
class Token(MethodView):
    @blp.arguments(TokenQuery, location="query", as_kwargs=True)
    @blp.response(200, GetAuthToken)
    def get(self, name: str) -> Response:
        """Issue a new API token named ``name``, revoking the caller's previous live token of
        that name; also logs the caller into a session (``sessionid`` and ``csrftoken``)."""
        user = require_user()
        try:
            clean_name = sanitise_name(name)
        except InvalidTokenName as exc:
            fail(400, {"non_field_errors": [str(exc)]})
        auth = authenticator()
        issued = auth.tokens.issue(user, clean_name, **request_metadata())
        response = json_response(
            GetAuthToken().dump(
                {"token": issued.key, "name": issued.token.name, "expiry": issued.token.expiry}
            )
        )
        auth.log_in(response, user)
        return response
