"""The module paths of resattn 0.1 (``resattn.train``, ``resattn.zoo``, ...), kept importable.

0.2 moved the flat modules into sub-packages. Importing an old path gives the
new module under the old name, with a DeprecationWarning naming the new path;
the aliases will be removed in 0.3.
"""
import importlib
import importlib.abc
import importlib.util
import sys
import warnings

#: Old module -> the module that now holds its contents.
MOVED = {
    "resattn.blocks": "resattn.models.blocks",
    "resattn.network": "resattn.models.network",
    "resattn.zoo": "resattn.models.zoo",
    "resattn.convert": "resattn.models.convert",
    "resattn.train": "resattn.training",
    "resattn.launch": "resattn.training.launch",
    "resattn.cli_masks": "resattn.cli.masks",
    "resattn.cli_dist": "resattn.cli.launch",
    "resattn.cli_deploy": "resattn.cli.deploy",
}


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        if fullname in MOVED:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        warnings.warn("%s moved to %s in resattn 0.2; the old path will be removed in 0.3"
                      % (spec.name, MOVED[spec.name]), DeprecationWarning, stacklevel=2)
        return importlib.import_module(MOVED[spec.name])

    def exec_module(self, module):
        pass


_FINDER = _Alias()


def install():
    if _FINDER not in sys.meta_path:
        sys.meta_path.append(_FINDER)
