"""The choices of the model library, importable without MXNet (the CLI takes its own from here)."""

__all__ = ["ATTENTION_TYPES", "LEARNING_TYPES", "VARIANTS", "MAX_STAGE", "STEMS", "SOURCES"]

#: Soft-mask activations of the paper's Sec. 3.4 / Table 2: f1 (mixed),
#: f2 (channel) and f3 (spatial).
ATTENTION_TYPES = ("mixed", "channel", "spatial")
#: Attention residual learning (1 + M) * T, or naive attention learning M * T.
LEARNING_TYPES = ("arl", "nal")
#: 'official' follows the paper's Caffe prototxt; 'gluoncv' the lineage of
#: GluonCV, the Gluon implementation and the PyTorch reference.
VARIANTS = ("official", "gluoncv")
#: ``stage`` of an attention module ranges over 0..MAX_STAGE; the soft mask
#: has ``MAX_STAGE - stage`` max-poolings.
MAX_STAGE = 4
#: 'imagenet': 7x7/2 convolution and 3x3/2 max-pooling (224 -> 56);
#: 'cifar': one 3x3 convolution at full resolution.
STEMS = ("imagenet", "cifar")
#: Whose parameter names a weight file uses (:func:`resattn.models.convert.load_params`).
SOURCES = ("gluoncv", "pytorch", "seed", "resattn")
