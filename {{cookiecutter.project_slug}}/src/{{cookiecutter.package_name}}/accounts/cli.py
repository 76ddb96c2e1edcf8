"""``flask accounts ...`` and ``flask tokens ...``: manage who may call the API."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta

import click
from flask import Flask
from flask.cli import AppGroup

from . import services
from .models import NAME_MAX_LENGTH, TOKEN_NAME_MAX_LENGTH, Account

SCOPES = [str(scope) for scope in services.Scope]
DURATION = re.compile(r"^(\d+)([mhd])$")
UNITS = {"m": "minutes", "h": "hours", "d": "days"}

accounts_cli = AppGroup("accounts", help="Create accounts.")
tokens_cli = AppGroup("tokens", help="Issue, list and revoke API tokens.")


def parse_duration(
    _ctx: click.Context, _param: click.Parameter, value: str | None
) -> timedelta | None:
    if value is None:
        return None
    found = DURATION.fullmatch(value.strip())
    if not found or int(found.group(1)) == 0:
        raise click.BadParameter("use a positive number with m, h or d, e.g. 90d")
    return timedelta(**{UNITS[found.group(2)]: int(found.group(1))})


def account_named(name: str) -> Account:
    account = services.find_account(name)
    if account is None:
        raise click.ClickException(f"no account named {name!r}")
    return account


@accounts_cli.command("create")
@click.argument("name")
@click.option("--exist-ok", is_flag=True, help="Succeed if the account exists.")
def create_account(name: str, exist_ok: bool) -> None:
    """Create the account NAME."""
    if not 1 <= len(name) <= NAME_MAX_LENGTH:
        raise click.BadParameter(
            f"1 to {NAME_MAX_LENGTH} characters", param_hint="NAME"
        )
    existing = services.find_account(name)
    if existing is not None and exist_ok:
        click.echo(f"Account {name} exists (id {existing.id}).")
        return
    try:
        account = services.create_account(name)
    except services.AccountError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"Created account {account.name} (id {account.id}).")


@tokens_cli.command("issue")
@click.argument("account")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    required=True,
    type=click.Choice(SCOPES),
    help="Repeat for several.",
)
@click.option("--name", default="api", show_default=True, help="A label for lists.")
@click.option(
    "--expires-in", callback=parse_duration, help="e.g. 30m, 12h, 90d; none by default."
)
def issue_token(
    account: str, scopes: tuple[str, ...], name: str, expires_in: timedelta | None
) -> None:
    """Issue a token for ACCOUNT. The token is printed once, alone on the
    last line: ``TOKEN=$(flask tokens issue demo --scope read | tail -n 1)``."""
    if not 1 <= len(name) <= TOKEN_NAME_MAX_LENGTH:
        raise click.BadParameter(
            f"1 to {TOKEN_NAME_MAX_LENGTH} characters", param_hint="--name"
        )
    issued = services.issue_token(
        account_named(account), scopes, name=name, expires_in=expires_in
    )
    click.echo(
        f"Issued token {issued.id} for {account}; it is shown only now:", err=True
    )
    click.echo(issued.secret)


@tokens_cli.command("list")
@click.argument("account")
def list_tokens(account: str) -> None:
    """List ACCOUNT's tokens (ids and metadata; secrets are never stored)."""
    for token in services.list_tokens(account_named(account)):
        state = "revoked" if token.revoked_at else "active"
        scopes = token.scopes.replace(" ", ",")
        click.echo(
            f"{token.id}  {token.name}  scopes={scopes}  {state}  "
            f"created={_stamp(token.created_at)}  expires={_stamp(token.expires_at)}  "
            f"last_used={_stamp(token.last_used_at)}"
        )


def _stamp(value: object) -> str:
    return f"{value:%Y-%m-%dT%H:%M:%SZ}" if value is not None else "-"


@tokens_cli.command("revoke")
@click.argument("token_id", type=click.UUID)
def revoke_token(token_id: uuid.UUID) -> None:
    """Revoke the token TOKEN_ID (see ``tokens list``); takes effect at once."""
    if not services.revoke_token(token_id):
        raise click.ClickException(f"no token with id {token_id}")
    click.echo(f"Revoked token {token_id}.")


def init_app(app: Flask) -> None:
    app.cli.add_command(accounts_cli)
    app.cli.add_command(tokens_cli)
