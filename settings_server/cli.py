"""The ``settings-server`` command: serve the API (``run``, under gunicorn) and manage users,
tokens and backups in the configured store.

Every command acts on the store named by ``SETTINGS_BACKEND`` (the same environment the server
reads, see :mod:`settings_server.config`). Before a user or token command runs,
the admin account of ``SETTINGS_ADMIN_USER``/``SETTINGS_ADMIN_PASSWORD`` is created if the store
has no users yet.

Exit status: 0 on success, 1 when the command cannot be carried out (unknown user, duplicate
name, bad storage URL, store unreachable), 2 for usage errors.

The command line is click's (as Flask's own): ``--help`` on every command, ``--version``,
shell completion (``_SETTINGS_SERVER_COMPLETE=bash_source settings-server``), and output that
ends quietly when its reader goes away (``| head``). Each command is a function that receives
its parameters as one :class:`Arguments` (``args.username``), with its interface declared
above it.
"""

from __future__ import annotations

import functools
import getpass
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import date
from types import SimpleNamespace
from typing import Any

import click

from backends import StorageError, store_from_url

from . import __version__
from .auth import Authenticator
from .config import from_environment
from .tokens import ApiToken, InvalidTokenName, sanitise_name
from .users import User, UserError


class CommandError(Exception):
    """A command that cannot be carried out; the message is printed, the exit status is 1."""


class Arguments(SimpleNamespace):
    """A command's parameters by name: ``args.username``, ``args.quiet``."""


Handler = Callable[[Arguments], None]


class _Command(click.Command):
    """A click command whose callback receives its parameters as one :class:`Arguments`."""

    def invoke(self, ctx: click.Context) -> Any:
        return ctx.invoke(self.callback, Arguments(**ctx.params))


class _Group(click.Group):
    command_class = _Command
    group_class = type  # sub-groups are _Group too


@click.group(
    cls=_Group,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Manage settings-server. The store is the one SETTINGS_BACKEND names.",
)
@click.version_option(__version__, prog_name="settings-server", message="%(prog)s %(version)s")
def cli() -> None:
    """The ``settings-server`` command (see :func:`main`)."""


@cli.group(help="manage user accounts")
def user() -> None:
    pass


@cli.group(help="manage API tokens")
def token() -> None:
    pass


def _with_accounts(command: Callable[[Arguments, Authenticator], None]) -> Handler:
    """Run ``command`` on the configured store's users and tokens, after the admin bootstrap,
    and close the store afterwards."""

    @functools.wraps(command)
    def handler(args: Arguments) -> None:
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


def _exactly_one(*names: str) -> Callable[[Handler], Handler]:
    """A usage error (exit 2) unless exactly one of the options ``names`` is given."""

    def decorate(command: Handler) -> Handler:
        @functools.wraps(command)
        def handler(args: Arguments) -> None:
            given = [name for name in names if getattr(args, name) is not None]
            if len(given) != 1:
                options = " | ".join(f"--{name}" for name in names)
                raise click.UsageError(f"give exactly one of ({options})")
            command(args)

        return handler

    return decorate


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


@user.command("create", help="create a user (asks for the password)")
@click.argument("username")
@click.option("--password", help="the password (default: prompt for it)")
@click.option("--staff", is_flag=True, help="may change global settings")
@click.option("--superuser", is_flag=True, help="superuser (implies --staff)")
@click.option("--email", default="")
@_with_accounts
def _user_create(args: Arguments, auth: Authenticator) -> None:
    user = auth.users.create(
        args.username,
        _ask_password(args.password),
        is_staff=args.staff or args.superuser,
        is_superuser=args.superuser,
        email=args.email,
    )
    print(f"Created user {user.username!r} (id {user.id}).")


@user.command("list", help="list users")
@_with_accounts
def _user_list(args: Arguments, auth: Authenticator) -> None:
    users = auth.users.list()
    print(f"{'ID':>5}  {'USERNAME':<24} {'STAFF':<5} {'SUPER':<5} ACTIVE")
    for user in users:
        print(
            f"{user.id:>5}  {user.username:<24} {_yes(user.is_staff):<5} "
            f"{_yes(user.is_superuser):<5} {_yes(user.is_active)}"
        )


@user.command("set-password", help="change a password, ending its sessions")
@click.argument("username")
@click.option("--password", help="the new password (default: prompt for it)")
@_with_accounts
def _user_set_password(args: Arguments, auth: Authenticator) -> None:
    user = auth.users.require(args.username)
    auth.users.set_password(user.id, _ask_password(args.password))
    print(f"Password of {user.username!r} changed; its sessions have ended.")


@user.command("deactivate", help="refuse every login and token of a user")
@click.argument("username")
@_with_accounts
def _user_deactivate(args: Arguments, auth: Authenticator) -> None:
    user = auth.users.deactivate(auth.users.require(args.username).id)
    print(f"Deactivated {user.username!r}: its logins, sessions and tokens are refused.")


@user.command("delete", help="delete a user and its tokens")
@click.argument("username")
@_with_accounts
def _user_delete(args: Arguments, auth: Authenticator) -> None:
    user = auth.users.require(args.username)
    auth.tokens.purge_user(user.id)
    auth.users.delete(user.id)
    print(f"Deleted user {user.username!r} and its tokens.")


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


@token.command(
    "create", help="issue a token (printed once; replaces a live token of the same name)"
)
@click.argument("username")
@click.option("--name", default="", help="token name (default: empty)")
@_with_accounts
def _token_create(args: Arguments, auth: Authenticator) -> None:
    user: User = auth.users.require(args.username)
    issued = auth.tokens.issue(user, _clean_name(args.name))
    print(
        f"Token {issued.token.name!r} (id {issued.token.id}) for {user.username!r}, valid "
        f"through {issued.token.expiry.isoformat()}. It is shown only now:",
        file=sys.stderr,
    )
    print(issued.key)


@token.command("list", help="list a user's tokens (never their secrets)")
@click.argument("username")
@_with_accounts
def _token_list(args: Arguments, auth: Authenticator) -> None:
    user = auth.users.require(args.username)
    today = auth.tokens.now().date()
    print(f"{'ID':>5}  {'NAME':<32} {'CREATED':<10} {'EXPIRY':<10} STATUS")
    for token in auth.tokens.list_for_user(user.id):
        print(
            f"{token.id:>5}  {token.name or '-':<32} {token.created.date().isoformat():<10} "
            f"{token.expiry.isoformat():<10} {_token_status(token, today)}"
        )


@token.command("revoke", help="revoke a user's live token(s) by name or id")
@click.argument("username")
@click.option("--name", help="revoke the live token(s) with this name")
@click.option("--id", type=int, help="revoke the token with this id (see token list)")
@_exactly_one("name", "id")
@_with_accounts
def _token_revoke(args: Arguments, auth: Authenticator) -> None:
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


# -- run -------------------------------------------------------------------------------------

GUNICORN_CONFIG = "python:settings_server.gunicorn_conf"
WSGI_APP = "settings_server.wsgi:app"


@cli.command(
    "run",
    short_help="serve the API under gunicorn (settings_server/gunicorn_conf.py)",
    help="Serve the API under gunicorn with the shipped configuration. Other gunicorn options "
    "can be given in GUNICORN_CMD_ARGS.",
)
@click.option("--bind", help="address(es), comma-separated (default: SETTINGS_BIND)")
@click.option(
    "--workers", type=int, help="worker processes (default: WEB_CONCURRENCY, else 2 x cores + 1)"
)
def _run(args: Arguments) -> None:
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


# -- check -----------------------------------------------------------------------------------

CHECK_COLOURS = {"OK": "green", "WARN": "yellow", "FAIL": "red", "SKIP": "yellow"}


@cli.command(
    "check",
    short_help="check the configuration and the store as the server would (exit 1: a failure)",
    help="Read the configuration as the server does, load the registry (and SETTINGS_REGISTRY_"
    "FILE), build the app, check the gunicorn settings, connect to the store and look for "
    "accounts; each step is reported OK, WARN, FAIL (with the fix) or SKIP. Exit status 1 when "
    "a step failed.",
)
def _check(args: Arguments) -> int:
    from .check import FAIL, run_checks

    failed = False
    for finding in run_checks():
        status = click.style(f"{finding.status:<4}", fg=CHECK_COLOURS[finding.status], bold=True)
        click.echo(f"{status}  {finding.step}: {finding.detail}")
        if finding.fix:
            click.echo(f"      fix: {finding.fix}")
        failed |= finding.status == FAIL
    return 1 if failed else 0


# -- export, import, migrate ------------------------------------------------------------------


def _reports_backup_errors(command: Handler) -> Handler:
    """A :class:`~settings_server.backup.BackupError` ends the command like a CommandError."""

    @functools.wraps(command)
    def handler(args: Arguments) -> None:
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


@cli.command("export", help="write every setting and user as JSON")
@click.argument("file", required=False)
@click.option(
    "--include-secrets", is_flag=True,
    help="also password hashes, token hashes and the secret key",
)
@click.option("--quiet", is_flag=True, help="no progress on stderr")
@_reports_backup_errors
def _export(args: Arguments) -> None:
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


@cli.command("import", help="check a JSON export whole, then write all of it or nothing")
@click.argument("file")
@click.option("--dry-run", is_flag=True, help="check and list changes only")
@click.option("--quiet", is_flag=True, help="no progress on stderr")
@_reports_backup_errors
def _import(args: Arguments) -> None:
    from .backup import apply_import, plan_import
    from .history import History

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
            pinned=_pinned(config), quiet=args.quiet,
        )
        if args.dry_run:
            for line in plan.changes:
                print(line)
            print(f"Dry run: {len(plan.changes)} change(s) would be made, "
                  f"{plan.unchanged} entries unchanged; nothing written.")
            return
        if not args.quiet:
            print(f"import: writing {len(plan.changes)} change(s) in one transaction",
                  file=sys.stderr)
        apply_import(store, plan, History(store, _history_limit(config)))
    finally:
        store.close()
    print(f"Imported: {len(plan.changes)} change(s), {plan.unchanged} entries unchanged.")
    if plan.without_password:
        print(f"{len(plan.without_password)} account(s) have no password (exported without "
              "--include-secrets); set one with: settings-server user set-password NAME",
              file=sys.stderr)


def _pinned(config: Mapping[str, Any]) -> dict[str, Any]:
    from .pinned import read

    try:
        return read(config)
    except ValueError as exc:
        raise CommandError(str(exc)) from exc


def _history_limit(config: Mapping[str, Any]) -> int:
    from .config import history_limit

    try:
        return history_limit(config)
    except ValueError as exc:
        raise CommandError(str(exc)) from exc


@cli.command("history", help="print the newest changes of settings, every user's included")
@click.option("--kind", type=click.Choice(["global", "user", "notification"]),
              help="only this kind of setting")
@click.option("--key", help="only this setting (any case)")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True,
              help="at most this many entries")
def _history(args: Arguments) -> None:
    from .history import History

    config = from_environment()
    store = _configured_store(config)
    try:
        entries = History(store, _history_limit(config)).everything(kind=args.kind, key=args.key)
    finally:
        store.close()
    print(f"{'ID':>6}  {'WHEN':<24} {'KIND':<12} {'KEY':<40} {'USER':>5}  {'BY':<16} {'SOURCE':<8} OLD -> NEW")
    for entry in entries[: args.limit]:
        owner = "-" if entry["user"] is None else entry["user"]
        print(
            f"{entry['id']:>6}  {entry['timestamp']:<24} {entry['kind']:<12} {entry['key']:<40} "
            f"{owner:>5}  {entry['actor_name'] or '(cli)':<16} {entry['source']:<8} "
            f"{json.dumps(entry['old'], ensure_ascii=False)} -> "
            f"{json.dumps(entry['new'], ensure_ascii=False)}"
        )
    if not entries:
        print("No changes recorded.", file=sys.stderr)


@cli.command("migrate", help="copy a whole store to another backend")
@click.option("--from", "source", required=True, metavar="URL", help="the store to copy")
@click.option("--to", "target", required=True, metavar="URL", help="the store to copy into")
@click.option("--force", is_flag=True, help="copy into a non-empty store")
@click.option("--quiet", is_flag=True, help="no progress on stderr")
@_reports_backup_errors
def _migrate(args: Arguments) -> None:
    from .backup import migrate

    source, target = _configured_store(url=args.source), _configured_store(url=args.target)
    try:
        report = migrate(source, target, force=args.force, quiet=args.quiet)
    finally:
        source.close()
        target.close()
    print(f"Copied and verified {report.namespaces} namespaces, {report.entries} entries.")


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit status (see the module docstring). A usage error
    prints click's message and raises ``SystemExit(2)``."""
    try:
        status = cli.main(args=argv, prog_name="settings-server", standalone_mode=False)
        sys.stdout.flush()  # a reader that went away is noticed here, not at interpreter exit
    except click.ClickException as exc:
        exc.show()
        raise SystemExit(exc.exit_code) from None
    except click.Abort:  # Ctrl-C, or end of input at a prompt
        print("Aborted!", file=sys.stderr)
        return 1
    except (UserError, CommandError, StorageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # | head: stop quietly, as click itself does
        _discard_stdout()
        return 1
    return status if isinstance(status, int) else 0


def _discard_stdout() -> None:
    """Point stdout at /dev/null, so that flushing what is left at exit cannot fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


if __name__ == "__main__":
    sys.exit(main())
