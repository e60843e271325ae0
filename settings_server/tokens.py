"""API tokens: ``inv-<40 hex>-YYYYMMDD`` (docs/contract.md §3.2), kept only as SHA-256 hashes (§14 row 16).

Storage layout (all values JSON):

* namespace ``tokens``: ``"<sha256 hex of the whole token>"`` -> the token record
  (``id, user, name, created, expiry, revoked, user_agent, remote_addr``). Token authentication
  reads exactly this one entry, then the user record.
* namespace ``user:<id>/tokens``: ``"<token id>"`` -> ``{"digest": ..., "name": ...}``, the
  per-user index used to list, re-issue by name and revoke without scanning every token.
* counter ``token_id``: the last token id handed out.

Revoked and expired records are kept so that their use is answered with the precise 401 message
(§3.1); :meth:`TokenStore.purge_user` removes them with the user.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from marshmallow import ValidationError

from backends import KeyValueStore

from .fields import clean_text
from .users import User, UserDirectory

TOKENS = "tokens"
TOKEN_ID_COUNTER = "token_id"
LIFETIME = timedelta(days=365)
NAME_MAX_LENGTH = 100

_TOKEN = re.compile(r"inv-[0-9a-f]{40}-[0-9]{8}")
_REMEMBERED_OWNERS = 10_000
_PARSED_TOKENS = 256


def utc_now() -> datetime:
    return datetime.now(UTC)


def user_index(user_id: int) -> str:
    """The namespace listing one user's tokens (grouped with the user's other namespaces)."""
    return f"user:{user_id}/tokens"


def digest(key: str) -> str:
    """What is stored in place of the token: its SHA-256, hex."""
    return hashlib.sha256(key.encode()).hexdigest()


def token_digest(key: str) -> str | None:
    """The digest ``key`` would be stored under, or ``None`` for a key that is not shaped
    like a token (refused without a read)."""
    return digest(key) if _TOKEN.fullmatch(key) else None


class InvalidTokenName(ValueError):
    """A token name carrying HTML markup."""


def sanitise_name(raw: str) -> str:
    """A token name as docs/contract.md §11.2 stores it: non-printables removed, trimmed, inner spaces as
    ``-``, at most 100 characters. Raises :class:`InvalidTokenName` for HTML markup."""
    try:
        text = clean_text(raw)
    except ValidationError as exc:
        raise InvalidTokenName(exc.messages[0]) from None
    return text.replace(" ", "-")[:NAME_MAX_LENGTH]


class TokenRejected(Exception):
    """Token authentication failed; the message is the exact 401 ``detail`` (§3.1)."""


@dataclass(frozen=True)
class ApiToken:
    """A token's stored facts; the secret itself is never kept."""

    id: int
    user_id: int
    name: str
    created: datetime
    expiry: date
    revoked: bool = False
    user_agent: str = ""
    remote_addr: str = ""
    digest: str = field(default="", repr=False)

    def expired(self, today: date) -> bool:
        """Usable through its expiry date, refused from the day after."""
        return today > self.expiry

    def live(self, today: date) -> bool:
        return not self.revoked and not self.expired(today)

    def status(self, today: date) -> str:
        """``live``, ``revoked`` or ``expired``, as the CLI and ``/api/user/tokens/`` show it."""
        if self.revoked:
            return "revoked"
        return "expired" if self.expired(today) else "live"

    def to_record(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "user": self.user_id,
            "name": self.name,
            "created": self.created.isoformat(),
            "expiry": self.expiry.isoformat(),
            "revoked": self.revoked,
            "user_agent": self.user_agent,
            "remote_addr": self.remote_addr,
        }

    @classmethod
    def from_record(cls, record: dict[str, Any], token_digest: str) -> ApiToken:
        return cls(
            id=record["id"],
            user_id=record["user"],
            name=record["name"],
            created=datetime.fromisoformat(record["created"]),
            expiry=date.fromisoformat(record["expiry"]),
            revoked=record["revoked"],
            user_agent=record.get("user_agent", ""),
            remote_addr=record.get("remote_addr", ""),
            digest=token_digest,
        )


@dataclass(frozen=True)
class IssuedToken:
    """A freshly issued token: ``key`` is the secret, shown to its owner once."""

    key: str
    token: ApiToken = field(repr=False)


class TokenStore:
    """Issue, check and revoke tokens. ``now`` is the clock (UTC ``datetime``); tests replace it
    to move time. Every method may raise :class:`backends.StorageUnavailable`."""

    def __init__(
        self,
        store: KeyValueStore,
        users: UserDirectory,
        now: Callable[[], datetime] = utc_now,
    ) -> None:
        self._store = store
        self._users = users
        self.now = now
        self._owners: dict[str, int] = {}  # digest -> owner's id: a token never changes hands
        # digest -> the record last read and the token made from it, for a few recent tokens:
        # an unchanged record is not parsed again (a few, as every one costs ~1.5 kB)
        self._parsed: dict[str, tuple[dict[str, Any], ApiToken]] = {}

    def planned_reads(self, token_digest: str | None) -> tuple[int | None, dict[str, list[str]]]:
        """What :meth:`authenticate_digest` will read for ``token_digest`` (see
        :func:`token_digest`), to fetch it all in one round trip, and the owner's id when this
        process has seen the token before."""
        if token_digest is None:
            return None, {}
        owner = self._owners.get(token_digest)
        if owner is None:
            return None, {TOKENS: [token_digest]}
        return owner, {TOKENS: [token_digest], **self._users.planned_reads(owner)}

    def issue(
        self, user: User, name: str = "", *, user_agent: str = "", remote_addr: str = ""
    ) -> IssuedToken:
        """A new token for ``user`` named ``name`` (already sanitised), valid 365 days. The
        user's previous live tokens of that name are revoked afterwards, so a failure midway
        leaves the old token working."""
        created = self.now()
        key = f"inv-{secrets.token_hex(20)}-{created:%Y%m%d}"
        token = ApiToken(
            id=self._store.incr(TOKEN_ID_COUNTER),
            user_id=user.id,
            name=name,
            created=created,
            expiry=created.date() + LIFETIME,
            user_agent=user_agent[:255],
            remote_addr=remote_addr,
            digest=digest(key),
        )
        previous = [t for t in self.list_for_user(user.id) if t.name == name]
        # Index first (see entries): a crash between the writes leaves an index entry without
        # a token (skipped when listing), never a working token its owner cannot see or revoke.
        for namespace, values in self.entries(token).items():
            for entry_key, value in values.items():
                self._store.set(namespace, entry_key, value)
        self._revoke_all(previous)
        return IssuedToken(key, token)

    def reserve_ids(self, count: int) -> range:
        """``count`` consecutive new token ids, never handed out again (for bulk writes)."""
        last = self._store.incr(TOKEN_ID_COUNTER, count)
        return range(last - count + 1, last + 1)

    @staticmethod
    def entries(token: ApiToken) -> dict[str, dict[str, Any]]:
        """What stores ``token``: its owner's index entry, then the record (in that order, for
        writers that write them one by one), for one ``set_many`` or :meth:`issue`."""
        return {
            user_index(token.user_id): {str(token.id): {"digest": token.digest, "name": token.name}},
            TOKENS: {token.digest: token.to_record()},
        }

    def find(self, token_digest: str) -> ApiToken | None:
        """The token stored under ``token_digest``, whoever owns it, or ``None``."""
        record = self._store.get(TOKENS, token_digest)
        return None if record is None else ApiToken.from_record(record, token_digest)

    def authenticate(self, key: str) -> tuple[User, ApiToken]:
        """The active user and the token for ``key``: two store reads (token, user). Raises
        :class:`TokenRejected` with the §3.1 message for an unknown, revoked or expired token or
        an inactive owner."""
        return self.authenticate_digest(token_digest(key))

    def authenticate_digest(self, token_digest: str | None) -> tuple[User, ApiToken]:
        """:meth:`authenticate` of the key whose :func:`token_digest` this is."""
        if token_digest is None:
            raise TokenRejected("Invalid token.")
        record = self._store.get(TOKENS, token_digest)
        if record is None:
            raise TokenRejected("Invalid token.")
        parsed = self._parsed.get(token_digest)
        if parsed is not None and parsed[0] == record:
            token = parsed[1]
        else:
            token = ApiToken.from_record(record, token_digest)
            if len(self._parsed) >= _PARSED_TOKENS:
                self._parsed.clear()
            self._parsed[token_digest] = (dict(record), token)
        if len(self._owners) >= _REMEMBERED_OWNERS:
            self._owners.clear()
        self._owners[token_digest] = token.user_id
        user = self._users.get(token.user_id)
        if user is None:
            raise TokenRejected("Invalid token.")
        if not user.is_active:
            raise TokenRejected("User inactive or deleted.")
        if token.revoked:
            raise TokenRejected("Token has been revoked")
        if token.expired(self.now().date()):
            raise TokenRejected("Token has expired")
        return user, token

    def list_for_user(self, user_id: int) -> list[ApiToken]:
        """Every token of the user (live, revoked and expired), oldest first."""
        index = self._store.get_all(user_index(user_id))
        digests = {entry["digest"]: int(token_id) for token_id, entry in index.items()}
        records = self._store.get_many(TOKENS, digests) if digests else {}
        tokens = [ApiToken.from_record(record, d) for d, record in records.items()]
        return sorted(tokens, key=lambda t: t.id)

    def revoke(
        self, user_id: int, *, name: str | None = None, token_id: int | None = None
    ) -> list[ApiToken]:
        """Revoke the user's live tokens called ``name``, or the one with ``token_id`` (give
        exactly one). Returns the tokens that were live and now are not."""
        if (name is None) == (token_id is None):
            raise TypeError("give exactly one of name and token_id")
        today = self.now().date()
        chosen = [
            t
            for t in self.list_for_user(user_id)
            if (t.name == name if name is not None else t.id == token_id) and t.live(today)
        ]
        self._revoke_all(chosen)
        return chosen

    def purge_user(self, user_id: int) -> None:
        """Delete every token of the user and the user's index (when the user is deleted)."""
        index = user_index(user_id)
        for token_id, entry in self._store.get_all(index).items():
            self._store.delete(TOKENS, entry["digest"])
            self._store.delete(index, token_id)

    def _revoke_all(self, tokens: list[ApiToken]) -> None:
        today = self.now().date()
        updates = {}
        for token in tokens:
            if token.live(today):
                record = token.to_record()
                record["revoked"] = True
                updates[token.digest] = record
        if updates:
            self._store.set_many({TOKENS: updates})
