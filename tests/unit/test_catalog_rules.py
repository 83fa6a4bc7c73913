import pytest

from shop.catalog.services import option_matrix, slugify


def test_option_matrix_is_every_combination_in_declared_order():
    matrix = option_matrix([("size", ["S", "M"]), ("colour", ["Red", "Blue", "Green"])])
    assert len(matrix) == 6
    assert matrix[0] == {"size": "S", "colour": "Red"}
    assert matrix[-1] == {"size": "M", "colour": "Green"}


def test_a_product_without_options_has_one_variant():
    assert option_matrix([]) == [{}]


def test_slugify_makes_url_safe_slugs():
    assert slugify("Crème Brûlée T-Shirt!") == "creme-brulee-t-shirt"
    assert slugify("!!!") == "item"


def test_a_variant_matrix_too_large_for_one_product_is_refused_before_anything_is_made():
    from shop.catalog.models import Product
    from shop.catalog.services import CatalogError, add_variant_matrix

    product = Product(name="Everything Tee", slug="everything-tee")
    sizes = [str(n) for n in range(20)]
    colours = [f"Colour {n}" for n in range(11)]  # 220 combinations
    with pytest.raises(CatalogError, match="220 combinations is more than 200"):
        add_variant_matrix(product, [("size", sizes), ("colour", colours)], price_amount=1000)
    assert product.variants == []
