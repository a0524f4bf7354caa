"""Imports of MXNet and GluonCV with errors that say what to install."""
import importlib
import sys

_MXNET_HINT = (
    "resattn needs MXNet, which is an extra so that the CPU and GPU builds are never "
    "installed together. Install one of:\n"
    "    pip install 'resattn[cpu]'    # mxnet==1.9.1, CPU\n"
    "    pip install 'resattn[cu112]'  # mxnet-cu112==1.9.1, CUDA 11.2")


def import_mxnet():
    """Return the ``mxnet`` module or raise an ImportError naming the extras."""
    try:
        return importlib.import_module("mxnet")
    except ImportError as err:  # pragma: no cover - exercised in a subprocess test
        raise ImportError(_MXNET_HINT + "\n(import failed with: %s)" % err) from err


def import_gluoncv():
    """Import GluonCV's MXNet half even where PyTorch >= 2 is installed.

    GluonCV 0.10.5 raises ``RuntimeError`` at import when it finds ``torch>=2``
    (its check only allows ``torch<2``), although resattn uses none of its
    PyTorch code. Hiding ``torch`` for the duration of that import makes
    GluonCV skip the check; the real ``torch`` module is restored afterwards.
    """
    if "gluoncv" in sys.modules:
        return sys.modules["gluoncv"]
    missing = object()
    saved = sys.modules.get("torch", missing)
    sys.modules["torch"] = None  # makes `import torch` raise ImportError
    try:
        import gluoncv  # noqa: F401
    finally:
        if saved is missing:
            del sys.modules["torch"]
        else:
            sys.modules["torch"] = saved
    return sys.modules["gluoncv"]
