"""resattn inside GluonCV: its model zoo, its training scripts, its import.

GluonCV's scripts build networks with ``gluoncv.model_zoo.get_model(name,
**kwargs)``. :func:`register` adds every resattn model (``attention56_cifar``,
``attention92``, ...) to GluonCV's model table, so those scripts, and any code
that calls GluonCV's ``get_model``, build resattn models by name while
GluonCV's own names (``resnet18_v1b`` as a ``--teacher``,
``cifar_residualattentionnet56``) keep building GluonCV's models.
:func:`run_script` (``resattn gluoncv SCRIPT.py ARGS...``) runs an unedited
GluonCV script that way::

    resattn gluoncv train_cifar10.py --model attention56_cifar --num-epochs 200 ...

GluonCV 0.10 refuses to import where PyTorch >= 2 is installed (its check
allows only ``torch<2``) although its MXNet half does not use PyTorch.
:func:`import_gluoncv` imports it anyway by hiding ``torch`` for the
duration of the import; GluonCV's PyTorch models (``gluoncv.torch``) are then
unavailable in that process, everything MXNet works, and ``torch`` itself
imports normally afterwards.
"""
import os
import runpy
import sys

from ._compat import import_gluoncv

__all__ = ["import_gluoncv", "model_table", "register", "run_script"]


def model_table():
    """GluonCV's name -> builder table (the dict ``gluoncv.model_zoo.get_model`` reads).

    It is private to GluonCV (``gluoncv.model_zoo.model_zoo._models``); this is
    the one place resattn touches it, and it fails clearly if GluonCV changes.
    """
    import_gluoncv()
    module = sys.modules.get("gluoncv.model_zoo.model_zoo")
    table = getattr(module, "_models", None)
    if not isinstance(table, dict) or "resnet18_v1b" not in table:
        raise RuntimeError("this GluonCV (%s) has no model table at gluoncv.model_zoo."
                           "model_zoo._models; resattn.gluoncv supports GluonCV 0.10"
                           % getattr(sys.modules.get("gluoncv"), "__version__", "?"))
    return table


def _builder(name):
    from .models import get_model

    def build(**kwargs):
        return get_model(name, **kwargs)
    build.__name__ = build.__qualname__ = name
    build.__doc__ = "resattn's %s (resattn.get_model), for GluonCV's get_model." % name
    build.resattn = True
    return build


def register(names=None):
    """Add resattn models to GluonCV's model table; returns the names added.

    Parameters
    ----------
    names : list of str, optional
        Registered resattn names (default: all). A name GluonCV already has
        is an error, so that none of GluonCV's models is ever replaced.

    Examples
    --------
    >>> from resattn import gluoncv as rg
    >>> added = rg.register()
    >>> net = rg.import_gluoncv().model_zoo.get_model('attention56_cifar', classes=10)
    """
    from .models import list_models
    table = model_table()
    names = list_models() if names is None else list(names)
    unknown = sorted(set(names) - set(list_models()))
    if unknown:
        raise ValueError("not resattn models: %s; available: %s"
                         % (", ".join(unknown), ", ".join(list_models())))
    added = []
    for name in names:
        current = table.get(name)
        if current is not None and not getattr(current, "resattn", False):
            raise ValueError("GluonCV already has a model named %r; resattn does not replace "
                             "GluonCV's models" % name)
        if current is None:
            table[name] = _builder(name)
            added.append(name)
    return added


def run_script(path, argv=()):
    """Run a GluonCV script as ``python PATH ARGV...`` with resattn's models registered.

    The script runs unedited in this process, as ``__main__``, with
    ``sys.argv = [path, *argv]``, after :func:`import_gluoncv` and
    :func:`register`. Returns its exit status (0 when it ends normally).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError("GluonCV script %s: no such file" % path)
    register()
    saved_argv, saved_path = sys.argv, list(sys.path)
    sys.argv = [path] + list(argv)
    sys.path.insert(0, os.path.dirname(os.path.abspath(path)))
    try:
        runpy.run_path(path, run_name="__main__")
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        sys.stderr.write("%s\n" % exc.code)
        return 1
    finally:
        sys.argv, sys.path[:] = saved_argv, saved_path
    return 0
