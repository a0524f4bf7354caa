"""Sphinx configuration of the resattn documentation.

Build with ``make docs`` (warnings are errors) into ``docs/_build/html``.

Docstrings are numpydoc-formatted and rendered with ``sphinx.ext.napoleon``
rather than the ``numpydoc`` extension: napoleon ships with Sphinx (one
dependency fewer on a pinned, retired MXNet stack) and keeps the package's
own module-level sections (``Sources``, ``Reproducibility``) through
``napoleon_custom_sections``, where numpydoc drops unknown sections.
Markdown pages (the guides written next to the code) are read with MyST.
"""
import os
import sys
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
# The package itself (src layout) wins over any installed copy, so the API
# reference always shows the docstrings of this checkout.
sys.path.insert(0, os.path.join(ROOT, "src"))
sys.path.insert(0, os.path.join(HERE, "_ext"))
os.environ.setdefault("MPLBACKEND", "Agg")
# MXNet 1.9 and GluonCV import-time deprecation noise is not the docs' business.
warnings.filterwarnings("ignore", category=DeprecationWarning)

import resattn  # noqa: E402

project = "resattn"
author = "resattn developers"
copyright = "2024, resattn developers"
version = release = resattn.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "myst_parser",
    "zoo_table",
    "optional_toctree",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "make_diagram.py"]
templates_path = []

# -- MyST -------------------------------------------------------------------
myst_enable_extensions = ["colon_fence", "deflist"]
# `[text](#a-heading)` works in the guides as it does on GitHub.
myst_heading_anchors = 3

# -- autodoc / napoleon -----------------------------------------------------
autodoc_member_order = "bysource"
autodoc_typehints = "none"
# Show `norm_layer=BatchNorm` as written, not `<class 'mxnet.gluon.nn...BatchNorm'>`.
autodoc_preserve_defaults = True
# Gluon blocks inherit hundreds of members; document what resattn defines.
autodoc_inherit_docstrings = False
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False
napoleon_custom_sections = ["Sources", "Reproducibility"]

# -- the guides -----------------------------------------------------------------
# docs/training.md, docs/deployment.md, ... are written alongside the code by
# whoever changes it. The index lists them with `optional-toctree`, which
# skips one not written yet, and links to a missing one are not errors (they
# become links once it exists). Every other warning is an error: `make docs`
# and tests/test_docs.py build with -W.
GUIDES = ("training", "attention", "performance", "deployment", "distributed", "reliability")
MISSING_GUIDES = [g for g in GUIDES if not os.path.isfile(os.path.join(HERE, g + ".md"))]
nitpick_ignore_regex = [("myst", r"(\.\./)*%s\.md(#.*)?" % g) for g in MISSING_GUIDES]
if MISSING_GUIDES:
    print("resattn docs: guides not written yet (skipped): %s" % ", ".join(MISSING_GUIDES))

# -- HTML -------------------------------------------------------------------
html_theme = "alabaster"
html_title = "resattn %s" % release
html_static_path = ["_static"]
html_css_files = ["custom.css"]
html_theme_options = {
    "description": "Residual Attention Networks for MXNet Gluon",
    "fixed_sidebar": True,
    "page_width": "1180px",
    "sidebar_width": "240px",
}


# -- cross references ---------------------------------------------------------
def _resolve_reexports(app, env, node, contnode):
    """Resolve ``resattn.AttentionModule`` to ``resattn.blocks.AttentionModule``.

    The package re-exports its main objects at the top level, where users
    call them; the API reference documents each once, in its own module.
    """
    target = node.get("reftarget", "")
    if node.get("refdomain") != "py" or not target.startswith("resattn."):
        return None
    head, _, name = target.rpartition(".")
    try:
        obj = getattr(sys.modules.get(head) or __import__(head, fromlist=[name]), name)
    except (ImportError, AttributeError):
        return None
    module = getattr(obj, "__module__", None)
    if not module or module == head:
        return None
    domain = env.get_domain("py")
    node = node.deepcopy()
    node["reftarget"] = "%s.%s" % (module, name)
    return domain.resolve_xref(env, node.get("refdoc"), app.builder, node["reftype"],
                               node["reftarget"], node, contnode)


def setup(app):
    app.connect("missing-reference", _resolve_reexports)
