"""The cart and checkout pages of the storefront: forms with CSRF, messages instead of errors, the
guest cart in the session, its merge on log-in, and checkout to a pending order and the pay page."""

import re
from html import unescape
from urllib.parse import urlsplit

import pytest
from sqlalchemy import func, select

from shop.cart.models import Cart
from shop.orders.models import Order
from tests.factories import make_category, make_product, make_user

PASSWORD = "correct horse battery"
ADDRESS = {
    "name": "Ada Lovelace",
    "line1": "1 Analytical Way",
    "line2": "",
    "city": "Los Angeles",
    "region": "CA",
    "postal_code": "90001",
    "country": "US",
    "phone": "",
}


@pytest.fixture
def web(client, redis_client):
    return client


@pytest.fixture
def tee(db_session):
    """A T-shirt: S has 3, M has 10, L is sold out; $25.00 each."""
    cat = make_category("Tops", slug="tops")
    product = make_product(
        cat,
        "Field Tee",
        slug="field-tee",
        sizes=("S", "M", "L"),
        colours=("Black",),
        price=2500,
        stock={("S", "Black"): 3, ("M", "Black"): 10, ("L", "Black"): 0},
    )
    db_session.commit()
    return product


def sku(product, size):
    return next(v.sku for v in product.variants if v.options["size"] == size)


def text(resp) -> str:
    return unescape(resp.get_data(as_text=True))


def token_of(html: str) -> str:
    return re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', html).group(1)


def fresh_token(client) -> str:
    resp = client.get("/csrf-token")
    assert resp.headers["Cache-Control"] == "private, no-store"
    return resp.get_json()["csrf_token"]


def add(client, sku_, quantity=1, **extra):
    """What the product page's form sends (its script fills in the token)."""
    data = {"csrf_token": fresh_token(client), "sku": sku_, "quantity": str(quantity), "product": "field-tee"}
    return client.post("/cart/items", data={**data, **extra})


def form_post(client, path, data, *, page):
    html = client.get(page).get_data(as_text=True)
    return client.post(path, data={"csrf_token": token_of(html), **data})


def item_ids(client) -> list[int]:
    return [int(i) for i in re.findall(r'action="/cart/items/(\d+)"', client.get("/cart").get_data(as_text=True))]


def flashes(client) -> str:
    """The messages the next page shows."""
    return " ".join(re.findall(r'<p class="flash [^"]+">(.*?)</p>', text(client.get("/cart")), re.S))


def log_in(client, email):
    return form_post(client, "/account/login", {"email": email, "password": PASSWORD}, page="/account/login")


def details(client, **over):
    data = {"email": "ada@example.com", "shipping_method": "standard", **ADDRESS, **over}
    return form_post(client, "/checkout/review", data, page="/checkout")


def place(client):
    html = client.get("/checkout/review").get_data(as_text=True)
    data = {
        name: re.search(rf'name="{name}" type="hidden" value="([^"]+)"', html).group(1)
        for name in ("csrf_token", "cart_id", "nonce")
    }
    return data, client.post("/checkout/place", data=data)


def orders_count(db_session) -> int:
    return db_session.scalar(select(func.count()).select_from(Order))


# ------------------------------------------------------------------------------ the product page


def test_product_page_offers_the_selected_variant_and_stays_publicly_cacheable(web, tee):
    first = web.get("/p/field-tee")
    html = first.get_data(as_text=True)
    form = re.search(r'<form method="post" action="/cart/items".*?</form>', html, re.S).group(0)
    assert f'name="sku" id="add-sku" value="{sku(tee, "S")}"' in form
    assert 'name="quantity"' in form and 'max="3"' in form
    assert re.search(r'data-testid="add-to-cart"\s*>Add to cart<', form)
    assert 'name="csrf_token" value=""' in form  # no visitor's token in a page a CDN may keep
    assert 'data-testid="price"' in html and 'data-testid="stock"' in html
    web.get("/csrf-token")  # the session now holds a CSRF secret...
    web.get("/p/field-tee")  # (on which Flask-Login notes, once, that nobody is logged in)
    again = web.get("/p/field-tee")
    assert again.headers["Cache-Control"].startswith("public")  # ...and the page is still the same for all
    assert again.get_data() == first.get_data()

    sold_out = web.get("/p/field-tee?size=L&colour=Black").get_data(as_text=True)
    button = re.search(r'<button[^>]*data-testid="add-to-cart"[^>]*>([^<]*)<', sold_out)
    assert "disabled" in button.group(0) and button.group(1) == "Sold out"
    assert re.search(r'<p class="add-note" id="add-note" >This size and colour is sold out', sold_out)


def test_header_links_to_the_cart_without_a_count(web, tee):
    add(web, sku(tee, "M"), 2)
    html = web.get("/p/field-tee").get_data(as_text=True)
    link = re.search(r'<a class="cart-link" id="cart-link" href="/cart"[^>]*>(.*?)</a>', html, re.S).group(1)
    assert re.sub(r"<[^>]+>", "", link).strip() == "Cart"  # no count in the publicly cached page


# ----------------------------------------------------------------------------------- the cart


def test_add_update_and_remove(web, tee):
    assert "Your cart is empty." in text(web.get("/cart"))
    resp = add(web, sku(tee, "M"), 2)
    assert resp.status_code == 303 and resp.headers["Location"].endswith("/cart")
    page = web.get("/cart")
    html = text(page)
    assert page.headers["Cache-Control"] == "private, no-store"
    assert "Added 2 × Field Tee (M, Black) to your cart." in html
    assert "Field Tee" in html and "Size: M · Colour: Black" in html
    assert re.search(r'data-testid="cart-subtotal">\$50\.00<', html)
    assert re.search(r'data-testid="cart-shipping">\$5\.95<', html)
    assert re.search(r'data-testid="cart-total">\$55\.95<', html)
    assert 'value="2"' in html and 'href="/checkout"' in html

    add(web, sku(tee, "M"), 1)  # the same SKU again adds to its line
    [item] = item_ids(web)
    assert re.search(r'id="qty-\d+" name="quantity" value="3"', text(web.get("/cart")))

    resp = form_post(web, f"/cart/items/{item}", {"quantity": "4"}, page="/cart")
    assert resp.status_code == 303
    html = text(web.get("/cart"))
    assert "Updated: 4 × Field Tee (M, Black)." in html
    assert re.search(r'data-testid="cart-total">\$100\.00<', html)  # standard shipping is free from $75
    assert re.search(r'data-testid="cart-shipping">Free<', html)

    resp = form_post(web, f"/cart/items/{item}/remove", {}, page="/cart")
    assert resp.status_code == 303
    html = text(web.get("/cart"))
    assert "Removed Field Tee (M, Black) from your cart." in html and "Your cart is empty." in html


def test_quantities_are_capped_by_stock_with_a_message(web, tee):
    add(web, sku(tee, "S"), 5)  # only 3 on the shelf
    assert "Only 3 of Field Tee (S, Black) are available, so we added 3: your cart now holds 3." in flashes(web)
    add(web, sku(tee, "S"), 1)
    assert "Your cart already holds all 3 of Field Tee (S, Black) that we have." in flashes(web)
    add(web, sku(tee, "L"), 1)
    assert "Sorry, Field Tee (L, Black) is sold out." in flashes(web)

    add(web, sku(tee, "M"), 1)
    item = item_ids(web)[-1]
    form_post(web, f"/cart/items/{item}", {"quantity": "50"}, page="/cart")
    assert "Only 10 of Field Tee (M, Black) are available, so the quantity is now 10." in flashes(web)
    assert re.search(rf'id="qty-{item}" name="quantity" value="10"', text(web.get("/cart")))

    form_post(web, f"/cart/items/{item}", {"quantity": "101"}, page="/cart")
    assert "Quantity must be a whole number from 1 to 100." in flashes(web)
    form_post(web, f"/cart/items/{item}", {"quantity": "lots"}, page="/cart")
    assert "Enter a quantity as a whole number." in flashes(web)
    add(web, sku(tee, "M"), 100)  # more than a cart may hold of one item
    assert "A cart holds at most 100 of one item." in flashes(web)
    add(web, sku(tee, "M"), 0)
    assert "Quantity must be a whole number from 1 to 100." in flashes(web)
    add(web, "NO-SUCH-SKU", 1)
    assert "That item is no longer for sale." in flashes(web)
    resp = form_post(web, f"/cart/items/{item}", {"quantity": "0"}, page="/cart")  # none of these: removed
    assert resp.status_code == 303 and "Removed Field Tee (M, Black)" in flashes(web)


def test_forms_without_a_valid_csrf_token_change_nothing(web, tee):
    # The product page's form without its script: asked to confirm, nothing added yet.
    resp = web.post("/cart/items", data={"sku": sku(tee, "M"), "quantity": "2", "product": "field-tee"})
    html = text(resp)
    assert resp.status_code == 200 and resp.headers["Cache-Control"] == "private, no-store"
    assert "Add to your cart?" in html and "2 × Field Tee" in html and "$25.00 each" in html
    assert "Your cart is empty." in text(web.get("/cart"))
    resp = web.post("/cart/items", data={"csrf_token": "forged", "sku": sku(tee, "M"), "quantity": "2"})
    assert resp.status_code == 200 and "Your cart is empty." in text(web.get("/cart"))
    # Confirming sends the page's own token: now it is added.
    resp = web.post("/cart/items", data={"csrf_token": token_of(html), "sku": sku(tee, "M"), "quantity": "2"})
    assert resp.status_code == 303 and "Added 2 × Field Tee (M, Black)" in flashes(web)

    [item] = item_ids(web)
    assert web.post(f"/cart/items/{item}", data={"quantity": "1"}).status_code == 400
    assert web.post(f"/cart/items/{item}/remove").status_code == 400
    assert re.search(rf'id="qty-{item}" name="quantity" value="2"', text(web.get("/cart")))
    assert web.post("/checkout/review", data={"email": "x@example.com", **ADDRESS}).status_code == 400
    assert web.post("/checkout/place", data={"nonce": "n" * 20}).status_code == 400


def test_someone_elses_cart_line_cannot_be_touched(web, app, tee):
    add(web, sku(tee, "M"), 1)
    [item] = item_ids(web)
    other = app.test_client()
    add(other, sku(tee, "S"), 1)
    form_post(other, f"/cart/items/{item}", {"quantity": "5"}, page="/cart")
    form_post(other, f"/cart/items/{item}/remove", {}, page="/cart")
    assert re.search(rf'id="qty-{item}" name="quantity" value="1"', text(web.get("/cart")))


# ----------------------------------------------------------------------------- merge on log-in


def test_log_in_merges_the_guest_cart_capped_by_stock(web, tee, db_session):
    from shop.cart import services as carts

    user = make_user("merge@example.com")
    db_session.commit()
    carts.add_item(carts.create(user), sku(tee, "S"), 2)  # from another device earlier
    add(web, sku(tee, "S"), 2)
    add(web, sku(tee, "M"), 1)
    with web.session_transaction() as sess:
        guest_token = sess["cart_token"]

    assert log_in(web, "merge@example.com").status_code == 302
    with web.session_transaction() as sess:
        assert "cart_token" not in sess and "cart_id" not in sess
    html = text(web.get("/cart"))
    assert "some are short in stock" in html and "Field Tee (S, Black): 3" in html
    assert re.search(r'name="quantity" value="3"', html) and re.search(r'name="quantity" value="1"', html)
    guest = db_session.scalar(select(Cart).where(Cart.token == guest_token))
    assert guest.status == "merged"

    form_post(web, "/account/logout", {}, page="/account")
    assert "Your cart is empty." in text(web.get("/cart"))  # the account's cart stays with the account
    log_in(web, "merge@example.com")
    assert len(item_ids(web)) == 2


def test_sign_up_keeps_the_guest_cart(web, tee):
    add(web, sku(tee, "M"), 2)
    form_post(
        web,
        "/account/signup",
        {"name": "New", "email": "new@example.com", "password": PASSWORD, "confirm": PASSWORD},
        page="/account/signup",
    )
    html = text(web.get("/cart"))
    assert "The items you added before logging in are in your cart." in html
    assert re.search(r'name="quantity" value="2"', html)


# ---------------------------------------------------------------------------------- checkout


def test_guest_checkout_creates_a_pending_order_and_goes_to_the_pay_page(web, tee, db_session):
    add(web, sku(tee, "M"), 2)
    page = web.get("/checkout")
    html = text(page)
    assert page.status_code == 200 and page.headers["Cache-Control"] == "private, no-store"
    assert "Standard (3-5 working days): $5.95" in html and "Express (next working day): $19.95" in html
    assert 'autocomplete="email"' in html and "Log in</a> to use your saved addresses" in html

    resp = details(web)
    assert resp.status_code == 303 and resp.headers["Location"].endswith("/checkout/review")
    review = text(web.get("/checkout/review"))
    assert "Ada Lovelace" in review and "ada@example.com" in review
    assert re.search(r'data-testid="review-shipping">\$5\.95<', review)
    assert re.search(r'data-testid="review-tax">\$3\.63<', review)  # 7.25% of $50.00 in California
    assert re.search(r'data-testid="review-total">\$59\.58<', review)
    assert "Place order and pay $59.58" in review

    before = orders_count(db_session)
    form, resp = place(web)
    assert resp.status_code == 303
    location = urlsplit(resp.headers["Location"])
    assert re.fullmatch(r"/pay/test/\d+", location.path) and location.query.startswith("t=")
    assert orders_count(db_session) == before + 1
    order = db_session.scalar(select(Order).order_by(Order.id.desc()))
    db_session.refresh(order)
    assert order.status == "pending" and order.email == "ada@example.com" and order.total == 5958
    assert order.shipping_address["city"] == "Los Angeles" and order.user_id is None
    variant = next(v for v in tee.variants if v.options["size"] == "M")
    db_session.refresh(variant)
    assert variant.reserved == 2

    pay = web.get(resp.headers["Location"])
    assert pay.status_code == 200 and "Pay $59.58" in text(pay)
    detail = web.get(f"/orders/{order.id}")  # the guest's token was kept in the session
    assert detail.status_code == 200 and "Pending" in text(detail)
    assert "Your cart is empty." in text(web.get("/cart"))

    again = web.post("/checkout/place", data=form)  # the same page sent again (a double click)
    assert again.status_code == 303 and again.headers["Location"] == resp.headers["Location"]
    assert orders_count(db_session) == before + 1


def test_a_double_click_places_one_order(web, tee, db_session):
    add(web, sku(tee, "M"), 1)
    details(web)
    html = web.get("/checkout/review").get_data(as_text=True)
    form = {
        name: re.search(rf'name="{name}" type="hidden" value="([^"]+)"', html).group(1)
        for name in ("csrf_token", "cart_id", "nonce")
    }
    with web.session_transaction() as sess:
        cookie_before = dict(sess)
    first = web.post("/checkout/place", data=form)
    with web.session_transaction() as sess:  # the second click left with the cookie of before the first answer
        sess.clear()
        sess.update(cookie_before)
    second = web.post("/checkout/place", data=form)
    assert first.headers["Location"] == second.headers["Location"]
    assert orders_count(db_session) == 1
    order_id = db_session.scalar(select(Order.id))
    assert web.get(f"/orders/{order_id}").status_code == 200  # the guest can still see the order


def test_checkout_details_are_checked_field_by_field(web, tee):
    add(web, sku(tee, "M"), 1)
    resp = details(web, email="not-an-address", city="", country="USA", shipping_method="teleport")
    html = text(resp)
    assert resp.status_code == 422
    assert 'id="city-error">This field is required.' in html and 'id="country-error">' in html
    assert 'aria-describedby="shipping_method-error"' in html  # on the radio group's fieldset
    assert 'id="shipping_method-error">Not a valid choice.' in html
    assert html.count('aria-invalid="true"') >= 4  # city, country and both shipping radios
    resp = details(web, email="not-an-address")
    assert resp.status_code == 422 and "This email is not a valid e-mail address." in text(resp)
    assert web.get("/checkout/review").status_code == 303  # no details kept yet


def test_checkout_with_an_empty_cart_goes_back_to_the_cart(web, tee):
    resp = web.get("/checkout")
    assert resp.status_code == 303 and resp.headers["Location"].endswith("/cart")
    assert "Your cart is empty: add something first." in flashes(web)


def test_logged_in_checkout_uses_a_saved_address(web, tee, db_session):
    from shop.accounts import services as accounts

    user = make_user("kim@example.com")
    address = accounts.add_address(user, {**ADDRESS, "name": "Kim Saved", "country": "GB", "region": ""})
    db_session.commit()
    log_in(web, "kim@example.com")
    add(web, sku(tee, "M"), 1)
    html = text(web.get("/checkout"))
    assert 'value="kim@example.com"' in html
    assert re.search(
        rf'<input checked id="saved_address-0" name="saved_address" type="radio" value="{address.id}">', html
    )
    resp = form_post(
        web,
        "/checkout/review",
        {"email": "kim@example.com", "saved_address": str(address.id), "shipping_method": "express"},
        page="/checkout",
    )
    assert resp.status_code == 303
    review = text(web.get("/checkout/review"))
    assert "Kim Saved" in review and re.search(r'data-testid="review-tax">\$5\.00<', review)  # GB: 20% of $25
    _, resp = place(web)
    assert resp.status_code == 303 and "/pay/test/" in resp.headers["Location"]
    order = db_session.scalar(select(Order).where(Order.user_id == user.id))
    assert order.shipping_method == "express" and order.shipping_address["name"] == "Kim Saved"

    # Someone else's address id is refused.
    add(web, sku(tee, "M"), 1)
    resp = form_post(
        web,
        "/checkout/review",
        {"email": "kim@example.com", "saved_address": "999999", "shipping_method": "standard"},
        page="/checkout",
    )
    assert resp.status_code == 422 and "Choose one of your saved addresses" in text(resp)


def test_out_of_stock_at_checkout_goes_back_to_the_cart_naming_the_items(web, tee, db_session):
    from shop.inventory import services as inventory

    add(web, sku(tee, "S"), 2)
    add(web, sku(tee, "M"), 1)
    details(web)
    small = next(v for v in tee.variants if v.options["size"] == "S")
    inventory.set_on_hand(small.id, 1)  # someone else bought one meanwhile
    form, resp = place(web)
    assert resp.status_code == 303 and resp.headers["Location"].endswith("/cart")
    html = text(web.get("/cart"))
    assert "Sorry, some items ran short while you were checking out: Field Tee (S, Black) (only 1 left)" in html
    assert "Only 1 left: lower the quantity to check out." in html
    assert orders_count(db_session) == 0  # nothing half-made stays behind
    assert len(item_ids(web)) == 2  # the cart is still there to fix
    again = web.post("/checkout/place", data=form)  # the same press again: the same answer
    assert again.headers["Location"].endswith("/cart") and orders_count(db_session) == 0

    [s_item, _] = item_ids(web)
    form_post(web, f"/cart/items/{s_item}", {"quantity": "1"}, page="/cart")
    _, resp = place(web)
    assert "/pay/test/" in resp.headers["Location"] and orders_count(db_session) == 1
