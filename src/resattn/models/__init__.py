"""The model library: blocks, the generic network, the registry and zoo, profiling, conversion.

- :mod:`resattn.models.blocks`: residual units and the generic :class:`AttentionModule`
  (trunk branch, soft mask branch, attention residual learning);
- :mod:`resattn.models.network`: :class:`ResidualAttentionNet`, a stem, three attention
  stages and a head, split into ``features`` and ``output``;
- :mod:`resattn.models._registry`: :func:`register_model` and :class:`ModelSpec`;
- :mod:`resattn.models.zoo`: the spec table (Attention-56 ... 452, the CIFAR
  networks, AttentionNeXt-56 and -92) and a builder per model;
- :mod:`resattn.models._builder`: :func:`get_model` and :func:`load_model`, the one loader of
  published tags, converted files, trained runs and 0.1 files, and :func:`fetch_weights`;
- :mod:`resattn.models.pretrained`: :class:`PretrainedCfg` (``net.pretrained_cfg``), the
  weights' preprocessing as data, and the checks of a weight config's fields;
- :mod:`resattn.models.complexity`: parameters and multiply-accumulates from the symbolic graph;
- :mod:`resattn.models.weights`: the published weight files (tags, preprocessing, provenance);
- :mod:`resattn.models.convert`: weights of GluonCV, the PyTorch reference and the seed;
- :mod:`resattn.models.backbone`: :func:`add_attention`, attention modules in any Gluon
  network (a GluonCV ResNet, say).
"""
from .._lazy import attach as _attach

__getattr__, __dir__, __all__ = _attach(__name__, {
    "._registry": ["ModelSpec", "register_model", "register_alias", "get_spec", "resolve",
                   "list_models", "list_aliases"],
    ".choices": ["ATTENTION_TYPES", "LEARNING_TYPES", "VARIANTS", "MAX_STAGE", "STEMS", "SOURCES"],
    ".blocks": ["AttentionModule", "ResidualUnit", "ResNeXtUnit", "PostActResidualUnit",
                "PostActResNeXtUnit"],
    ".network": ["ResidualAttentionNet"],
    ".backbone": ["add_attention"],
    ".pretrained": ["PretrainedCfg"],
    ".weights": ["Weights", "CIFAR10_CLASSES", "register_weights", "get_weights", "list_weights",
                 "default_weights"],
    ".complexity": ["Layer", "Profile", "profile"],
    ".zoo": ["MODEL_SPECS", "model_config"],
    "._builder": ["get_model", "load_model", "fetch_weights", "convert_file", "run_config",
                  "resolve_weights", "merge_arch"],
    "._deprecated": ["get_model_list", "get_model_spec", "load_pretrained", "short_hash"],
})
__all__ = [n for n in __all__ if n not in ("get_model_list", "get_model_spec", "load_pretrained",
                                           "short_hash")]
