"""The ``settings-server`` command: serve the API (``run``, under gunicorn) and manage users,
tokens and backups in the configured store.

Every command acts on the store named by ``SETTINGS_BACKEND`` (the same environment the server
reads, see :mod:`settings_server.config`). Before a user or token command runs,
the admin account of ``SETTINGS_ADMIN_USER``/``SETTINGS_ADMIN_PASSWORD`` is created if the store
has no users yet.

Exit status: 0 on success, 1 when the command cannot be carried out (unknown user, duplicate
name, bad storage URL, store unreachable), 2 for usage errors.

A command group is a function that adds sub-parsers to the top-level parser and sets
``handler`` on each; a later group (``run``, ``export``, ...) is one more entry in
:data:`COMMAND_GROUPS`.
"""

from __future__ import annotations

import argparse
import functools
import getpass
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import date
from typing import Any

from backends import StorageError, store_from_url

from .auth import Authenticator
from .config import from_environment
from .tokens import ApiToken, InvalidTokenName, sanitise_name
from .users import User, UserError


class CommandError(Exception):
    """A command that cannot be carried out; the message is printed, the exit status is 1."""


Handler = Callable[[argparse.Namespace], None]


def _with_accounts(command: Callable[[argparse.Namespace, Authenticator], None]) -> Handler:
    """Run ``command`` on the configured store's users and tokens, after the admin bootstrap,
    and close the store afterwards."""

    @functools.wraps(command)
    def handler(args: argparse.Namespace) -> None:
        config = from_environment()
        store = _configured_store(config)
        try:
            auth = Authenticator(store, config)
            admin = auth.bootstrap_admin()
            if admin is not None:
                print(f"Created admin user {admin.username!r}.", file=sys.stderr)
            command(args, auth)
        finally:
            store.close()

    return handler


def _ask_password(supplied: str | None) -> str:
    if supplied is not None:
        password = supplied
    else:
        password = getpass.getpass("Password: ")
        if getpass.getpass("Password (again): ") != password:
            raise CommandError("passwords do not match")
    if not password:
        raise CommandError("the password must not be empty")
    return password


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


# -- user --------------------------------------------------------------------------------------


@_with_accounts
def _user_create(args: argparse.Namespace, auth: Authenticator) -> None:
    user = auth.users.create(
        args.username,
        _ask_password(args.password),
        is_staff=args.staff or args.superuser,
        is_superuser=args.superuser,
        email=args.email,
    )
    print(f"Created user {user.username!r} (id {user.id}).")


@_with_accounts
def _user_list(args: argparse.Namespace, auth: Authenticator) -> None:
    users = auth.users.list()
    print(f"{'ID':>5}  {'USERNAME':<24} {'STAFF':<5} {'SUPER':<5} ACTIVE")
    for user in users:
        print(
            f"{user.id:>5}  {user.username:<24} {_yes(user.is_staff):<5} "
            f"{_yes(user.is_superuser):<5} {_yes(user.is_active)}"
        )


@_with_accounts
def _user_set_password(args: argparse.Namespace, auth: Authenticator) -> None:
    user = auth.users.require(args.username)
    auth.users.set_password(user.id, _ask_password(args.password))
    print(f"Password of {user.username!r} changed; its sessions have ended.")


@_with_accounts
def _user_deactivate(args: argparse.Namespace, auth: Authenticator) -> None:
    user = auth.users.deactivate(auth.users.require(args.username).id)
    print(f"Deactivated {user.username!r}: its logins, sessions and tokens are refused.")


@_with_accounts
def _user_delete(args: argparse.Namespace, auth: Authenticator) -> None:
    user = auth.users.require(args.username)
    auth.tokens.purge_user(user.id)
    auth.users.delete(user.id)
    print(f"Deleted user {user.username!r} and its tokens.")


def add_user_commands(commands: argparse._SubParsersAction) -> None:
    group = commands.add_parser("user", help="manage user accounts")
    sub = group.add_subparsers(dest="action", required=True, metavar="ACTION")

    create = sub.add_parser("create", help="create a user (asks for the password)")
    create.add_argument("username")
    create.add_argument("--password", help="the password (default: prompt for it)")
    create.add_argument("--staff", action="store_true", help="may change global settings")
    create.add_argument("--superuser", action="store_true", help="superuser (implies --staff)")
    create.add_argument("--email", default="")
    create.set_defaults(handler=_user_create)

    sub.add_parser("list", help="list users").set_defaults(handler=_user_list)

    set_password = sub.add_parser("set-password", help="change a password, ending its sessions")
    set_password.add_argument("username")
    set_password.add_argument("--password", help="the new password (default: prompt for it)")
    set_password.set_defaults(handler=_user_set_password)

    for action, handler, text in (
        ("deactivate", _user_deactivate, "refuse every login and token of a user"),
        ("delete", _user_delete, "delete a user and its tokens"),
    ):
        parser = sub.add_parser(action, help=text)
        parser.add_argument("username")
        parser.set_defaults(handler=handler)


# -- token -------------------------------------------------------------------------------------


def _token_status(token: ApiToken, today: date) -> str:
    if token.revoked:
        return "revoked"
    return "expired" if token.expired(today) else "live"


def _clean_name(raw: str) -> str:
    try:
        return sanitise_name(raw)
    except InvalidTokenName as exc:
        raise CommandError(f"bad token name {raw!r}: {exc}") from exc


@_with_accounts
def _token_create(args: argparse.Namespace, auth: Authenticator) -> None:
    user: User = auth.users.require(args.username)
    issued = auth.tokens.issue(user, _clean_name(args.name))
    print(
        f"Token {issued.token.name!r} (id {issued.token.id}) for {user.username!r}, valid "
        f"through {issued.token.expiry.isoformat()}. It is shown only now:",
        file=sys.stderr,
    )
    print(issued.key)


@_with_accounts
def _token_list(args: argparse.Namespace, auth: Authenticator) -> None:
    user = auth.users.require(args.username)
    today = auth.tokens.now().date()
    print(f"{'ID':>5}  {'NAME':<32} {'CREATED':<10} {'EXPIRY':<10} STATUS")
    for token in auth.tokens.list_for_user(user.id):
        print(
            f"{token.id:>5}  {token.name or '-':<32} {token.created.date().isoformat():<10} "
            f"{token.expiry.isoformat():<10} {_token_status(token, today)}"
        )


@_with_accounts
def _token_revoke(args: argparse.Namespace, auth: Authenticator) -> None:
    user = auth.users.require(args.username)
    if args.id is not None:
        revoked = auth.tokens.revoke(user.id, token_id=args.id)
        what = f"id {args.id}"
    else:
        name = _clean_name(args.name)
        revoked = auth.tokens.revoke(user.id, name=name)
        what = f"name {name!r}"
    if not revoked:
        raise CommandError(f"{user.username!r} has no live token with {what}")
    print(f"Revoked {len(revoked)} token(s) of {user.username!r} with {what}.")


def add_token_commands(commands: argparse._SubParsersAction) -> None:
    group = commands.add_parser("token", help="manage API tokens")
    sub = group.add_subparsers(dest="action", required=True, metavar="ACTION")

    create = sub.add_parser(
        "create", help="issue a token (printed once; replaces a live token of the same name)"
    )
    create.add_argument("username")
    create.add_argument("--name", default="", help="token name (default: empty)")
    create.set_defaults(handler=_token_create)

    listing = sub.add_parser("list", help="list a user's tokens (never their secrets)")
    listing.add_argument("username")
    listing.set_defaults(handler=_token_list)

    revoke = sub.add_parser("revoke", help="revoke a user's live token(s) by name or id")
    revoke.add_argument("username")
    which = revoke.add_mutually_exclusive_group(required=True)
    which.add_argument("--name", help="revoke the live token(s) with this name")
    which.add_argument("--id", type=int, help="revoke the token with this id (see token list)")
    revoke.set_defaults(handler=_token_revoke)


# -- run -------------------------------------------------------------------------------------

GUNICORN_CONFIG = "python:settings_server.gunicorn_conf"
WSGI_APP = "settings_server.wsgi:app"


def _run(args: argparse.Namespace) -> None:
    """Check the configuration by building the app once (nothing is connected), then replace
    this process with gunicorn, so that signals (SIGTERM: graceful stop) reach its arbiter."""
    from .registry import RegistryError

    if args.bind:
        os.environ["SETTINGS_BIND"] = args.bind
    if args.workers is not None:
        os.environ["WEB_CONCURRENCY"] = str(args.workers)
    from . import create_app

    try:
        create_app()
    except (StorageError, RegistryError, ValueError) as exc:
        raise CommandError(f"cannot start: {exc}") from exc
    argv = [sys.executable, "-m", "gunicorn", "--config", GUNICORN_CONFIG, WSGI_APP]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, argv)


def add_run_command(commands: argparse._SubParsersAction) -> None:
    run = commands.add_parser(
        "run",
        help="serve the API under gunicorn (settings_server/gunicorn_conf.py)",
        description="Serve the API under gunicorn with the shipped configuration. Other "
        "gunicorn options can be given in GUNICORN_CMD_ARGS.",
    )
    run.add_argument("--bind", help="address(es), comma-separated (default: SETTINGS_BIND)")
    run.add_argument(
        "--workers", type=int, help="worker processes (default: WEB_CONCURRENCY, else 2 x cores + 1)"
    )
    run.set_defaults(handler=_run)


# -- export, import, migrate ------------------------------------------------------------------


def _reports_backup_errors(command: Handler) -> Handler:
    """A :class:`~settings_server.backup.BackupError` ends the command like a CommandError."""

    @functools.wraps(command)
    def handler(args: argparse.Namespace) -> None:
        from .backup import BackupError

        try:
            command(args)
        except BackupError as exc:
            raise CommandError(str(exc)) from exc

    return handler


def _registry():
    from .registry import RegistryError, load_registry

    try:
        return load_registry(from_environment().get("SETTINGS_REGISTRY_FILE"))
    except RegistryError as exc:
        raise CommandError(str(exc)) from exc


def _configured_store(config: Mapping[str, Any] | None = None, url: str | None = None):
    """The store of ``url`` (default ``SETTINGS_BACKEND``) with the configured timeout."""
    config = from_environment() if config is None else config
    return store_from_url(
        url or config["SETTINGS_BACKEND"], timeout=config["SETTINGS_STORAGE_TIMEOUT"]
    )


@_reports_backup_errors
def _export(args: argparse.Namespace) -> None:
    from .backup import export_document

    store = _configured_store()
    try:
        document = export_document(
            store, _registry(), include_secrets=args.include_secrets, quiet=args.quiet
        )
    finally:
        store.close()
    text = json.dumps(document, indent=1, ensure_ascii=False) + "\n"
    if args.file in (None, "-"):
        sys.stdout.write(text)
        return
    partial = f"{args.file}.partial"
    try:  # owner-only, and replaced whole: a failed export never leaves half a file
        with open(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as out:
            out.write(text)
        os.replace(partial, args.file)
    except OSError as exc:
        raise CommandError(f"cannot write {args.file}: {exc.strerror}") from exc
    if not args.quiet:
        print(f"Exported {len(document['users'])} user(s) to {args.file}.", file=sys.stderr)


@_reports_backup_errors
def _import(args: argparse.Namespace) -> None:
    from .backup import apply_import, plan_import

    try:
        if args.file == "-":
            document = json.load(sys.stdin)
        else:
            with open(args.file, encoding="utf-8") as source:
                document = json.load(source)
    except OSError as exc:
        raise CommandError(f"cannot read {args.file}: {exc.strerror}") from exc
    except ValueError as exc:
        raise CommandError(f"{args.file} is not JSON: {exc}") from exc
    config = from_environment()
    store = _configured_store(config)
    try:
        plan = plan_import(
            store, _registry(), document,
            currency_codes_override=config.get("INVENTREE_CURRENCY_CODES"),
        )
        if args.dry_run:
            for line in plan.changes:
                print(line)
            print(f"Dry run: {len(plan.changes)} change(s) would be made, "
                  f"{plan.unchanged} entries unchanged; nothing written.")
            return
        apply_import(store, plan)
    finally:
        store.close()
    print(f"Imported: {len(plan.changes)} change(s), {plan.unchanged} entries unchanged.")
    if plan.without_password:
        print(f"{len(plan.without_password)} account(s) have no password (exported without "
              "--include-secrets); set one with: settings-server user set-password NAME",
              file=sys.stderr)


@_reports_backup_errors
def _migrate(args: argparse.Namespace) -> None:
    from .backup import migrate

    source, target = _configured_store(url=args.source), _configured_store(url=args.target)
    try:
        report = migrate(source, target, force=args.force, quiet=args.quiet)
    finally:
        source.close()
        target.close()
    print(f"Copied and verified {report.namespaces} namespaces, {report.entries} entries.")


def add_backup_commands(commands: argparse._SubParsersAction) -> None:
    export = commands.add_parser("export", help="write every setting and user as JSON")
    export.add_argument("file", nargs="?", help="output file (default or -: stdout)")
    export.add_argument("--include-secrets", action="store_true",
                        help="also password hashes, token hashes and the secret key")
    export.add_argument("--quiet", action="store_true", help="no progress on stderr")
    export.set_defaults(handler=_export)

    load = commands.add_parser(
        "import", help="check a JSON export whole, then write all of it or nothing"
    )
    load.add_argument("file", help="an export file (-: stdin)")
    load.add_argument("--dry-run", action="store_true", help="check and list changes only")
    load.add_argument("--quiet", action="store_true", help="no progress on stderr")
    load.set_defaults(handler=_import)

    move = commands.add_parser("migrate", help="copy a whole store to another backend")
    move.add_argument("--from", dest="source", required=True, metavar="URL")
    move.add_argument("--to", dest="target", required=True, metavar="URL")
    move.add_argument("--force", action="store_true", help="copy into a non-empty store")
    move.add_argument("--quiet", action="store_true", help="no progress on stderr")
    move.set_defaults(handler=_migrate)


#: Each adds one top-level command with its sub-commands.
COMMAND_GROUPS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    add_user_commands,
    add_token_commands,
    add_run_command,
    add_backup_commands,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="settings-server",
        description="Manage settings-server. The store is the one SETTINGS_BACKEND names.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_group in COMMAND_GROUPS:
        add_group(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit status (see the module docstring)."""
    args = build_parser().parse_args(argv)
    try:
        args.handler(args)
    except (UserError, CommandError, StorageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
