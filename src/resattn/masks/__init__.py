"""Soft masks ``M(x)`` of a Residual Attention Network: capture, reduce, score.

Each attention module outputs ``(1 + M(x)) * T(x)`` (Eq. 3); the soft mask
``M`` has the trunk's shape ``(N, C, H, W)``. The paper's Fig. 1 shows such
masks: a low-level one diminishing the blue sky around a balloon, a
high-level one highlighting the balloon. This module reads them out without
changing the network:
:func:`capture` runs a wrapper, :class:`MaskNet`, that walks a
ResidualAttentionNet's ``features`` calling :meth:`AttentionModule.attend`
where the normal forward calls the module, so the network itself has no
extra outputs (masks named ``'stage{s}.module{k}'``); so does any network with
that layout (``features`` / ``output``, modules at the top level of a stage).
Any other network that
contains attention modules (e.g. after :func:`resattn.models.add_attention`)
runs its own forward once, imperatively, with each module recording its
mask; masks are then named by the module's path in the network.

Examples
--------
>>> import mxnet as mx, resattn
>>> from resattn.masks import capture, reduce_mask
>>> net = resattn.get_model('attention56_cifar', width_mult=1/16)
>>> net.initialize()
>>> logits, masks = capture(net, mx.nd.zeros((1, 3, 32, 32)))
>>> [(m.name, m.array.shape) for m in masks]  # doctest: +NORMALIZE_WHITESPACE
[('stage1.module1', (1, 8, 32, 32)), ('stage2.module1', (1, 16, 16, 16)),
 ('stage3.module1', (1, 32, 8, 8))]
>>> reduce_mask(masks[0], 'mean').shape
(1, 32, 32)
"""
from .._lazy import attach as _attach

__getattr__, __dir__, __all__ = _attach(__name__, {
    ".masknet": ["Mask", "Capture", "MaskNet", "capture", "capture_trunk"],
    ".reduce": ["REDUCTIONS", "reduce_mask", "reduce_masks"],
    ".attribution": ["ClassChannels", "class_channels"],
    ".scores": ["box_score", "box_auc", "score_by_stage"],
})
