"""``/api/user/tokens/``: the caller lists, creates and revokes their own API tokens.

A settings-server extension (the settings page's *Tokens* panel uses it); InvenTree's
``/api/user/token/`` is unchanged. Like every token, a new one revokes the caller's live token of
the same name, and its secret is shown only in the answer that creates it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from flask import Response
from flask.views import MethodView
from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate

from ..auth import authenticator, request_metadata, require_user
from ..errors import not_found
from ..rendering import json_response
from ..tokens import NAME_MAX_LENGTH, ApiToken, InvalidTokenName, sanitise_name
from .drf import BODY, Blueprint
from .schemas import AUTH_ERRORS, error

blp = Blueprint(
    "tokens", __name__, url_prefix="/api/user/tokens", description="The caller's own API tokens"
)

NAME_NEEDED = f"Give the token a name of 1 to {NAME_MAX_LENGTH} characters."


class TokenInfo(Schema):
    """One of the caller's tokens; its secret is never shown again."""

    id = fields.Integer()
    name = fields.String()
    created = fields.DateTime()
    expiry = fields.Date()
    status = fields.String(metadata={"enum": ["live", "revoked", "expired"]})


class NewTokenBody(Schema):
    """What ``POST /api/user/tokens/`` reads (JSON, form or multipart)."""

    class Meta:
        unknown = EXCLUDE

    name = fields.String(
        required=True,
        validate=validate.Length(min=1, max=NAME_MAX_LENGTH, error=NAME_NEEDED),
        metadata={"description": "Name of the token; a live token of the same name is revoked"},
    )


class NewToken(Schema):
    """A newly issued token: ``token`` is the secret, shown only in this answer."""

    id = fields.Integer()
    token = fields.String()
    name = fields.String()
    expiry = fields.Date()


def signed_in(view: Callable[..., Any]) -> Callable[..., Any]:
    """401 for anonymous callers before the body is read, as the settings views answer."""

    @functools.wraps(view)
    def checked(*args: Any, **kwargs: Any) -> Any:
        require_user()
        return view(*args, **kwargs)

    return checked


def token_info(token: ApiToken) -> dict[str, Any]:
    today = authenticator().tokens.now().date()
    return TokenInfo().dump({**vars(token), "status": token.status(today)})


@blp.route("/")
class Tokens(MethodView):
    """The caller's own API tokens."""

    @blp.response(200, TokenInfo(many=True))
    @blp.doc(responses=AUTH_ERRORS)
    def get(self) -> Response:
        """The caller's tokens, oldest first: live, revoked and expired; never their secrets."""
        user = require_user()
        tokens = authenticator().tokens.list_for_user(user.id)
        return json_response([token_info(token) for token in tokens])

    @signed_in
    @blp.arguments(NewTokenBody, location=BODY)
    @blp.response(201, NewToken)
    @blp.doc(responses={
        **AUTH_ERRORS,
        "400": error("Invalid name or body"),
        "403": error("CSRF failure"),
        "415": error("Unsupported body type"),
    })
    def post(self, body: dict[str, Any]) -> Response:
        """Issue a token named ``name`` for the caller (revoking their live one of that name)
        and show its secret, once."""
        user = require_user()
        try:
            name = sanitise_name(body["name"])
        except InvalidTokenName as exc:
            raise ValidationError({"name": [str(exc)]}) from None
        if not name:
            raise ValidationError({"name": [NAME_NEEDED]})
        issued = authenticator().tokens.issue(user, name, **request_metadata())
        token = issued.token
        body = {"id": token.id, "token": issued.key, "name": token.name, "expiry": token.expiry}
        return json_response(NewToken().dump(body), 201)


@blp.route("/<int:token_id>/")
class TokenDetail(MethodView):
    """One of the caller's own API tokens."""

    @blp.response(204)
    @blp.doc(responses={
        **AUTH_ERRORS, "403": error("CSRF failure"), "404": error("No such token of yours"),
    })
    def delete(self, token_id: int) -> Response:
        """Revoke one of the caller's tokens; another user's id is 404 like one that does not
        exist, and revoking a token that is no longer live changes nothing."""
        user = require_user()
        tokens = authenticator().tokens
        if not any(token.id == token_id for token in tokens.list_for_user(user.id)):
            not_found()
        tokens.revoke(user.id, token_id=token_id)
        return Response(status=204)
