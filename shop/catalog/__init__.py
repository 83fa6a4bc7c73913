"""The catalogue: categories, products, options, variants and images."""
