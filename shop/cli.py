"""Command-line tools: `flask --app wsgi seed demo` and friends."""
import click
from flask import Flask, current_app
from flask.cli import AppGroup

from shop.accounts.models import ROLES
from shop.catalog import seed as catalog_seed
from shop.payments.cli import payments_cli

seed_cli = AppGroup("seed", help="Fill the database with demo data.")


@seed_cli.command("demo")
@click.option("--products", default=200, show_default=True, type=click.IntRange(1, 10_000_000),
              help="How many products to create (each with a size x colour matrix of variants).")
@click.option("--if-empty", is_flag=True, help="Do nothing when the catalogue already has products.")
@click.option("--reset", is_flag=True,
              help="Delete the existing catalogue first, with the carts and orders that refer to it.")
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
    click.echo("Seeded {categories} categories, {products} products, {variants} variants, {images} images."
               .format(**counts))


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
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True,
              help="At least 10 characters; asked for when not given.")
@click.option("--name", default="")
def staff_create(email: str, role: str, password: str, name: str) -> None:
    """Create a staff account with a role (warehouse, support, analyst, manager, admin)."""
    from shop.accounts.services import create_staff
    from shop.errors import ApiError

    try:
        user = create_staff(email, role, password, name)
    except ApiError as exc:
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


def register(app: Flask) -> None:
    app.cli.add_command(seed_cli)
    app.cli.add_command(staff_cli)
    app.cli.add_command(search_cli)
    app.cli.add_command(payments_cli)  # `payments check`: is the Stripe configuration ready to take money?
