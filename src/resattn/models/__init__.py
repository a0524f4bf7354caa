"""The model library: blocks, the generic network, the registry and zoo, profiling, conversion.

- :mod:`resattn.models.blocks`: residual units and the generic :class:`AttentionModule`
  (trunk branch, soft mask branch, attention residual learning);
- :mod:`resattn.models.network`: :class:`ResidualAttentionNet`, a stem, three attention
  stages and a head, split into ``features`` and ``output``;
- :mod:`resattn.models._registry`: :func:`register_model` and :class:`ModelSpec`;
- :mod:`resattn.models.zoo`: the spec table (Attention-56 ... 452, the CIFAR
  networks, AttentionNeXt-56 and -92) and :func:`get_model`;
- :mod:`resattn.models.complexity`: parameters and multiply-accumulates from the symbolic graph;
- :mod:`resattn.models.weights`: the published weight files (tags, preprocessing, provenance);
- :mod:`resattn.models.convert`: weights of GluonCV, the PyTorch reference and the seed;
- :mod:`resattn.models.backbone`: :func:`add_attention`, attention modules in any Gluon
  network (a GluonCV ResNet, say).
"""
from .._lazy import attach

__getattr__, __dir__, __all__ = attach(__name__, {
    "._registry": ["ModelSpec", "register_model", "register_alias", "get_spec", "resolve",
                   "list_models", "list_aliases"],
    ".choices": ["ATTENTION_TYPES", "LEARNING_TYPES", "VARIANTS", "MAX_STAGE", "STEMS", "SOURCES"],
    ".blocks": ["AttentionModule", "ResidualUnit", "ResNeXtUnit", "PostActResidualUnit",
                "PostActResNeXtUnit"],
    ".network": ["ResidualAttentionNet"],
    ".backbone": ["add_attention"],
    ".weights": ["Weights", "CIFAR10_CLASSES", "register_weights", "get_weights", "list_weights",
                 "default_weights", "weights_tags", "normalization"],
    ".complexity": ["Layer", "Profile", "profile"],
    ".zoo": ["MODEL_SPECS", "get_model", "get_model_list", "get_model_spec", "load_pretrained",
             "fetch_weights",
             "model_config", "short_hash"],
})
