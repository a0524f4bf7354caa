"""Lazy package namespaces: a package's public names import their module on first use.

So ``import resattn.cli`` or ``from resattn.training.config import KVSTORES``
loads no MXNet: only the module a name lives in is imported, when the name
is first read (PEP 562).
"""
import importlib

__all__ = ["attach"]


def attach(package, exports):
    """``(__getattr__, __dir__, __all__)`` for ``package`` given ``{module: [names]}``.

    ``module`` is relative to ``package`` (``'.blocks'``).
    """
    where = {name: module for module, names in exports.items() for name in names}

    def __getattr__(name):
        module = where.get(name)
        if module is None:
            raise AttributeError("module %r has no attribute %r" % (package, name))
        try:
            imported = importlib.import_module(module, package)
        except ImportError as err:
            if (getattr(err, "name", None) or "").split(".")[0] == "mxnet":
                from ._compat import import_mxnet
                import_mxnet()  # raises the ImportError that names resattn's extras
            raise
        value = getattr(imported, name)
        importlib.import_module(package).__dict__[name] = value
        return value

    def __dir__():
        return sorted(set(importlib.import_module(package).__dict__) | set(where))

    return __getattr__, __dir__, sorted(where)
