"""Command-line tools: `flask --app wsgi seed demo` and friends."""

from datetime import UTC

import click
from flask import Flask, current_app
from flask.cli import AppGroup

from shop import clock
from shop.accounts.models import ROLES
from shop.catalog import seed as catalog_seed
from shop.payments.cli import payments_cli

seed_cli = AppGroup("seed", help="Fill the database with demo data.")


@seed_cli.command("demo")
@click.option(
    "--products",
    default=200,
    show_default=True,
    type=click.IntRange(1, 10_000_000),
    help="How many products to create (each with a size x colour matrix of variants).",
)
@click.option("--if-empty", is_flag=True, help="Do nothing when the catalogue already has products.")
@click.option(
    "--reset", is_flag=True, help="Delete the existing catalogue first, with the carts and orders that refer to it."
)
def seed_demo(products: int, if_empty: bool, reset: bool) -> None:
    """Seed a deterministic demo catalogue."""
    if not catalog_seed.catalogue_is_empty():
        if if_empty:
            click.echo("Catalogue already has products; not seeding.")
            return
        if not reset:
            raise click.ClickException("The catalogue is not empty. Use --reset to replace it or --if-empty to skip.")
        catalog_seed.reset_catalogue()
    counts = catalog_seed.seed_demo(products, currency=current_app.config["SHOP_CURRENCY"], echo=click.echo)
    click.echo(
        "Seeded {categories} categories, {products} products, {variants} variants, {images} images.".format(**counts)
    )


DEMO_STAFF_PASSWORD = "demo-password"  # the embedded demo only; `make run` prints these logins


@seed_cli.command("demo-staff")
def seed_demo_staff() -> None:
    """Create one demo staff account per role (<role>@demo.shop), unless they exist."""
    from shop.accounts.services import create_staff, user_by_email

    for role in ROLES:
        email = f"{role}@demo.shop"
        if user_by_email(email) is None:
            create_staff(email, role, DEMO_STAFF_PASSWORD, name=f"Demo {role}")
        click.echo(f"  {role:<10} {email:<22} {DEMO_STAFF_PASSWORD}")


staff_cli = AppGroup("staff", help="Manage staff accounts.")


@staff_cli.command("create")
@click.option("--email", required=True)
@click.option("--role", required=True, type=click.Choice(ROLES))
@click.option(
    "--password",
    prompt=True,
    hide_input=True,
    confirmation_prompt=True,
    help="At least 10 characters; asked for when not given.",
)
@click.option("--name", default="")
def staff_create(email: str, role: str, password: str, name: str) -> None:
    """Create a staff account with a role (warehouse, support, analyst, manager, admin)."""
    from shop.accounts.services import create_staff
    from shop.errors import DomainError

    try:
        user = create_staff(email, role, password, name)
    except DomainError as exc:
        problems = "; ".join(f"{k} {v}" for k, v in exc.details.get("fields", {}).items())
        raise click.ClickException(problems or exc.message) from None
    click.echo(f"Created {role} {user.email} (id {user.id}).")


search_cli = AppGroup("search", help="Manage the Typesense search index.")


@search_cli.command("reindex")
@click.option("--if-reachable", is_flag=True, help="Warn and exit 0 (instead of failing) when Typesense is down.")
def search_reindex(if_reachable: bool) -> None:
    """Build a fresh products collection from the database and swap the alias to it."""
    from shop.search import jobs

    try:
        result = jobs.reindex(echo=click.echo)
    except Exception as exc:  # noqa: BLE001 - reported to the operator; search falls back to PostgreSQL
        message = f"Search reindex failed ({type(exc).__name__}: {str(exc)[:200]})."
        if if_reachable:
            click.echo(f"WARNING: {message} Search answers from PostgreSQL until it runs.", err=True)
            return
        raise click.ClickException(message) from None
    click.echo(f"Indexed {result['documents']} products into {result['collection']} in {result['seconds']}s.")


events_cli = AppGroup("events", help="The event backbone: backlog, consumer groups, read-model replay.")


def _since(raw: str):
    """`start` -> None (the whole stream); an ISO date or date-time -> that moment (UTC when it names no zone)."""
    from datetime import datetime

    if raw.strip().lower() == "start":
        return None
    try:
        moment = datetime.fromisoformat(raw.strip())
    except ValueError:
        raise click.BadParameter(
            "give an ISO date (2026-11-01), an ISO date-time or 'start'", param_hint="--from"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@events_cli.command("replay")
@click.option(
    "--from",
    "since",
    required=True,
    metavar="DATE|start",
    help="Rebuild the read model for the orders created from this day (UTC) or date-time; 'start' for all.",
)
@click.option(
    "--check/--no-check",
    default=True,
    show_default=True,
    help="Compare the rebuilt sales report with the one computed from the order tables.",
)
def events_replay(since: str, check: bool) -> None:
    """Rebuild the sales read model (sales_order) from the event stream."""

    from shop.reports import services as reports
    from shop.stream import StreamUnavailable

    moment = _since(since)
    try:
        counts = reports.replay(moment)
    except StreamUnavailable as exc:
        raise click.ClickException(f"The event stream cannot be read ({exc}); nothing was changed.") from None
    click.echo(
        f"Read {counts['read']} events from the stream{'' if moment is None else f' since {moment.isoformat()}'}"
        f"; applied {counts['applied']} order events."
    )
    click.echo(f"Sales read model: {counts['deleted']} order rows deleted, {counts['orders']} rebuilt.")
    if not check:
        return
    start = moment.date() if moment is not None else reports.first_day()
    if start is None:
        click.echo("Check: the read model holds no orders.")
        return
    end = clock.now().date()
    if reports.sales_from_read_model(start, end) == reports.sales_from_orders(start, end):
        click.echo(f"Check: the sales report from {start} to {end} matches the order tables.")
    else:
        click.echo(
            f"Check: the sales report from {start} to {end} differs from the order tables: events still in "
            "the outbox, or older than the stream keeps (see `flask events status`).",
            err=True,
        )


@events_cli.command("status")
def events_status() -> None:
    """The outbox backlog per kind and what each consumer group applied lately."""
    from sqlalchemy import func, select, text

    from shop import consumers
    from shop.extensions import db
    from shop.outbox import OutboxJob

    backlog = db.session.execute(
        select(OutboxJob.kind, func.count(), func.extract("epoch", func.now() - func.min(OutboxJob.created_at)))
        .where(OutboxJob.dispatched_at.is_(None))
        .group_by(OutboxJob.kind)
        .order_by(OutboxJob.kind)
    ).all()
    click.echo("Outbox, not yet dispatched:" + ("" if backlog else " nothing"))
    for kind, count, age in backlog:
        click.echo(f"  {kind:<8} {count:>8}   oldest {int(age or 0)} s")
    running = db.session.scalar(
        select(func.count())
        .select_from(OutboxJob)
        .where(OutboxJob.dispatched_at.isnot(None), OutboxJob.done_at.is_(None), OutboxJob.kind != "event")
    )
    click.echo(f"Jobs dispatched and not finished: {running}")
    recent = {
        g: (n, last)
        for g, n, last in db.session.execute(
            text(
                'SELECT "group", count(*), max(consumed_at) FROM consumed_event '
                "WHERE consumed_at > now() - interval '1 hour' GROUP BY \"group\""
            )
        ).all()
    }
    lags = _group_lags(sorted(consumers.load_groups()))
    click.echo("Consumer groups (events applied in the last hour, the last at, the stream's lag):")
    for group in sorted(set(consumers.GROUPS) | set(recent)):
        n, last = recent.get(group, (0, None))
        lag = lags.get(group)
        click.echo(f"  {group:<12} {n:>8}   {last.isoformat(timespec='seconds') if last else '-':<25} {lag or '-'}")


LAG_COUNT_CAP = 10_000  # Redis before 7 has no lag in XINFO GROUPS: entries past the group's last are counted to here


def _group_lags(groups: list[str]) -> dict:
    """Per group, the stream entries it has not read yet and those read but not acknowledged, where the stream
    tells it cheaply (Redis); nothing otherwise."""
    try:
        from shop import stream as streams

        stream = streams.current()
        if not isinstance(stream, streams.RedisStream) or not stream.client.exists(stream.topic):
            return {}
        lags = {}
        for row in stream.client.xinfo_groups(stream.topic):
            name = row["name"].decode() if isinstance(row["name"], bytes) else row["name"]
            lag = row.get("lag")
            if lag is None:
                last = row["last-delivered-id"]
                last = last.decode() if isinstance(last, bytes) else last
                lag = len(stream.client.xrange(stream.topic, min=f"({last}", max="+", count=LAG_COUNT_CAP))
                lag = f"{lag}+" if lag == LAG_COUNT_CAP else lag
            lags[name] = f"{lag} unread, {row['pending']} unacknowledged"
        return lags
    except Exception as exc:  # noqa: BLE001 - status must answer even with the stream away
        click.echo(f"(stream lag unknown: {type(exc).__name__}: {str(exc)[:120]})", err=True)
        return {}


def register(app: Flask) -> None:
    app.cli.add_command(seed_cli)
    app.cli.add_command(staff_cli)
    app.cli.add_command(search_cli)
    app.cli.add_command(events_cli)  # `events replay --from`, `events status`
    app.cli.add_command(payments_cli)  # `payments check`: is the Stripe configuration ready to take money?
