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
