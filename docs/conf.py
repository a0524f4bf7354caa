"""Sphinx configuration of the resattn documentation.

Build with ``make docs`` (warnings are errors) into ``docs/_build/html``.

Docstrings are numpydoc-formatted and rendered with ``sphinx.ext.napoleon``
rather than the ``numpydoc`` extension: napoleon ships with Sphinx (one
dependency fewer on a pinned, retired MXNet stack) and keeps the package's
own module-level sections (``Sources``, ``Reproducibility``) through
``napoleon_custom_sections``, where numpydoc drops unknown sections.
Markdown pages (the guides written next to the code) are read with MyST.
"""
import importlib
import os
import sys
import types
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
def _find(path):
    """The object at dotted ``path`` (``resattn.masks.capture``), or None.

    The sub-packages export their modules' names lazily; a module found where
    a name was asked for stands for its namesake inside it.
    """
    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        try:
            for attr in parts[i:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return None
        return obj
    return None


def _canonical(obj, path, reftype):
    """Where the API reference may document ``obj``, found at ``path``: candidate names."""
    name = path.rpartition(".")[2]
    if isinstance(obj, types.ModuleType):
        if reftype == "mod" or not hasattr(obj, name):
            return [obj.__name__]
        obj = getattr(obj, name)
    names = []
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if isinstance(module, str) and module.startswith("resattn."):
        names.append("%s.%s" % (module, qualname or name))
    # Data (a tuple, a dict) has no module of its own: every module that binds it.
    names.extend("%s.%s" % (m, name) for m, mod in sorted(sys.modules.items())
                 if m.startswith("resattn.") and getattr(mod, "__dict__", {}).get(name) is obj)
    return names


def _resolve_reexports(app, env, node, contnode):
    """Resolve ``resattn.AttentionModule`` to ``resattn.models.blocks.AttentionModule``.

    The package re-exports its main objects at the top level, and each
    sub-package its modules' (``resattn.training.fit``,
    ``resattn.masks.capture``), where users call them; the API reference
    documents each once, in its own module. A short name in a docstring
    (``:func:`capture``` in ``resattn.masks.scores``) is looked up in the
    documented module, then in each package above it.
    """
    target = node.get("reftarget", "")
    if node.get("refdomain") != "py":
        return None
    if target.startswith("resattn."):
        candidates = [target]
    else:
        parts = (node.get("py:module") or "").split(".")
        candidates = [".".join(parts[:i] + [target]) for i in range(len(parts), 0, -1)
                      if parts[0] == "resattn"]
    domain = env.get_domain("py")
    for path in candidates:
        obj = _find(path)
        for new in [] if obj is None else _canonical(obj, path, node["reftype"]):
            if new == target:
                continue
            ref = node.deepcopy()
            ref["reftarget"] = new
            found = domain.resolve_xref(env, node.get("refdoc"), app.builder, node["reftype"],
                                        new, ref, contnode)
            if found is not None:
                return found
    return None


def setup(app):
    app.connect("missing-reference", _resolve_reexports)
