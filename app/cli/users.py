import click
from flask.cli import AppGroup

from app.errors import DomainError
from app.services import users as user_service
from app.services.base import Actor

users = AppGroup("users", help="Create and deactivate users, and change their role.")


@users.command("create")
@click.argument("email")
@click.option("--name", default="", help="Display name.")
@click.option("--admin", is_flag=True, help="Make the user an administrator.")
@click.option("--password", default=None, help="Password (prompted for when absent).")
def create(email: str, name: str, admin: bool, password: str | None) -> None:
    """Create a user."""
    if password is None:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        user = user_service.create_user(Actor.system(), email, name, password, "admin" if admin else "member")
    except DomainError as error:
        details = "; ".join(f"{v.field}: {v.detail}" for v in error.validations)
        raise click.ClickException(error.message + (f" ({details})" if details else "")) from None
    click.echo(f"Created {user.role} {user.email} ({user.id}).")


@users.command("deactivate")
@click.argument("email")
def deactivate(email: str) -> None:
    """Deactivate a user: sessions, tokens and stored keys end at once."""
    try:
        user = user_service.get_user_by_email(email)
        user_service.deactivate_user(Actor.system(), user.id)
    except DomainError as error:
        raise click.ClickException(error.message) from None
    click.echo(f"Deactivated {user.email}.")


@users.command("set-role")
@click.argument("email")
@click.argument("role", type=click.Choice(["admin", "member"]))
def set_role(email: str, role: str) -> None:
    """Change a user's role (their sessions end); never the last active administrator's."""
    try:
        user = user_service.get_user_by_email(email)
        user = user_service.set_role(Actor.system(), user.id, role)
    except DomainError as error:
        raise click.ClickException(error.message) from None
    click.echo(f"{user.email} is now {'an administrator' if user.role == 'admin' else 'a member'}.")
