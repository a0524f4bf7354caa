"""The ``zoo-table`` directive: the model-zoo table, computed from the registry.

Every registered model is built (not initialised) and profiled with
:func:`resattn.models.complexity.profile` at its own input size, so the table can never
disagree with the code. Usage in a page::

    ```{zoo-table}
    ```
"""
import os

from docutils import nodes
from sphinx.util.docutils import SphinxDirective

COLUMNS = ("model", "variant", "stem", "input", "params (M)", "paper params (M)",
           "prototxt params (M)", "MACs (G)", "paper MACs (G)", "published accuracy (source)")


def zoo_rows():
    """One dict per registered model, in registry order.

    Keys: ``name``, ``variant``, ``stem``, ``input_size``, ``params`` and
    ``macs`` (ours, counted by :func:`resattn.models.complexity.profile` at
    ``input_size``), ``paper_params``/``paper_macs`` (millions / G, or None),
    ``prototxt_params`` (millions, the authors' deploy file's count, or None)
    and ``published`` (text with its source, or None).
    """
    from resattn.models.complexity import profile
    from resattn.models import get_model, get_spec, list_models, model_config

    rows = []
    for name in list_models():
        cfg = model_config(name)
        prof = profile(get_model(name), cfg["input_size"])
        rows.append(dict(name=name, variant=cfg["variant"], stem=get_spec(name).arch["stem"],
                         input_size=cfg["input_size"], params=prof.params, macs=prof.macs,
                         paper_params=cfg.get("paper_params"), paper_macs=cfg.get("paper_macs"),
                         prototxt_params=cfg.get("prototxt_params"),
                         published=cfg.get("published")))
    return rows


def table_cells(rows):
    """The header and one list of cell texts per model."""
    body = []
    for r in rows:
        body.append([r["name"], r["variant"], r["stem"], "%d" % r["input_size"],
                     "%.2f" % (r["params"] / 1e6),
                     "-" if r["paper_params"] is None else "%.1f" % r["paper_params"],
                     "-" if r["prototxt_params"] is None else "%.2f" % r["prototxt_params"],
                     "%.3f" % (r["macs"] / 1e9),
                     "-" if r["paper_macs"] is None else "%.1f" % r["paper_macs"],
                     r["published"] or "-"])
    return list(COLUMNS), body


def _row(cells, literal_first=False):
    row = nodes.row()
    for i, text in enumerate(cells):
        para = nodes.paragraph()
        para += nodes.literal(text, text) if (literal_first and i == 0) else nodes.Text(text)
        entry = nodes.entry()
        entry += para
        row += entry
    return row


class ZooTable(SphinxDirective):
    """Render :func:`zoo_rows` as a table (docutils nodes, so any source parser works)."""

    has_content = False

    def run(self):
        # Re-read the page when the code behind the numbers changes.
        import resattn.models
        for module in ("zoo", "_registry", "network", "blocks", "complexity"):
            self.env.note_dependency(os.path.join(os.path.dirname(resattn.models.__file__),
                                                  module + ".py"))
        header, body = table_cells(zoo_rows())
        table = nodes.table(classes=["zoo-table"])
        group = nodes.tgroup(cols=len(header))
        table += group
        for width in (14, 6, 6, 4, 6, 6, 6, 6, 6, 30):
            group += nodes.colspec(colwidth=width)
        thead = nodes.thead()
        thead += _row(header)
        group += thead
        tbody = nodes.tbody()
        for cells in body:
            tbody += _row(cells, literal_first=True)
        group += tbody
        return [table]


def setup(app):
    app.add_directive("zoo-table", ZooTable)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
