"""Sphinx configuration of the skmetalstsq documentation.

Build with ``python -m sphinx -W --keep-going -b html docs docs/_build/html`` from the
repository root (needs ``pip install -e ".[docs]"``). Every example in ``examples/`` is
executed by sphinx-gallery; nothing is fetched from the network.
"""

import os
from pathlib import Path

from sphinx_gallery.sorting import ExplicitOrder

import skmetalstsq

# every figure of the gallery is drawn off-screen
os.environ.setdefault("MPLBACKEND", "Agg")

HERE = Path(__file__).resolve().parent

project = "skmetalstsq"
author = "skmetalstsq developers"
copyright = "skmetalstsq developers"
release = skmetalstsq.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.mathjax",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
]

exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
templates_path = []
default_role = "py:obj"

# autodoc and numpydoc: members are listed by ``:members:`` in api.rst, not by
# numpydoc's autosummary tables (which would need a stub page per method)
autodoc_default_options = {"member-order": "bysource"}
autodoc_typehints = "none"
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

# no intersphinx: the build must not need the network (references to metatensor,
# numpy or scikit-learn names stay plain text)

sphinx_gallery_conf = {
    "examples_dirs": str(HERE.parent / "examples"),
    "gallery_dirs": "auto_examples",
    # execute every example, not only those named plot_*
    "filename_pattern": r".*\.py$",
    "ignore_pattern": r"__init__\.py",
    # the quick start first, then the examples on synthetic data before those on
    # real descriptors; an example not listed here comes after these
    "within_subsection_order": ExplicitOrder(
        [
            "quickstart.py",
            "rcond_cross_validation.py",
            "model_selection.py",
            "soap_energies_forces.py",
            "linear_potential_md.py",
            "*",
        ]
    ),
    # a cell ending in a plotting call shows no "Text(...)" or "<... object at 0x...>"
    # line (the representations of other objects, estimators included, stay)
    "ignore_repr_types": r"matplotlib\.|skmetalstsq\.display\.",
    "abort_on_example_error": True,
    "image_scrapers": ("matplotlib",),
    "matplotlib_animations": False,
    "remove_config_comments": True,
    "download_all_examples": True,
    "show_memory": False,
    "plot_gallery": "True",
}

html_theme = "pydata_sphinx_theme"
html_title = f"skmetalstsq {release}"
html_static_path = []
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    # the API reference is one page without subpages: its sections go in the left
    # sidebar, which would otherwise be empty, instead of the right one
    "secondary_sidebar_items": {
        "**": ["page-toc", "edit-this-page", "sourcelink"],
        "api": [],
    },
}
html_sidebars = {"api": ["page-toc"]}
html_show_sourcelink = False
