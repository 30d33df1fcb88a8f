"""A Django project for the tests, the docs and ``make demo``."""
