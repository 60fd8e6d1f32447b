import click
from flask.cli import AppGroup

from app.errors import DomainError
from app.services import tokens as token_service
from app.services import users as user_service
from app.services.base import Actor

tokens = AppGroup("tokens", help="Create API tokens.")


@tokens.command("create")
@click.argument("email")
@click.option("--name", default="", help="A name to recognise the token by.")
@click.option("--service", is_flag=True, help="A service token: may only fetch credentials.")
def create(email: str, name: str, service: bool) -> None:
    """Print a new API token, alone on the last line."""
    try:
        owner = user_service.get_user_by_email(email)
        token, plaintext = token_service.create_token(Actor.system(), owner, name, service=service)
    except DomainError as error:
        raise click.ClickException(error.message) from None
    click.echo(f"Created {'service ' if service else ''}token {token.name!r} for {owner.email}. It is shown once:", err=True)
    click.echo(plaintext)
