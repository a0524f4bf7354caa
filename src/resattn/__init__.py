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
from . import _legacy, _threads
from ._lazy import attach as _attach

# Before MXNet starts: every physical core, unless OMP_NUM_THREADS (or
# RESATTN_AUTO_THREADS=0) says otherwise; resattn._threads says why.
_threads.configure()

__version__ = "0.2.0.dev0"

__getattr__, __dir__, __all__ = _attach(__name__, {".models": [
    "AttentionModule", "ResidualUnit", "ResNeXtUnit", "PostActResNeXtUnit", "ResidualAttentionNet",
    "get_model", "load_model", "list_models", "model_config", "register_model", "profile",
    "PretrainedCfg", "ATTENTION_TYPES", "LEARNING_TYPES", "VARIANTS",
    "get_model_list"]})  # get_model_list: deprecated (list_models), until 0.3
__all__ = [n for n in __all__ if n != "get_model_list"] + ["__version__"]

_legacy.install()
