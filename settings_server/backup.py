"""Backup and move: a store as one JSON document (export, import) and a whole store copied raw
to another backend (migrate).

The export document, format version 1 (values exactly as stored: wire strings)::

    {"format": "settings-server-export", "version": 1, "exported_at": "...Z",
     "includes_secrets": false,
     "global": {"KEY": "value", ...},
     "users": {"alice": {"id": 2, "first_name": "", "last_name": "", "email": "",
                         "is_staff": false, "is_superuser": false, "is_active": true}},
     "user_settings": {"alice": {"KEY": "value"}},
     "notification_settings": {"alice": {"<method>": {"KEY": "value"}}}}

With secrets, each user also has ``password_hash``, and there are ``tokens`` (``{"alice":
[token record + "digest"]}``) and ``server`` (``{"secret_key": ...}``). Users are matched by
username on import: an existing account keeps its id, a new one gets the target store's next id,
and settings and tokens follow the username. Import checks the whole document first (every
problem is reported, nothing written), then writes everything in one ``store.commit``, with a
history entry (source ``import``) for each setting it changes; a change of a pinned setting is
a problem.

Migrate copies every namespace as stored (settings, users, tokens, pk ordinals, counters, the
secret key), so ids, pks, tokens and sessions survive a change of backend.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from marshmallow import ValidationError

from backends import COUNTERS, KeyValueStore

from .auth import SECRET_ENTRY, SECRET_NAMESPACE
from .history import Change, History
from .progress import Progress
from .registry import SettingsRegistry
from .service import GLOBAL, NOTIFICATION, PINNED, USER, Kind, SettingsService
from .tokens import ApiToken, TokenStore
from .users import USERNAME_RULE, User, UserDirectory

FORMAT = "settings-server-export"
VERSION = 1
PROFILE_FIELDS = {
    "first_name": str,
    "last_name": str,
    "email": str,
    "is_staff": bool,
    "is_superuser": bool,
    "is_active": bool,
}
TOKEN_FIELDS = ("id", "name", "created", "expiry", "revoked", "user_agent", "remote_addr")
SECTIONS = {
    "format",
    "version",
    "exported_at",
    "includes_secrets",
    "global",
    "users",
    "user_settings",
    "notification_settings",
    "tokens",
    "server",
}


class BackupError(Exception):
    """An export, import or migration that cannot be done; ``problems`` lists every reason."""

    def __init__(self, summary: str, problems: Iterable[str] = ()) -> None:
        self.problems = list(problems)
        lines = [summary, *(f"  - {problem}" for problem in self.problems)]
        super().__init__("\n".join(lines))


# -- export ------------------------------------------------------------------------------------


def export_document(
    store: KeyValueStore,
    registry: SettingsRegistry,
    *,
    include_secrets: bool = False,
    quiet: bool = False,
) -> dict[str, Any]:
    """Every stored setting and every user of ``store`` as one JSON-ready document (see the
    module docstring). Password hashes, tokens and the secret key only with ``include_secrets``."""
    methods = {key: d.method for key, d in registry.notification_settings.items()}
    users = UserDirectory(store)
    tokens = TokenStore(store, users)
    records = [user.to_record() for user in users.list()]
    document: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "exported_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "includes_secrets": include_secrets,
        "global": dict(sorted(store.get_all(GLOBAL.namespace(None)).items())),
        "users": {},
        "user_settings": {},
        "notification_settings": {},
    }
    if include_secrets:
        document["tokens"] = {}
        document["server"] = store.get_all(SECRET_NAMESPACE)
    progress = Progress("export: users", len(records), quiet=quiet)
    for record in records:
        username, user_id = record["username"], record["id"]
        user = {"id": user_id, **{name: record.get(name) for name in PROFILE_FIELDS}}
        if include_secrets:
            user["password_hash"] = record.get("password_hash", "")
        document["users"][username] = user
        settings = store.get_all(USER.namespace(user_id))
        if settings:
            document["user_settings"][username] = dict(sorted(settings.items()))
        notifications: dict[str, dict[str, str]] = {}
        for key, value in sorted(store.get_all(NOTIFICATION.namespace(user_id)).items()):
            notifications.setdefault(methods.get(key) or "unknown", {})[key] = value
        if notifications:
            document["notification_settings"][username] = notifications
        if include_secrets:
            stored_tokens = [
                {**{name: token.to_record()[name] for name in TOKEN_FIELDS}, "digest": token.digest}
                for token in tokens.list_for_user(user_id)
            ]
            if stored_tokens:
                document["tokens"][username] = stored_tokens
        progress.advance()
    return document


# -- import ------------------------------------------------------------------------------------


@dataclass
class _UserImport:
    username: str
    user_id: int | None  # None: a new account, id given when written
    source_id: int | None  # its id in the exported store: new accounts are numbered in this order
    record: dict[str, Any] | None  # the account record to write (without id), None: unchanged
    settings: dict[str, str] = field(default_factory=dict)  # changed values only
    notifications: dict[str, str] = field(default_factory=dict)
    tokens: list[dict[str, Any]] = field(default_factory=list)  # new tokens (without id)
    logged: list[Change] = field(default_factory=list)  # for the history (user id set on write)


@dataclass
class ImportPlan:
    """What an import writes; :attr:`changes` says it in words, one line per change."""

    global_settings: dict[str, str] = field(default_factory=dict)
    logged: list[Change] = field(default_factory=list)  # the global changes, for the history
    users: list[_UserImport] = field(default_factory=list)
    secret_key: str | None = None
    changes: list[str] = field(default_factory=list)
    unchanged: int = 0
    without_password: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.changes


def plan_import(
    store: KeyValueStore,
    registry: SettingsRegistry,
    document: Any,
    *,
    currency_codes_override: str | None = None,
    pinned: Mapping[str, Any] | None = None,
    quiet: bool = False,
) -> ImportPlan:
    """Check ``document`` against the registry and ``store`` and work out what importing it
    changes; writes nothing. A change of a ``pinned`` setting (see :mod:`.pinned`) is a
    problem. Raises :class:`BackupError` listing every problem found. Progress over the users
    goes to stderr unless ``quiet``."""
    problems: list[str] = []
    if not isinstance(document, dict):
        raise BackupError("not a settings-server export: the top level must be a JSON object")
    if document.get("format") != FORMAT:
        raise BackupError(f"not a settings-server export: 'format' must be {FORMAT!r}")
    if document.get("version") != VERSION:
        raise BackupError(
            f"export format version {document.get('version')!r} is not supported; this "
            f"settings-server reads version {VERSION}"
        )
    problems += [f"unknown section {name!r}" for name in sorted(set(document) - SECTIONS)]
    sections = {}
    for name in ("global", "users", "user_settings", "notification_settings", "tokens", "server"):
        value = document.get(name, {})
        if not isinstance(value, dict):
            problems.append(f"{name}: must be a JSON object, got {type(value).__name__}")
            value = {}
        sections[name] = value

    plan = ImportPlan()
    service = SettingsService(store, registry, currency_codes_override)
    try:
        service.pin(pinned or {})
    except ValueError as exc:
        raise BackupError(f"pinned settings: {exc}") from None
    checker = _SettingsChecker(service, problems)

    stored_global = store.get_all(GLOBAL.namespace(None))
    plan.global_settings = checker.check(GLOBAL, sections["global"], stored_global, "global")
    plan.logged = service.changes(GLOBAL, plan.global_settings, stored_global, None)
    plan.unchanged += len(sections["global"]) - len(plan.global_settings)
    plan.changes += _describe("global", plan.global_settings, stored_global)

    usernames = UserDirectory(store).ids_by_username()
    named = set(sections["users"])
    for part in ("user_settings", "notification_settings", "tokens"):
        for username in sorted(set(sections[part]) - named - set(usernames)):
            problems.append(f"{part}: unknown user {username!r} (not in 'users' nor in the store)")
    everyone = sorted(
        named
        | set(sections["user_settings"])
        | set(sections["notification_settings"])
        | set(sections["tokens"])
    )
    progress = Progress("import: check users", len(everyone), quiet=quiet)
    for username in everyone:
        if username in named or username in usernames:
            plan.users.append(
                _plan_user(
                    store, checker, sections, username, usernames.get(username), plan, problems
                )
            )
        progress.advance()

    secret = sections["server"].get(SECRET_ENTRY)
    if secret is not None:
        if not isinstance(secret, str) or not secret:
            problems.append("server.secret_key: must be a non-empty string")
        elif secret != store.get(SECRET_NAMESPACE, SECRET_ENTRY):
            plan.secret_key = secret
            plan.changes.append(
                "server: secret key replaced (sessions signed with the old one end)"
            )
    if problems:
        raise BackupError(f"nothing imported: {len(problems)} problem(s) in the document", problems)
    return plan


def _plan_user(store, checker, sections, username, user_id, plan, problems) -> _UserImport:
    where = f"users.{username}"
    stored_user = UserDirectory(store).get(user_id) if user_id is not None else None
    stored = stored_user.to_record() if stored_user is not None else None
    given = sections["users"].get(username)
    record = None
    if given is not None:
        if not USERNAME_RULE.fullmatch(username):
            problems.append(f"{where}: invalid username (1-150 letters, digits and @ . + - _)")
        if not isinstance(given, dict):
            problems.append(f"{where}: must be a JSON object")
            given = {}
        for name in sorted(set(given) - set(PROFILE_FIELDS) - {"id", "password_hash"}):
            problems.append(f"{where}: unknown field {name!r}")
        for name, typ in PROFILE_FIELDS.items():
            if name in given and not isinstance(given[name], typ):
                problems.append(f"{where}.{name}: must be a {typ.__name__}")
        if "password_hash" in given and not isinstance(given["password_hash"], str):
            problems.append(f"{where}.password_hash: must be a string")
        base = dict(stored or {"username": username, "password_hash": ""})
        base.pop("id", None)
        wanted = {**base, **{k: v for k, v in given.items() if k != "id"}}
        current = {k: v for k, v in (stored or {}).items() if k != "id"}
        if wanted != current:
            record = wanted
            verb = "new user" if stored is None else "user updated"
            plan.changes.append(f"users: {username}: {verb}")
            if not wanted.get("password_hash"):
                plan.without_password.append(username)
        else:
            plan.unchanged += 1
    source_id = given.get("id") if isinstance(given, dict) else None
    user = _UserImport(username, user_id, source_id if isinstance(source_id, int) else None, record)
    for kind, part in ((USER, "user_settings"), (NOTIFICATION, "notification_settings")):
        values = sections[part].get(username, {})
        if kind is NOTIFICATION and isinstance(values, dict):
            values = checker.flatten_methods(values, f"{part}.{username}")
        current = store.get_all(kind.namespace(user_id)) if user_id is not None else {}
        changed = checker.check(kind, values, current, f"{part}.{username}")
        user.logged += checker.service.changes(kind, changed, current, user_id)
        plan.unchanged += len(values) - len(changed) if isinstance(values, dict) else 0
        plan.changes += _describe(f"{part}: {username}", changed, current)
        if kind is USER:
            user.settings = changed
        else:
            user.notifications = changed
    user.tokens = _plan_tokens(
        store, sections["tokens"].get(username, []), user_id, f"tokens.{username}", problems
    )
    plan.changes += [f"tokens: {username}: token {t['name']!r} added" for t in user.tokens]
    return user


def _plan_tokens(store, tokens, user_id, where, problems) -> list[dict[str, Any]]:
    token_store = TokenStore(store, UserDirectory(store))
    if not isinstance(tokens, list):
        problems.append(f"{where}: must be a list of tokens")
        return []
    new = []
    for number, token in enumerate(tokens):
        try:
            digest = token["digest"]
            if not (isinstance(digest, str) and len(digest) == 64 and int(digest, 16) >= 0):
                raise ValueError("digest must be 64 hex digits")
            record = {name: token[name] for name in TOKEN_FIELDS}
            ApiToken.from_record({**record, "user": 0}, digest)  # parses dates and fields
        except (KeyError, TypeError, ValueError) as exc:
            problems.append(f"{where}[{number}]: not a token record ({type(exc).__name__}: {exc})")
            continue
        existing = token_store.find(digest)
        if existing is None:
            new.append({**record, "digest": digest})
        elif existing.user_id != user_id:
            problems.append(f"{where}[{number}]: this token belongs to another user in the store")
    return new


class _SettingsChecker:
    """Values through the API's write pipeline (:meth:`SettingsService.validate`)."""

    def __init__(self, service: SettingsService, problems: list[str]):
        self.service = service
        self.registry = service.registry
        self.problems = problems

    def flatten_methods(self, methods: Mapping[str, Any], where: str) -> dict[str, Any]:
        flat: dict[str, Any] = {}
        for method, values in methods.items():
            known = self.registry.notification_methods.get(method)
            if known is None:
                self.problems.append(f"{where}: unknown notification method {method!r}")
            elif not isinstance(values, dict):
                self.problems.append(f"{where}.{method}: must be a JSON object")
            else:
                keys = {d.key for d in known.settings}
                for key, value in values.items():
                    if key in keys:
                        flat[key] = value
                    else:
                        self.problems.append(f"{where}.{method}: unknown setting {key!r}")
        return flat

    def check(
        self, kind: Kind, values: Any, stored: Mapping[str, str], where: str
    ) -> dict[str, str]:
        """The normalised values of ``values`` that differ from ``stored``."""
        if not isinstance(values, dict):
            self.problems.append(f"{where}: must be a JSON object of KEY: value")
            return {}
        definitions = self.service.definitions(kind)
        pending = {**stored, **{k: v for k, v in values.items() if isinstance(v, str)}}
        changed = {}
        for key, value in values.items():
            if key not in definitions:
                self.problems.append(f"{where}: unknown setting {key!r}")
                continue
            if not isinstance(value, str):
                self.problems.append(
                    f"{where}.{key}: values are strings as exported, got {type(value).__name__}"
                )
                continue
            try:
                text = self.service.validate(kind, key, value, pending)
            except ValidationError as exc:
                messages = "; ".join(m for ms in exc.messages.values() for m in ms)
                self.problems.append(f"{where}.{key}: {value!r}: {messages}")
                continue
            if stored.get(key) != text:
                if self.service.pinned(kind, key):
                    self.problems.append(f"{where}.{key}: {PINNED}")
                    continue
                changed[key] = text
        return changed


def _describe(where: str, changed: Mapping[str, str], stored: Mapping[str, str]) -> list[str]:
    return [
        f"{where}: {key} = {value!r}" + (f" (was {stored[key]!r})" if key in stored else "")
        for key, value in changed.items()
    ]


def apply_import(
    store: KeyValueStore, plan: ImportPlan, history: History | None = None
) -> dict[str, dict[str, Any]]:
    """Write ``plan`` with one ``store.commit`` (ids for new users and tokens are taken from
    the store's counters first), its setting changes logged in ``history`` (source
    ``import``, no actor); returns what was written."""
    new_users = sorted(
        (user for user in plan.users if user.user_id is None),
        key=lambda user: (user.source_id is None, user.source_id or 0, user.username),
    )
    users = UserDirectory(store)
    token_store = TokenStore(store, users)
    if new_users:
        for user, user_id in zip(new_users, users.reserve_ids(len(new_users)), strict=True):
            user.user_id = user_id
    tokens = [(user, token) for user in plan.users for token in user.tokens]
    token_ids = iter(token_store.reserve_ids(len(tokens)) if tokens else ())

    entries: dict[str, dict[str, Any]] = {}

    def put(namespace: str, values: Mapping[str, Any]) -> None:
        if values:
            entries.setdefault(namespace, {}).update(values)

    put(GLOBAL.namespace(None), plan.global_settings)
    for user in plan.users:
        if user.record is not None:
            account = User.from_record({**user.record, "id": user.user_id})
            for namespace, values in users.entries(account).items():
                put(namespace, values)
        put(USER.namespace(user.user_id), user.settings)
        put(NOTIFICATION.namespace(user.user_id), user.notifications)
    for user, token in tokens:
        record = {name: token[name] for name in TOKEN_FIELDS}
        stored = ApiToken.from_record(
            {**record, "id": next(token_ids), "user": user.user_id}, token["digest"]
        )
        for namespace, values in token_store.entries(stored).items():
            put(namespace, values)
    if plan.secret_key is not None:
        put(SECRET_NAMESPACE, {SECRET_ENTRY: plan.secret_key})
    changes = plan.logged + [
        replace(change, user=user.user_id) for user in plan.users for change in user.logged
    ]
    log = history.log(changes, None, "import") if history is not None else []
    index = store.commit(entries, log=log)
    if history is not None:
        history.committed(index, len(log))
    return entries


# -- migrate -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class MigrationReport:
    namespaces: int
    entries: int


def migrate(
    source: KeyValueStore, target: KeyValueStore, *, force: bool = False, quiet: bool = False
) -> MigrationReport:
    """Copy every namespace of ``source`` into ``target`` as stored, in one ``set_many``, then
    read everything back to check it. ``target`` must be empty unless ``force`` (then entries
    are overwritten, others kept, and counters never go down)."""
    existing = sorted(target.namespaces())
    if existing and not force:
        raise BackupError(
            f"the target store is not empty ({len(existing)} namespaces, e.g. "
            f"{', '.join(existing[:3])}); use --force to copy over it"
        )
    names = sorted(source.namespaces())
    progress = Progress("migrate: read namespaces", len(names), quiet=quiet)
    data: dict[str, dict[str, Any]] = {}
    for namespace in names:
        data[namespace] = source.get_all(namespace)
        progress.advance()
    if force and COUNTERS in data:
        present = target.get_all(COUNTERS)
        data[COUNTERS] = {
            name: max(value, present.get(name, value)) for name, value in data[COUNTERS].items()
        }
    if not quiet:
        print(f"migrate: writing {len(names)} namespaces in one transaction", file=sys.stderr)
    target.set_many(data)

    progress = Progress("migrate: verify namespaces", len(names), quiet=quiet)
    mismatches = []
    for namespace, values in data.items():
        copied = target.get_all(namespace)
        wrong = [key for key, value in values.items() if copied.get(key) != value]
        if wrong:
            mismatches.append(f"{namespace}: {len(wrong)} of {len(values)} entries differ")
        progress.advance()
    if mismatches:
        raise BackupError("the copy does not match the source", mismatches)
    return MigrationReport(len(data), sum(len(values) for values in data.values()))
