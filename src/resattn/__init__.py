"""resattn: Residual Attention Network blocks, model zoo and tools for MXNet Gluon.

Wang et al., "Residual Attention Network for Image Classification", CVPR 2017
(arXiv:1704.06904).

The package is organised as the architecture is: :mod:`resattn.models` (the
blocks, the network, the registry and zoo), :mod:`resattn.data`,
:mod:`resattn.training`, :mod:`resattn.masks`, :mod:`resattn.deploy` and
:mod:`resattn.cli`. The names below are imported from :mod:`resattn.models`
on first use, so ``import resattn`` (and the command-line parser) does not
start MXNet until a model is needed.
"""
import importlib

from . import _legacy

__version__ = "0.2.0"

#: Top-level names and the module that defines each.
_EXPORTS = {name: "resattn.models" for name in (
    "AttentionModule", "ResidualUnit", "ResNeXtUnit", "ResidualAttentionNet", "get_model",
    "get_model_list", "model_config", "register_model", "profile", "ATTENTION_TYPES",
    "LEARNING_TYPES", "VARIANTS")}

__all__ = list(_EXPORTS) + ["__version__"]

_legacy.install()


def __getattr__(name):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError("module 'resattn' has no attribute %r" % name)
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
