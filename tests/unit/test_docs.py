"""The repository's own documents stay in step with the code: docs/API.md names exactly the operations of the OpenAPI
document the app serves, the README links the documents that exist, and nothing points outside the repository."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
# `GET /api/v1/carts/{cart_id}`, also `GET, POST /api/v1/me/addresses`; the path ends at a space, a backtick, a `?`
# (a query string), a `|` or a closing bracket, and a full stop ending a sentence is not part of it.
_METHOD = "|".join(METHODS)
OPERATION = re.compile(rf"\b((?:(?:{_METHOD})\s*,\s*)*(?:{_METHOD}))\s+(/api/v1/[A-Za-z0-9_{{}}./-]*)")


def operations_in(markdown: str) -> set[tuple[str, str]]:
    """Every (METHOD, path) written as `METHOD /api/v1/...` (or `METHOD, METHOD /api/v1/...`)."""
    found = set()
    for methods, path in OPERATION.findall(markdown):
        path = path.rstrip(".")
        for method in re.split(r"\s*,\s*", methods):
            found.add((method, path))
    return found


def served_operations() -> set[tuple[str, str]]:
    """Every (METHOD, path) of the document GET /api/v1/openapi.json serves (shop.api.docs returns spec())."""
    from shop import create_app
    from shop.api.openapi import build

    document = build(create_app("test"))
    base = document["servers"][0]["url"].rstrip("/")
    return {
        (method.upper(), base + path)
        for path, item in document["paths"].items()
        for method in item
        if method.upper() in METHODS
    }


def markdown_files() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def test_the_parser_reads_the_forms_the_docs_use():
    text = (
        "| `GET /api/v1/carts/{cart_id}?shipping_method=&country=` | x |\n"
        "`GET, POST /api/v1/me/addresses`; see GET /api/v1/orders. And POST /webhooks/stripe, GET /healthz."
    )
    assert operations_in(text) == {
        ("GET", "/api/v1/carts/{cart_id}"),
        ("GET", "/api/v1/me/addresses"),
        ("POST", "/api/v1/me/addresses"),
        ("GET", "/api/v1/orders"),
    }


def test_api_md_names_exactly_the_operations_of_the_openapi_document():
    served = served_operations()
    written = operations_in((DOCS / "API.md").read_text(encoding="utf-8"))
    assert len(served) > 40  # the document was found and read
    missing = sorted(f"{m} {p}" for m, p in served - written)
    unknown = sorted(f"{m} {p}" for m, p in written - served)
    assert not missing and not unknown, (
        "docs/API.md and the OpenAPI document (shop/api/openapi.py) disagree.\n"
        f"In the OpenAPI document, not in docs/API.md: {missing}\n"
        f"In docs/API.md, not in the OpenAPI document: {unknown}"
    )


def test_no_document_points_outside_the_repository():
    offenders = [str(p.relative_to(ROOT)) for p in markdown_files() if "../shared" in p.read_text(encoding="utf-8")]
    assert not offenders, f"these documents point at ../shared, which a clone does not have: {offenders}"


def test_the_readme_links_the_documents_and_every_document_it_names_exists():
    readme = README.read_text(encoding="utf-8")
    for name in ("docs/API.md", "docs/ARCHITECTURE.md", "docs/CONTRIBUTING.md"):
        assert f"]({name})" in readme, f"README.md does not link {name}"
    named = set(re.findall(r"docs/[A-Za-z0-9_./-]+?\.md", readme))
    assert named, "README.md names no docs/*.md at all"
    missing = sorted(n for n in named if not (ROOT / n).is_file())
    assert not missing, f"README.md names documents that do not exist: {missing}"
