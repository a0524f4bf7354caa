"""``optional-toctree``: a toctree whose entries may not exist (yet).

The guides (docs/training.md, docs/deployment.md, ...) are written next to
the code they describe, by whoever changes it. A plain toctree fails a
``-W`` build when one is missing, and Sphinx's empty-glob warning cannot be
suppressed, so this directive drops the entries that are not documents of
the project (listing them at ``-v``) and is otherwise Sphinx's ``toctree``.
"""
from docutils.statemachine import StringList
from sphinx.directives.other import TocTree
from sphinx.util import docname_join, logging

logger = logging.getLogger(__name__)


class OptionalTocTree(TocTree):
    """``toctree`` that keeps only the entries that are documents of the project."""

    def run(self):
        kept, skipped = [], []
        for line in self.content:
            entry = line.strip()
            if not entry:
                continue
            if docname_join(self.env.docname, entry) in self.env.found_docs:
                kept.append(entry)
            else:
                skipped.append(entry)
        if skipped:
            logger.verbose("%s: optional toctree entries not written yet: %s",
                           self.env.docname, ", ".join(skipped))
        self.content = StringList(kept, source=self.env.doc2path(self.env.docname))
        return super().run()


def setup(app):
    app.add_directive("optional-toctree", OptionalTocTree)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
