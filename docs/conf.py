"""Sphinx configuration for the stomp_cluster documentation.

Build with ``make docs`` (``sphinx-build -W``: warnings are errors).

Intersphinx links to Python, Django and Channels need their inventories, which are
fetched over the network. Our build machines only reach package registries, so the
mapping is empty unless ``STOMP_DOCS_INTERSPHINX=1`` is set; without it, references to
those projects are tolerated (``nitpick_ignore_regex``) instead of being links.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# autodoc imports our modules; some need configured settings.
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "testproject.settings")
import django  # noqa: E402

django.setup()

import stomp_cluster  # noqa: E402

project = "stomp_cluster"
author = "the stomp_cluster authors"
copyright = "2025, the stomp_cluster authors"
release = stomp_cluster.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.intersphinx",
    "myst_parser",
]

root_doc = "index"
exclude_patterns = ["_build", "tutorial_project"]
templates_path: list[str] = []
html_static_path: list[str] = []
html_theme = "alabaster"
html_title = f"stomp_cluster {release}"

nitpicky = True

autodoc_member_order = "bysource"
autodoc_typehints = "description"
napoleon_google_docstring = True
napoleon_numpy_docstring = False

INTERSPHINX = os.environ.get("STOMP_DOCS_INTERSPHINX") == "1"
intersphinx_mapping: dict[str, tuple[str, str | None]] = (
    {
        "python": ("https://docs.python.org/3", None),
        "django": (
            "https://docs.djangoproject.com/en/5.2/",
            "https://docs.djangoproject.com/en/5.2/_objects/",
        ),
        "channels": ("https://channels.readthedocs.io/en/stable/", None),
    }
    if INTERSPHINX
    else {}
)
intersphinx_timeout = 10

# Offline, only our own Python objects can be resolved.
nitpick_ignore_regex: list[tuple[str, str]] = (
    [] if INTERSPHINX else [(r"py:.*", r"(?!stomp_cluster\b).*")]
)
