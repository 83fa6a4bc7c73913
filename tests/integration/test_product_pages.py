"""Product pages and the site's frame: favicon, 404 wording, the free-shipping claim, breadcrumbs, the
header's orders link and cart count, upload renditions with srcset, the gallery markup and related products."""

import io
import json
import re
from html import unescape

import pytest
from PIL import Image

from shop.catalog.models import ProductImage
from shop.extensions import db
from tests.conftest import local_path
from tests.factories import make_category, make_product, make_user
from tests.images import tiny_png


def text(resp) -> str:
    return unescape(resp.get_data(as_text=True))


@pytest.fixture
def upload_dir(app, tmp_path, monkeypatch):
    monkeypatch.setitem(app.config, "UPLOAD_DIR", str(tmp_path / "uploads"))
    return tmp_path / "uploads"


@pytest.fixture
def manager(db_session, redis_client):
    from shop.accounts.tokens import issue_pair

    user = make_user("images@example.com", role="manager")
    return {"Authorization": f"Bearer {issue_pair(user)['access_token']}"}


@pytest.fixture
def wardrobe(db_session, redis_client):
    """Men › Hoodies with a hoodie in two colours (each colour with its picture), three in-stock neighbours,
    one sold-out neighbour and a product elsewhere."""
    men = make_category("Men", slug="men")
    hoodies = make_category("Hoodies", parent=men, slug="men-hoodies")
    hoodie = make_product(
        hoodies, "Loop Hoodie", slug="loop-hoodie", sizes=("M",), colours=("Grey", "Red"), images=0, price=6500
    )
    for i, (colour, hue) in enumerate((("Grey", 210), ("Red", 0))):
        db.session.add(
            ProductImage(
                product_id=hoodie.id,
                path=f"placeholder/{hue}/{colour.lower()}-hoodie.svg",
                alt=f"Loop Hoodie in {colour.lower()}",
                position=i,
                option_value=colour,
            )
        )
    for i in range(5):
        make_product(hoodies, f"Neighbour {i}", slug=f"neighbour-{i}", stock=10)
    make_product(hoodies, "Gone Hoodie", slug="gone-hoodie", stock=0)
    make_product(make_category("Shoes", slug="shoes"), "Far Shoe", slug="far-shoe")
    db_session.commit()
    return hoodie


# -- the frame ---------------------------------------------------------------------------------------


def test_every_page_names_a_favicon_that_exists(client, wardrobe):
    page = text(client.get("/"))
    icon = re.search(r'<link rel="icon" href="([^"]+)" type="image/svg\+xml">', page).group(1)
    served = client.get(icon)
    assert served.status_code == 200 and served.mimetype == "image/svg+xml" and b"<svg" in served.data
    # Browsers also ask /favicon.ico on their own: no 404 there either.
    ico = client.get("/favicon.ico")
    assert ico.status_code == 301 and ico.headers["Location"].endswith(icon)


def test_404_pages_say_what_was_missing_and_only_that(client, wardrobe):
    nowhere = text(client.get("/nowhere"))
    said = re.search(r'<section class="error-page">(.*?)<p class="actions">', nowhere, re.S).group(1)
    assert "couldn’t find that page" in said and "may have moved" in said and "product" not in said.lower()
    product = client.get("/p/no-such-hoodie")
    assert product.status_code == 404 and "This product is no longer in the shop" in text(product)
    category = client.get("/c/no-such-shelf")
    assert category.status_code == 404 and "This category is no longer in the shop" in text(category)


def test_the_free_shipping_claim_follows_the_configured_threshold(app, client, wardrobe, monkeypatch):
    home = text(client.get("/"))
    assert "Free shipping on orders over $75.00" in home and "free shipping over $75.00" in home
    monkeypatch.setitem(app.config, "FREE_SHIPPING_THRESHOLD", 5000)
    home = text(client.get("/"))
    assert "Free shipping on orders over $50.00" in home and "free shipping over $50.00" in home and "$75" not in home
    monkeypatch.setitem(app.config, "FREE_SHIPPING_THRESHOLD", 0)
    assert "free shipping" not in text(client.get("/")).lower()


def test_the_breadcrumb_names_every_ancestor_category(client, wardrobe):
    page = text(client.get("/p/loop-hoodie"))
    crumb = re.search(r'<nav aria-label="Breadcrumb".*?</nav>', page, re.S).group(0)
    links = re.findall(r'<a href="([^"]+)">([^<]+)</a>', crumb)
    assert links == [("/", "Home"), ("/c/men", "Men"), ("/c/men-hoodies", "Hoodies")]
    assert '<li aria-current="page">Loop Hoodie</li>' in crumb


def test_the_header_links_to_orders_and_counts_the_cart_without_caching_it(client, wardrobe):
    page = client.get("/p/neighbour-0")
    html = text(page)
    assert re.search(r'<a class="orders-link" href="/account/orders"\s*>Orders</a>', html)
    assert 'data-count-url="/cart/count"' in html and ">Cart<" in html  # without JS: just "Cart"
    assert "public" in page.headers["Cache-Control"]  # the page is shared, hence the separate count

    empty = client.get("/cart/count")
    assert empty.get_json() == {"count": 0} and empty.headers["Cache-Control"] == "private, no-store"
    token = client.get("/csrf-token").get_json()["csrf_token"]
    sku = next(v.sku for v in wardrobe.variants if v.options["colour"] == "Red")
    client.post("/cart/items", data={"csrf_token": token, "sku": sku, "quantity": "2", "product": "loop-hoodie"})
    counted = client.get("/cart/count")
    assert counted.get_json() == {"count": 2} and counted.headers["Cache-Control"] == "private, no-store"


# -- the product page ----------------------------------------------------------------------------------


def test_the_gallery_has_a_zoomable_main_picture_and_thumbnails_tagged_by_colour(client, wardrobe):
    page = text(client.get("/p/loop-hoodie"))
    assert re.search(r'<a class="gallery-main" id="gallery-zoom" href="/media/placeholder/210/grey-hoodie.svg">', page)
    thumbs = re.findall(r'<a class="thumb" href="([^"]+)".*?data-option-value="([^"]+)"', page, re.S)
    assert thumbs == [
        ("/media/placeholder/210/grey-hoodie.svg", "Grey"),
        ("/media/placeholder/0/red-hoodie.svg", "Red"),
    ]
    assert "Picture 2 of 2: Loop Hoodie in red" in page
    assert '<dialog class="zoom-dialog"' in page
    # Without JavaScript the picker reloads the page: the chosen colour's picture comes first.
    red = text(client.get("/p/loop-hoodie?colour=Red"))
    assert re.search(r'<a class="gallery-main" id="gallery-zoom" href="/media/placeholder/0/red-hoodie.svg">', red)
    assert re.search(
        r'href="/media/placeholder/0/red-hoodie.svg"[^>]*data-option-value="Red"\s*aria-current="true"', red
    )


def test_related_products_are_in_stock_neighbours_and_never_the_product_itself(client, wardrobe):
    page = text(client.get("/p/neighbour-0"))
    section = re.search(r'<section aria-labelledby="related-heading".*?</section>', page, re.S).group(0)
    assert 'data-src="/p/neighbour-0/related"' in section  # filled in by the page's script
    assert '<a href="/c/men-hoodies">More in Hoodies</a>' in section  # what stays without JavaScript
    fragment = client.get("/p/neighbour-0/related")
    assert fragment.status_code == 200 and "public" in fragment.headers["Cache-Control"]
    related = text(fragment)
    names = re.findall(r'<span class="card-name">([^<]+)</span>', related)
    assert len(names) == 4
    assert client.get("/p/no-such-hoodie/related").status_code == 404
    assert "Neighbour 0" not in names and "Gone Hoodie" not in names and "Far Shoe" not in names
    # Recently viewed is kept in the browser: the page carries only this product's own card data.
    seen = json.loads(unescape(re.search(r"data-product='([^']+)'", page).group(1)))
    assert seen["slug"] == "neighbour-0" and seen["url"] == "/p/neighbour-0" and seen["price"] == "$25.00"


# -- uploads -------------------------------------------------------------------------------------------


def _upload(client, headers, data, content_type="image/png"):
    body = {"filename": "hoodie.png", "content_type": content_type}
    signed = client.post(
        "/api/v1/admin/uploads", data=json.dumps(body), content_type="application/json", headers=headers
    ).get_json()
    return signed, client.put(local_path(signed["upload_url"]), data=data, headers=signed["headers"])


def test_a_refused_upload_names_the_type_in_plain_words(client, manager, upload_dir):
    _, resp = _upload(client, manager, b"GIF89a not a png at all")
    assert resp.status_code == 415
    assert resp.get_json()["error"]["message"] == "The file is not a PNG image."


def test_uploads_get_smaller_copies_and_cards_offer_them_by_srcset(client, manager, upload_dir, wardrobe):
    signed, put = _upload(client, manager, tiny_png(800, 600))
    assert put.status_code == 201
    key = signed["key"]
    stem = key.removeprefix("uploads/").rsplit(".", 1)[0]
    made = sorted(p.name for p in upload_dir.iterdir())
    assert made == sorted([f"{stem}.png", f"{stem}-w320.webp", f"{stem}-w640.webp", f"{stem}-w800.webp"])
    copy = client.get(f"/media/uploads/{stem}-w320.webp")
    assert copy.status_code == 200 and copy.mimetype == "image/webp"
    with Image.open(io.BytesIO(copy.data)) as im:
        assert im.size == (320, 240)  # never enlarged, proportions kept

    db.session.add(ProductImage(product_id=wardrobe.id, path=key, alt="Loop Hoodie, front", position=-1))
    plain = make_product(wardrobe.category, "Plain Hoodie", slug="plain-hoodie", images=0)
    db.session.add(ProductImage(product_id=plain.id, path=key, alt="Plain Hoodie, front", position=0))
    db.session.commit()
    main = text(client.get("/p/plain-hoodie"))
    assert re.search(
        rf'<img id="gallery-image" src="/media/{key}" srcset="[^"]*{stem}-w640\.webp 640w[^"]*"'
        r' sizes="\(max-width: 760px\) 100vw, 640px"',
        main,
    )
    listing = text(client.get("/c/men-hoodies"))
    card = re.search(r'<a href="/p/loop-hoodie" class="card-link">.*?</a>', listing, re.S).group(0)
    srcset = re.search(r'srcset="([^"]+)"', card).group(1)
    widths = [int(w) for w in re.findall(r" (\d+)w", srcset)]
    assert widths == [320, 640, 800] and f"/media/uploads/{stem}-w320.webp 320w" in srcset
    assert 'sizes="(max-width: 760px) 50vw, 240px"' in card
    page = text(client.get("/p/loop-hoodie"))
    # The product page's thumbnail of it is a 96 px slot: the 320 px copy is the one a browser takes.
    assert re.search(rf'<img src="/media/{key}" srcset="[^"]*{stem}-w320\.webp 320w[^"]*" sizes="96px"', page)


def test_images_without_copies_are_served_as_they_are(client, wardrobe):
    listing = text(client.get("/c/men-hoodies"))
    card = re.search(r'<a href="/p/loop-hoodie" class="card-link">.*?</a>', listing, re.S).group(0)
    assert 'src="/media/placeholder/210/grey-hoodie.svg"' in card and "srcset" not in card
    assert client.get("/media/uploads/" + "0" * 32 + "-w320.webp").status_code == 404
