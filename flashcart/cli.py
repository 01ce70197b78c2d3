"""Operator commands: init, create-admin, normalise-emails, seed-demo, sweep, audit,
deliver, replay-webhooks."""

import json
import logging
import time

import click
import prometheus_client
import pymongo.errors
from flask import Flask, current_app
from flask.cli import with_appcontext

from flashcart import companions, demo
from flashcart.auth import emails, passwords
from flashcart.auth import service as accounts
from flashcart.checkout import recovery
from flashcart.extensions import stores
from flashcart.stores import IndexSetupError
from flashcart.webhooks import deliverer
from flashcart.webhooks import service as webhooks

log = logging.getLogger("flashcart.cli")


@click.command("init")
@with_appcontext
@click.option(
    "--wait",
    type=click.FloatRange(min=0),
    default=0,
    show_default=True,
    help="Keep trying this many SECONDS while MongoDB does not answer.",
)
def init(wait):
    """Prepare MongoDB before the API starts: its indexes, and the admin named by
    ADMIN_EMAIL / ADMIN_PASSWORD when set. Safe to run twice; exits 1 on failure."""
    config = current_app.config
    email, password = config["ADMIN_EMAIL"], config["ADMIN_PASSWORD"]
    if email and not password:
        raise click.ClickException("ADMIN_EMAIL is set without ADMIN_PASSWORD")
    if email:
        weaknesses = passwords.weaknesses(password, email)
        if weaknesses:
            raise click.ClickException("ADMIN_PASSWORD: " + " ".join(weaknesses))
    _until_mongodb_answers(wait)
    try:
        stores.ensure_indexes()
    except IndexSetupError as error:
        raise click.ClickException(str(error)) from error
    click.echo("indexes are ready")
    if email:
        user, created = accounts.ensure_admin(email=email, password=password)
        click.echo(f"{'Created' if created else 'Updated'} admin {user['email']} ({user['id']})")


def _until_mongodb_answers(wait):
    deadline = time.monotonic() + wait
    while True:
        try:
            stores.ping_mongo(current_app.config["MONGO_TIMEOUT_MS"] / 1000)
            return
        except pymongo.errors.PyMongoError as error:
            if time.monotonic() >= deadline:
                raise click.ClickException(f"MongoDB does not answer: {error}") from error
            log.warning("waiting for MongoDB: %s", error)
            time.sleep(1)


@click.command("create-admin")
@with_appcontext
@click.argument("email")
@click.password_option(
    help="Prompted (hidden, twice) when not given; or set FLASHCART_ADMIN_PASSWORD.",
    envvar="FLASHCART_ADMIN_PASSWORD",
)
@click.option("--name", default="Administrator", show_default=True)
def create_admin(email, password, name):
    """Create an admin account, or promote and reset an existing one."""
    if emails.mixes_scripts(emails.normalise(email)):
        raise click.BadParameter(emails.MIXED_SCRIPTS, param_hint="email")
    weaknesses = passwords.weaknesses(password, email)
    if weaknesses:
        raise click.BadParameter(" ".join(weaknesses), param_hint="password")
    user, created = accounts.ensure_admin(email=email, password=password, name=name)
    click.echo(f"{'Created' if created else 'Updated'} admin {user['email']} ({user['id']})")


@click.command("normalise-emails")
@with_appcontext
def normalise_emails():
    """Store every account's address in today's spelling (once, after upgrading)."""
    rewritten, clashes = accounts.normalise_stored_emails()
    click.echo(f"{rewritten} address(es) rewritten")
    for address, ids in clashes:
        click.echo(f"clash: accounts {', '.join(ids)} are all {address}; left unchanged")
    if clashes:
        raise click.exceptions.Exit(1)


@click.command("seed-demo")
@with_appcontext
def seed_demo():
    """Create the demo products and start their sales (safe to run twice)."""
    for product_id in demo.seed_demo():
        click.echo(f"demo product {product_id} is on sale")


@click.command("sweep")
@with_appcontext
@click.option("--every", type=click.FloatRange(min=0.1), help="Loop, one pass every SECONDS.")
def sweep(every):
    """Rebuild live sales Redis lost, return expired holds, finish interrupted
    checkouts/cancels, close ended sales, record sell-outs and publish events a crash
    left unpublished."""
    try:
        companions.run(
            "sweep",
            companions.sweep_pass,
            every=every,
            errors=companions.SWEEP_ERRORS,
            report=lambda done: click.echo(companions.summary("sweep", done)),
        )
    except companions.SWEEP_ERRORS as error:
        raise click.ClickException(f"a store is unavailable: {error}") from error


@click.command("deliver")
@with_appcontext
@click.option("--every", type=click.FloatRange(min=0.05), help="Loop, one pass every SECONDS.")
@click.option(
    "--threads",
    type=click.IntRange(min=1, max=64),
    help="Endpoints worked on at once (default WEBHOOKS_DELIVERY_THREADS).",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(min=1, max=65535),
    help="Serve this process's delivery counters for Prometheus on PORT.",
)
def deliver(every, threads, metrics_port):
    """Send webhooks: each active endpoint's new and due events. Safe to run several."""
    problem = deliverer.settings_problem(current_app.config)
    if problem:
        raise click.ClickException(problem)
    if metrics_port:
        prometheus_client.start_http_server(metrics_port)
    try:
        companions.run(
            "deliver",
            lambda: companions.deliver_pass(threads),
            every=every,
            errors=companions.DELIVER_ERRORS,
            report=lambda done: click.echo(companions.summary("deliver", done)),
        )
    except companions.DELIVER_ERRORS as error:
        raise click.ClickException(f"MongoDB is unavailable: {error}") from error


@click.command("replay-webhooks")
@with_appcontext
@click.argument("endpoint_id")
@click.option("--event", "event_id", help="Only this event's delivery (whatever its state).")
def replay_webhooks(endpoint_id, event_id):
    """Queue an endpoint's failed deliveries (or one event's) to be sent again."""
    try:
        replayed = webhooks.replay(endpoint_id, event_id=event_id)["replayed"]
    except (webhooks.EndpointNotFound, webhooks.DeliveryNotFound) as error:
        raise click.ClickException(error.detail) from error
    click.echo(f"{replayed} deliveries queued again")


AUDIT_COLUMNS = [
    "product_id",
    "sale_status",
    "total",
    "sold",
    "held",
    "holds_sold",
    "available",
    "expected_available",
    "drift",
    "oversold",
    "users_over_limit",
    "ok",
]


@click.command("audit")
@with_appcontext
@click.option("--repair", is_flag=True, help="Rebuild Redis from MongoDB where they differ.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def audit(repair, as_json):
    """Compare MongoDB (truth) and Redis for every sale; exit 1 if drift remains."""
    rows = recovery.audit(repair=repair)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        click.echo("  ".join(f"{c:>9}" if c != "product_id" else f"{c:<24}" for c in AUDIT_COLUMNS))
        for row in rows:
            click.echo(
                "  ".join(
                    f"{row[c]!s:>9}" if c != "product_id" else f"{row[c]:<24}"
                    for c in AUDIT_COLUMNS
                )
                + ("  (repaired)" if row.get("repaired") else "")
            )
        bad = sum(1 for row in rows if not row["ok"])
        click.echo(f"{len(rows)} sales audited, {bad} with drift")
    if any(not row["ok"] for row in rows):
        raise SystemExit(1)


def register_commands(app: Flask):
    for command in (
        init,
        create_admin,
        normalise_emails,
        seed_demo,
        sweep,
        audit,
        deliver,
        replay_webhooks,
    ):
        app.cli.add_command(command)
