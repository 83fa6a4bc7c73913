"""Direct uploads through signed URLs, and the audit log of admin writes."""

import json
import time

import pytest
from itsdangerous import TimestampSigner
from sqlalchemy import select

from shop.audit.models import AuditEntry
from tests.conftest import local_path
from tests.factories import make_category, make_product, make_user
from tests.images import pixels, tiny_png


@pytest.fixture
def manager(db_session, redis_client):
    from shop.accounts.tokens import issue_pair

    user = make_user("manager@example.com", role="manager")
    return user, {"Authorization": f"Bearer {issue_pair(user)['access_token']}"}


@pytest.fixture(autouse=True)
def upload_dir(app, tmp_path, monkeypatch):
    monkeypatch.setitem(app.config, "UPLOAD_DIR", str(tmp_path / "uploads"))
    return tmp_path / "uploads"


def sign(client, headers, **body):
    body = {"filename": "shirt.png", "content_type": "image/png", **body}
    return client.post("/api/v1/admin/uploads", data=json.dumps(body), content_type="application/json", headers=headers)


def upload_path(signed):
    return local_path(signed["upload_url"])


def test_signed_upload_stores_the_file_and_serves_it_with_a_long_cache(client, manager, upload_dir):
    resp = sign(client, manager[1])
    assert resp.status_code == 201
    signed = resp.get_json()
    assert signed["method"] == "PUT" and signed["headers"] == {"Content-Type": "image/png"}
    put = client.put(upload_path(signed), data=tiny_png(), headers=signed["headers"])
    assert put.status_code == 201
    served = client.get(signed["public_url"])
    assert served.status_code == 200 and pixels(served.data) == pixels(tiny_png())
    assert served.mimetype == "image/png" and "max-age=31536000" in served.headers["Cache-Control"]
    assert client.put(upload_path(signed), data=tiny_png(), headers=signed["headers"]).status_code == 409


def test_public_urls_go_through_the_cdn_when_configured(app, client, manager, monkeypatch):
    monkeypatch.setitem(app.config, "CDN_BASE_URL", "https://cdn.example.net")
    signed = sign(client, manager[1]).get_json()
    assert signed["public_url"].startswith("https://cdn.example.net/media/uploads/")


def test_an_expired_upload_url_is_refused(client, manager, app, monkeypatch, upload_dir):
    monkeypatch.setattr(
        TimestampSigner, "get_timestamp", lambda self: int(time.time()) - app.config["UPLOAD_URL_SECONDS"] - 5
    )
    signed = sign(client, manager[1]).get_json()
    monkeypatch.undo()
    resp = client.put(upload_path(signed), data=tiny_png(), headers=signed["headers"])
    assert resp.status_code == 403 and resp.get_json()["error"]["code"] == "upload_url_expired"
    assert not upload_dir.exists() or not any(upload_dir.iterdir())


def test_an_altered_upload_url_is_refused(client, manager, upload_dir):
    signed = sign(client, manager[1]).get_json()
    path = upload_path(signed)
    token = path.rsplit("/", 1)[1]
    forged = path[: -len(token)] + token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")
    resp = client.put(forged, data=tiny_png(), headers=signed["headers"])
    assert resp.status_code == 403 and resp.get_json()["error"]["code"] == "upload_url_invalid"


@pytest.mark.parametrize(
    "body,field",
    [
        ({"content_type": {}}, "content_type"),
        ({"content_type": ["image/png"]}, "content_type"),
        ({"filename": 7}, "filename"),
        ({"size": "big"}, "size"),
    ],
)
def test_an_upload_request_of_the_wrong_shape_is_422_naming_the_field(client, manager, body, field):
    """Found by the schemathesis run: a content type that is an object was a 500 (unhashable)."""
    resp = sign(client, manager[1], **body)
    assert resp.status_code == 422 and field in resp.get_json()["error"]["details"]["fields"]


def test_uploads_are_checked_for_type_and_size(app, client, manager, monkeypatch):
    signed = sign(client, manager[1]).get_json()
    assert client.put(upload_path(signed), data=tiny_png(), headers={"Content-Type": "image/jpeg"}).status_code == 415
    assert (
        client.put(
            upload_path(signed), data=b"<svg onload=alert(1)>", headers={"Content-Type": "image/png"}
        ).status_code
        == 415
    )
    monkeypatch.setitem(app.config, "UPLOAD_MAX_BYTES", 50)
    small = sign(client, manager[1]).get_json()
    assert client.put(upload_path(small), data=tiny_png(20, 20), headers=small["headers"]).status_code == 413
    refused = sign(client, manager[1], content_type="image/svg+xml", filename="x.svg")
    assert refused.status_code == 422 and "content_type" in refused.get_json()["error"]["details"]["fields"]
    assert sign(client, manager[1], size=10**9).status_code == 422


def test_s3_backend_presigns_a_put_through_boto3(app, client, manager, monkeypatch):
    monkeypatch.setitem(app.config, "STORAGE_BACKEND", "s3")
    monkeypatch.setitem(app.config, "S3_BUCKET", "shop-images")
    monkeypatch.setitem(app.config, "S3_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIATEST")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    signed = sign(client, manager[1], size=1234).get_json()
    assert signed["upload_url"].startswith("http://127.0.0.1:9/shop-images/uploads/")
    assert "X-Amz-Signature=" in signed["upload_url"] and "X-Amz-Expires=600" in signed["upload_url"]
    assert signed["public_url"].startswith("http://127.0.0.1:9/shop-images/uploads/")


# -- audit ----------------------------------------------------------------------------------------
def entries(db_session, **where):
    return db_session.scalars(select(AuditEntry).filter_by(**where).order_by(AuditEntry.id)).all()


def test_admin_api_writes_are_audited_with_before_and_after(client, db_session, manager):
    cat = make_category(slug="audited")
    product = make_product(cat, stock=10)
    variant = product.variants[0]
    resp = client.put(
        f"/api/v1/admin/variants/{variant.id}/stock",
        data=json.dumps({"on_hand": 3}),
        content_type="application/json",
        headers=manager[1],
        environ_base={"REMOTE_ADDR": "10.1.2.3"},
    )
    assert resp.status_code == 200
    [entry] = entries(db_session, entity_type="Variant", entity_id=str(variant.id))
    assert (entry.actor_email, entry.channel, entry.action, entry.ip) == (
        "manager@example.com",
        "api",
        "update",
        "10.1.2.3",
    )
    assert entry.before["on_hand"] == 10 and entry.after["on_hand"] == 3
    assert entry.at is not None


def test_created_products_are_audited_and_refused_writes_leave_nothing(client, db_session, manager):
    make_category(slug="cat-a")
    body = {
        "category": "cat-a",
        "name": "Audit Tee",
        "options": [],
        "variants": [{"sku": "AUD-1", "options": {}, "price": 500}],
    }
    created = client.post(
        "/api/v1/admin/products", data=json.dumps(body), content_type="application/json", headers=manager[1]
    )
    assert created.status_code == 201
    kinds = {(e.entity_type, e.action) for e in entries(db_session, actor_email="manager@example.com")}
    assert {("Product", "create"), ("Variant", "create")} <= kinds
    product_entry = [e for e in entries(db_session, entity_type="Product")][0]
    assert product_entry.entity_id == str(created.get_json()["id"]) and product_entry.after["name"] == "Audit Tee"
    before = len(entries(db_session))
    dup = client.post(
        "/api/v1/admin/products", data=json.dumps(body), content_type="application/json", headers=manager[1]
    )
    assert dup.status_code == 409 and len(entries(db_session)) == before
    bad = client.post(
        "/api/v1/admin/products",
        data=json.dumps({**body, "variants": [{"sku": "X", "price": -1}]}),
        content_type="application/json",
        headers=manager[1],
    )
    assert bad.status_code == 422 and len(entries(db_session)) == before


def test_staff_password_changes_are_audited_without_the_hash(app, db_session, redis_client):
    from tests.integration.test_permissions import as_user, csrf_token

    admin = make_user("root@example.com", role="admin")
    clerk = make_user("clerk@example.com", role="support")
    client = as_user(app, admin)
    resp = client.post(
        f"/admin/staff/edit/?id={clerk.id}",
        data={
            "csrf_token": csrf_token(client),
            "email": "clerk@example.com",
            "name": "Clerk",
            "role": "warehouse",
            "is_active_account": "y",
            "new_password": "another long password",
        },
    )
    assert resp.status_code == 302
    [entry] = entries(db_session, entity_type="User", entity_id=str(clerk.id))
    assert entry.before["role"] == "support" and entry.after["role"] == "warehouse"
    assert entry.after["password_hash"] == "(changed)" and "argon2" not in json.dumps(entry.before | entry.after)
    assert entry.channel == "back-office" and entry.actor_email == "root@example.com"
