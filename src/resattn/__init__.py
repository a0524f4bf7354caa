"""resattn: Residual Attention Network blocks, model zoo and tools for MXNet Gluon.

Wang et al., "Residual Attention Network for Image Classification", CVPR 2017
(arXiv:1704.06904).
"""
from ._compat import import_mxnet

import_mxnet()

from .blocks import (ATTENTION_TYPES, LEARNING_TYPES, VARIANTS, AttentionModule,  # noqa: E402
                     ResNeXtUnit, ResidualUnit)
from .network import ResidualAttentionNet  # noqa: E402
from .profile import profile  # noqa: E402
from .zoo import get_model, get_model_list, model_config  # noqa: E402

__version__ = "0.1.0"

__all__ = ["AttentionModule", "ResidualUnit", "ResNeXtUnit", "ResidualAttentionNet",
           "get_model", "get_model_list", "model_config", "profile",
           "ATTENTION_TYPES", "LEARNING_TYPES", "VARIANTS", "__version__"]
