"""User accounts, kept through the storage interface.

Storage layout (all values JSON):

* namespace ``users``: ``"<id>"`` -> the account record (see :meth:`User.to_record`), including
  the salted password hash; never the password.
* namespace ``usernames``: ``"<username>"`` -> id. Claimed with ``compare_and_set`` before the
  record is written, so two concurrent creations of one name cannot both succeed.
* counter ``user_id``: the last id handed out (ids start at 1 and are never reused).

Usernames are case-sensitive, as in Django.
"""

from __future__ import annotations

import dataclasses
import hmac
import re
import secrets
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from werkzeug.security import check_password_hash, generate_password_hash

from backends import KeyValueStore

USERS = "users"
USERNAMES = "usernames"
USER_ID_COUNTER = "user_id"

#: Django's default username rule: 1–150 letters, digits and ``@ . + - _``.
USERNAME_RULE = re.compile(r"[\w.@+-]{1,150}")

#: Checked so that a login attempt for an unknown user costs as much as a real one: a hash made
#: by ``generate_password_hash`` with werkzeug's default method (a test keeps the two equal).
#: Written out rather than made at import: scrypt with these parameters allocates 32 MiB, which
#: would be every worker's peak memory.
_DUMMY_HASH = (
    "scrypt:32768:8:1$SjliKJvUMdggD61M$84eade64277a142d5f2c6f53bfdc98907439209d332972e25ad14a2307"
    "2ac06a9231ce4e532996850e1de2421e5737c8ce176e846ffce7cbbf2264957e9793e7"
)

_CAS_ATTEMPTS = 20
_REMEMBERED_PASSWORDS = 1024
_REMEMBERED_USERS = 256  # records kept with the User made from them


class UserError(Exception):
    """A user operation that cannot be carried out; the message is fit for an operator."""


class DuplicateUser(UserError):
    """The username is already taken."""


class UnknownUser(UserError):
    """No user with that id or name."""


class InvalidUsername(UserError):
    """The username breaks the naming rule."""


@dataclass(frozen=True)
class User:
    """An account as the API sees it. ``password_hash`` is empty for an account that cannot log
    in with a password (token-only); it never appears in ``repr``."""

    id: int
    username: str
    first_name: str = ""
    last_name: str = ""
    email: str = ""
    is_staff: bool = False
    is_superuser: bool = False
    is_active: bool = True
    password_hash: str = field(default="", repr=False)

    def to_record(self) -> dict[str, Any]:
        """The stored form: every field, as JSON-compatible values."""
        return dataclasses.asdict(self)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> User:
        return cls(**{key: value for key, value in record.items() if key in _USER_FIELDS})


_USER_FIELDS = frozenset(f.name for f in dataclasses.fields(User))


#: Fields :meth:`UserDirectory.update` may change.
UPDATABLE_FIELDS = frozenset(
    {"first_name", "last_name", "email", "is_staff", "is_superuser", "is_active"}
)


class UserDirectory:
    """Create, find and change accounts in ``store``. Every method may raise
    :class:`backends.StorageUnavailable`; the documented :class:`UserError` subclasses are the
    only other errors."""

    def __init__(self, store: KeyValueStore) -> None:
        self._store = store
        # Passwords this process has verified against a stored hash, as keyed digests (never
        # the passwords): Basic auth pays for scrypt once per (user, hash, password), not on
        # every request. A changed hash (new password) misses, so it is checked again.
        self._verified: dict[tuple[int, str], bytes] = {}
        self._verified_key = secrets.token_bytes(32)
        # id -> the record last read and the user made from it, for a few recent users (an
        # unchanged record is not made into a User again: token authentication reads it on
        # every request; a few, as every one costs ~1.3 kB)
        self._read: dict[int, tuple[dict[str, Any], User]] = {}

    def create(
        self,
        username: str,
        password: str | None = None,
        *,
        is_staff: bool = False,
        is_superuser: bool = False,
        email: str = "",
        first_name: str = "",
        last_name: str = "",
    ) -> User:
        """Create an active account and return it. ``password=None`` makes an account that
        cannot log in with a password. Raises :class:`InvalidUsername` or
        :class:`DuplicateUser`."""
        if not USERNAME_RULE.fullmatch(username):
            raise InvalidUsername(
                f"invalid username {username!r}: use 1-150 letters, digits and @ . + - _"
            )
        user_id = self._store.incr(USER_ID_COUNTER)
        if not self._store.compare_and_set(USERNAMES, username, None, user_id):
            raise DuplicateUser(f"user {username!r} already exists")
        user = User(
            id=user_id,
            username=username,
            first_name=first_name,
            last_name=last_name,
            email=email,
            is_staff=is_staff,
            is_superuser=is_superuser,
            password_hash=generate_password_hash(password) if password is not None else "",
        )
        self._store.set(USERS, str(user_id), user.to_record())
        return user

    def reserve_ids(self, count: int) -> range:
        """``count`` consecutive new ids, never handed out again (for bulk writes)."""
        last = self._store.incr(USER_ID_COUNTER, count)
        return range(last - count + 1, last + 1)

    @staticmethod
    def entries(user: User) -> dict[str, dict[str, Any]]:
        """What stores ``user`` (the record and the claim of its name), for a bulk
        ``set_many`` (import, benchmark data); :meth:`create` claims the name first instead,
        so that two creations of one name cannot both succeed."""
        return {USERS: {str(user.id): user.to_record()}, USERNAMES: {user.username: user.id}}

    def ids_by_username(self) -> dict[str, int]:
        """Every claimed username and its user's id, in one read."""
        return self._store.get_all(USERNAMES)

    def get(self, user_id: int) -> User | None:
        """The user with ``user_id``, or ``None`` (one store round trip)."""
        ((namespace, (key,)),) = self.planned_reads(user_id).items()
        record = self._store.get(namespace, key)
        if record is None:
            return None
        read = self._read.get(user_id)
        if read is not None and read[0] == record:
            return read[1]
        user = User.from_record(record)
        if len(self._read) >= _REMEMBERED_USERS:
            self._read.clear()
        self._read[user_id] = (dict(record), user)
        return user

    @staticmethod
    def planned_reads(user_id: int) -> dict[str, list[str]]:
        """What :meth:`get` reads, to fetch it ahead with other reads."""
        return {USERS: [str(user_id)]}

    def get_by_username(self, username: str) -> User | None:
        """The user called ``username``, or ``None``."""
        user_id = self._store.get(USERNAMES, username)
        return None if user_id is None else self.get(user_id)

    def require(self, username: str) -> User:
        """As :meth:`get_by_username`, but raises :class:`UnknownUser` instead of ``None``."""
        user = self.get_by_username(username)
        if user is None:
            raise UnknownUser(f"no user named {username!r}")
        return user

    def list(self) -> list[User]:
        """Every account, by id."""
        records = self._store.get_all(USERS)
        return sorted((User.from_record(r) for r in records.values()), key=lambda u: u.id)

    def exists_any(self) -> bool:
        """Whether at least one username has been claimed."""
        return bool(self._store.get_all(USERNAMES))

    def authenticate(self, username: str, password: str) -> User | None:
        """The active user whose password this is, else ``None``. Takes about as long for an
        unknown name as for a wrong password."""
        user = self.get_by_username(username)
        if user is None:
            _off_the_loop(check_password_hash, _DUMMY_HASH, password)
            return None
        if not user.is_active or not self._check_remembered(user, password):
            return None
        return user

    def _check_remembered(self, user: User, password: str) -> bool:
        """:meth:`check_password`, answered from memory for a password verified before."""
        seen = (user.id, user.password_hash)
        fingerprint = hmac.digest(self._verified_key, password.encode(), "sha256")
        remembered = self._verified.get(seen)
        if remembered is not None and hmac.compare_digest(remembered, fingerprint):
            return True
        if not self.check_password(user, password):
            return False
        if len(self._verified) >= _REMEMBERED_PASSWORDS:
            self._verified.clear()
        self._verified[seen] = fingerprint
        return True

    @staticmethod
    def check_password(user: User, password: str) -> bool:
        """Whether ``password`` is the user's password (always ``False`` without one)."""
        if not user.password_hash:
            _off_the_loop(check_password_hash, _DUMMY_HASH, password)
            return False
        return _off_the_loop(check_password_hash, user.password_hash, password)

    def set_password(self, user_id: int, password: str) -> User:
        """Replace the password (salted scrypt hash). Ends sessions made with the old one."""
        password_hash = generate_password_hash(password)
        return self._change(
            user_id, lambda user: dataclasses.replace(user, password_hash=password_hash)
        )

    def update(self, user_id: int, **changes: Any) -> User:
        """Change profile fields and flags (see :data:`UPDATABLE_FIELDS`); returns the result.
        Raises :class:`UnknownUser`, or ``TypeError`` for a field that may not change here."""
        unknown = set(changes) - UPDATABLE_FIELDS
        if unknown:
            raise TypeError(f"cannot update {', '.join(sorted(unknown))}")
        return self._change(user_id, lambda user: dataclasses.replace(user, **changes))

    def deactivate(self, user_id: int) -> User:
        """Refuse every later login and token of this user, keeping the account."""
        return self.update(user_id, is_active=False)

    def delete(self, user_id: int) -> bool:
        """Remove the account and free its name; ``True`` if it existed. The caller removes
        what else belongs to the user (tokens: :meth:`TokenStore.purge_user`)."""
        user = self.get(user_id)
        if user is None:
            return False
        self._store.delete(USERS, str(user_id))
        if self._store.get(USERNAMES, user.username) == user_id:
            self._store.delete(USERNAMES, user.username)
        return True

    def _change(self, user_id: int, change: Callable[[User], User]) -> User:
        """Read-modify-write of one record with optimistic concurrency."""
        key = str(user_id)
        for _ in range(_CAS_ATTEMPTS):
            record = self._store.get(USERS, key)
            if record is None:
                raise UnknownUser(f"no user with id {user_id}")
            updated = change(User.from_record(record))
            if self._store.compare_and_set(USERS, key, record, updated.to_record()):
                return updated
        raise UserError(f"user {user_id} is being changed concurrently; try again")


def _off_the_loop(function: Callable[..., bool], *args: str) -> bool:
    """``function(*args)`` in a real thread when the process runs under gevent (the shipped
    worker, see :mod:`settings_server.serving`): scrypt takes ~200 ms of CPU and releases the
    GIL, so the worker's other connections go on meanwhile. A plain call otherwise."""
    monkey = sys.modules.get("gevent.monkey")
    if monkey is None or not monkey.is_module_patched("threading"):
        return function(*args)
    from gevent import get_hub

    return get_hub().threadpool.apply(function, args)
