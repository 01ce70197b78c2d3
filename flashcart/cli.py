"""Operator commands: `flask create-admin`, `flask seed-demo`."""

import click
from flask import Flask

from flashcart import demo
from flashcart.auth import service as accounts


@click.command("create-admin")
@click.argument("email")
@click.password_option(
    help="Prompted (hidden, twice) when not given; or set FLASHCART_ADMIN_PASSWORD.",
    envvar="FLASHCART_ADMIN_PASSWORD",
)
@click.option("--name", default="Administrator", show_default=True)
def create_admin(email, password, name):
    """Create an admin account, or promote and reset an existing one."""
    if len(password) < 8:
        raise click.BadParameter("use at least 8 characters", param_hint="password")
    user, created = accounts.ensure_admin(email=email, password=password, name=name)
    click.echo(f"{'Created' if created else 'Updated'} admin {user['email']} ({user['id']})")


@click.command("seed-demo")
def seed_demo():
    """Create the demo products and start their sales (safe to run twice)."""
    for product_id in demo.seed_demo():
        click.echo(f"demo product {product_id} is on sale")


def register_commands(app: Flask):
    for command in (create_admin, seed_demo):
        app.cli.add_command(command)
