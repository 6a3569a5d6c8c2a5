"""Sphinx configuration of kernelfit's documentation.

Build from the repository root with ``make docs`` (warnings are errors).  The package is
imported from ``src/`` beside this file, so the pages always describe this checkout; the
gallery's scripts (``docs/gallery``) are executed during the build by sphinx-gallery.
"""

import dataclasses
import sys
import warnings
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import kernelfit  # noqa: E402  (needs the path above)

project = "kernelfit"
author = "kernelfit developers"
copyright = "2026, kernelfit developers"
try:
    release = version("kernelfit")
except PackageNotFoundError:  # building from a tree that was never installed
    release = kernelfit.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "gallery", "sg_execution_times.rst", "make_report_png.py"]
templates_path = ["_templates"]

# The API pages: autosummary writes one page per public object into api/generated.
autosummary_generate = True
autodoc_typehints = "none"          # the numpydoc sections carry the types
# numpydoc lists a class's public attributes and methods itself; autosummary's class pages
# (the template in _templates/autosummary) would list them a second time.
numpydoc_show_class_members = False
numpydoc_xref_param_type = False
numpydoc_validation_checks = set()

# The gallery: every script in gallery/ runs, in file-name order, and its output is shown.
sphinx_gallery_conf = {
    "examples_dirs": ["gallery"],
    "gallery_dirs": ["auto_examples"],
    "filename_pattern": r".*\.py$",
    "within_subsection_order": "FileNameSortKey",
    "download_all_examples": False,
    "remove_config_comments": True,
    "abort_on_example_error": True,
    "image_scrapers": ("matplotlib",),
    "show_memory": False,
    "min_reported_time": 1,
}

html_theme = "pydata_sphinx_theme"
html_title = f"kernelfit {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
}
html_static_path = []
html_show_sourcelink = False

myst_heading_anchors = 3

# matplotlib draws the gallery's figures without a screen.
warnings.filterwarnings("ignore", message="Matplotlib is currently using agg")


def _public_signature(app, what, name, obj, options, signature, return_annotation):
    """Show a dataclass's signature without its private fields (a leading underscore).

    ``KernelFit`` keeps its lazily made residual in ``_residual``; the generated signature
    would list it, and its ``default_factory`` fields as ``<factory>``.
    """
    if what != "class" or not dataclasses.is_dataclass(obj):
        return None
    parameters = []
    for field in dataclasses.fields(obj):
        if not field.init or field.name.startswith("_"):
            continue
        if field.default is not dataclasses.MISSING:
            parameters.append(f"{field.name}={field.default!r}")
        elif field.default_factory is not dataclasses.MISSING:
            parameters.append(f"{field.name}={field.default_factory()!r}")
        else:
            parameters.append(field.name)
    return f"({', '.join(parameters)})", return_annotation


def setup(app):
    app.connect("autodoc-process-signature", _public_signature)
