"""Data: transforms, datasets (real and synthetic), the dataset registry and loaders.

- :mod:`resattn.data.registry`: :func:`~resattn.data.register_dataset`,
  :class:`~resattn.data.DatasetSpec`, :data:`~resattn.data.DATASETS` and
  :func:`~resattn.data.dataset_info` (it imports no MXNet);
- :mod:`resattn.data.datasets`: :func:`~resattn.data.get_dataset`,
  :class:`~resattn.data.ImageDataset` and the builders of the built-in datasets;
- :mod:`resattn.data.transforms`: augmentation, :class:`~resattn.data.Preprocess` and
  :func:`~resattn.data.create_transform` (timm's), the transform of a network's weights;
- :mod:`resattn.data.config`: :func:`~resattn.data.resolve_data_config` (timm's), the data
  config of ``net.pretrained_cfg``;
- :mod:`resattn.data.digits` and :mod:`resattn.data.synthetic`: the offline digits and
  cluttered digits;
- :mod:`resattn.data.loader`: sharded loaders, :func:`~resattn.data.get_data_loader`.

Built-in names accepted by :func:`~resattn.data.get_dataset` (see
:data:`~resattn.data.DATASETS`); :func:`~resattn.data.register_dataset` adds more:

``cifar10``, ``cifar100``
    Gluon's CIFAR classes; they download on first use.
``digits``
    The 1,797 UCI handwritten digits shipped inside scikit-learn (offline),
    upscaled from 8x8 to 32x32 and split 1,437 / 360 (see
    :func:`~resattn.data.digits_split`).
``cluttered-digits``
    A 'cluttered MNIST'-style task built from the digits: one digit and a few
    clutter patches on a 64x64 canvas, with the digit's box kept for plots
    (see :class:`~resattn.data.ClutteredDigits`).
``imagefolder:PATH``, ``rec:PATH``
    ``PATH/{train,val}/<class>/*.jpg|png`` or ``PATH/{train,val}.rec`` (+ ``.idx``),
    with ImageNet preprocessing.

Reproducibility
---------------
Augmentation draws from a fresh ``np.random.RandomState`` per item, seeded
by a key; nothing uses Python's ``random`` or MXNet's generator. When an
epoch's iteration starts (at its first batch), the sampler of
:func:`~resattn.data.get_data_loader` draws the whole epoch's shuffle order
and one key per item from NumPy's global generator *in the main process*.
So a trainer that calls
``np.random.seed(f(seed, epoch))`` before each epoch (and ``mx.random.seed``
for the network's initialisation) gets the same batches whatever
``num_workers`` is, and reseeding between batches changes nothing; worker
processes never touch a global generator. Indexing a dataset directly,
``dataset[i]``, draws the key from NumPy's global generator in the calling
process.
"""
from .._lazy import attach as _attach

__getattr__, __dir__, __all__ = _attach(__name__, {
    ".registry": ["DATASETS", "DatasetSpec", "register_dataset", "list_datasets",
                  "dataset_spec", "dataset_info"],
    ".datasets": ["ImageDataset", "get_dataset"],
    ".config": ["resolve_data_config"],
    ".images": ["read_image", "MAX_IMAGE_PIXELS"],
    ".transforms": ["Preprocess", "create_transform", "pad_crop", "random_flip", "cutout", "random_resized_crop",
                    "resize_short", "center_crop"],
    ".digits": ["digits_split"],
    ".synthetic": ["make_cluttered_digits", "ClutteredDigits"],
    ".loader": ["get_data_loader", "ShardSampler", "shard_indices"],
})
