"""Datasets by name: :class:`ImageDataset`, :func:`get_dataset` and the built-in builders.

:func:`get_dataset` looks the name up in :mod:`resattn.data.registry`; the
builders here are those of 'cifar10', 'cifar100', 'digits',
'imagefolder:PATH' and 'rec:PATH'.
"""
import functools
import os
import struct

import mxnet as mx
import numpy as np
from mxnet import gluon
from mxnet.gluon.data import vision

from .._stats import IMAGENET
from ._common import check_int
from .digits import _digits_upscaled
from .registry import _REGISTRY, _check_stats, _parse
from .transforms import Preprocess

__all__ = ["ImageDataset", "get_dataset"]


class ImageDataset(gluon.data.Dataset):
    """Items ``(x, y)`` of a source passed through :class:`~resattn.data.transforms.Preprocess`.

    ``x`` is a float32 ``mx.nd.NDArray`` of shape (3, H, W), ``y`` a
    ``np.int32``. An index may be an int or ``(int, key)``: the key seeds the
    item's augmentation (see :mod:`resattn.data`, Reproducibility); with a
    plain int the key comes from NumPy's global generator.

    Parameters
    ----------
    source : indexable of (image, label)
        Images (H, W), (H, W, 1) or (H, W, 3), uint8 in [0, 255] or float in
        [0, 1], as NumPy arrays or NDArrays.
    preprocess : Preprocess
    subset : int or None
        Keep only the first ``subset`` items, like ``source[:subset]``.
    classes : int
    name : str
    """

    def __init__(self, source, preprocess, subset=None, classes=None, name=None):
        self._source = source
        self.preprocess = preprocess
        self._length = len(source) if subset is None else min(subset, len(source))
        self.classes, self.name = classes, name

    @property
    def augment(self):
        """Whether items are augmented (and so consume a key each)."""
        return self.preprocess.augment

    def __len__(self):
        return self._length

    def __getitem__(self, idx):
        key = None
        if isinstance(idx, tuple):
            idx, key = idx
        idx = int(idx)
        if not -self._length <= idx < self._length:
            raise IndexError("index %d out of range for %d items" % (idx, self._length))
        img, label = self._source[idx % self._length]
        rng = None
        if self.augment:
            rng = np.random.RandomState(np.random.randint(2 ** 31) if key is None else key)
        return mx.nd.array(self.preprocess(img, rng), dtype=np.float32), np.int32(label)


class _Arrays:
    """A source of ``(images[i], labels[i])``."""

    def __init__(self, images, labels):
        self.images, self.labels = images, labels

    def __len__(self):
        return len(self.images)

    def __getitem__(self, idx):
        return self.images[idx], self.labels[idx]


def get_dataset(name, train=True, root=None, augment=None, cutout=0, seed=0, image_size=None,
                subset=None, normalize=None):
    """A dataset of ``(x, y)``: normalised (3, H, W) float32 NDArray and int32 label.

    Parameters
    ----------
    name : str
        One of :data:`~resattn.data.registry.DATASETS`, built-in or registered
        with :func:`~resattn.data.registry.register_dataset`.
    train : bool
        Training split ('train'), else the test or validation split ('val').
    root : str or None
        Where CIFAR is stored or downloaded (Gluon's default if None). The other
        built-in datasets take no root ('imagefolder:PATH' and 'rec:PATH' carry
        theirs); a registered one takes it if registered with ``takes_root``.
    augment : bool or None
        None means ``train``. Crop and flip as in
        :class:`~resattn.data.transforms.Preprocess`: pad-crop and flip for
        CIFAR, pad-crop only for digits, random-resized-crop and flip for image
        folders and records, none for cluttered digits; a registered dataset's
        source gets those of its ``style`` and ``flip``.
    cutout : int
        Side of the :func:`~resattn.data.transforms.cutout` square, part of
        augmentation: it has no effect when ``augment`` is False, so one set of
        keyword arguments can build both the training and the evaluation set.
    seed : int
        Seeds the generation of 'cluttered-digits'; the other datasets are
        fixed and their augmentation is seeded as :mod:`resattn.data` says.
    image_size : int or None
        Side of ``x``; None for the dataset's ``input_size``.
    subset : int or None
        Keep only the first ``subset`` items.
    normalize : (mean, std) or None
        Per-channel statistics of images in [0, 1] to normalise with instead of
        the dataset's own: those a model's weights were trained with (their
        config's preprocessing), ``((0, 0, 0), (1, 1, 1))`` for none.
    """
    spec, path = _parse(name)
    if normalize is not None:
        normalize = _check_stats(normalize, "normalize")
    check_int("cutout", cutout, 0)
    check_int("seed", seed, 0)
    check_int("image_size", image_size, 1, allow_none=True)
    check_int("subset", subset, 1, allow_none=True)
    if root is not None and not spec.takes_root:
        users = " and ".join(s.name for s in _REGISTRY.values() if s.takes_root)
        raise ValueError("root=%r is only used by %s; dataset %r takes none"
                         % (root, users, name))
    augment = train if augment is None else bool(augment)
    size = image_size or spec.input_size
    options = dict(image_size=size, augment=augment, cutout=cutout, seed=seed, subset=subset)
    if spec.takes_path:
        options["path"] = path
    if spec.takes_root:
        options["root"] = root
    dataset = spec.get_builder()(train, **options)
    if not isinstance(dataset, ImageDataset):
        mean, std = spec.get_stats(path)
        preprocess = Preprocess(size, mean, std, spec.style, augment, flip=spec.flip,
                                cutout=cutout)
        dataset = ImageDataset(dataset, preprocess, subset, spec.get_classes(path))
    if normalize is not None:
        dataset.preprocess.mean = np.asarray(normalize[0], np.float32)
        dataset.preprocess.std = np.asarray(normalize[1], np.float32)
    if dataset.name is None:
        dataset.name = name
    return dataset



# --------------------------------------------------------------------------- built-in builders
# Called by get_dataset as the registry says: builder(train, **options).

def _cifar(cls, train, root):
    return cls(train=train, **({} if root is None else {"root": root}))


def build_cifar10(train, root=None, **_):
    """Gluon's CIFAR-10 split (downloaded on first use into ``root``)."""
    return _cifar(vision.CIFAR10, train, root)


def build_cifar100(train, root=None, **_):
    """Gluon's CIFAR-100 split (downloaded on first use into ``root``)."""
    return _cifar(vision.CIFAR100, train, root)


def build_digits(train, image_size, **_):
    """The :func:`~resattn.data.digits.digits_split` split upscaled to ``image_size``."""
    return _Arrays(*_digits_upscaled(bool(train), image_size))


def _imagenet_style(source, classes, image_size, augment, cutout, subset):
    preprocess = Preprocess(image_size, *IMAGENET, style="imagenet", augment=augment,
                            cutout=cutout)
    return ImageDataset(source, preprocess, subset, classes)


def build_imagefolder(train, path, image_size, augment, cutout, subset, **_):
    """``PATH/{train,val}/<class>/*.jpg|png``; the val classes must be those of train."""
    source = vision.ImageFolderDataset(_folder(path, "train" if train else "val"), flag=1)
    if not train and os.path.isdir(os.path.join(path, "train")):
        expected = _synsets(os.path.join(path, "train"))
        if source.synsets != expected:
            raise ValueError("imagefolder: classes of %r, %s, differ from those of train, %s;"
                             " labels would not match" % (os.path.join(path, "val"),
                                                           source.synsets, expected))
    dataset = _imagenet_style(source, len(source.synsets), image_size, augment, cutout, subset)
    dataset.synsets = list(source.synsets)
    return dataset


def build_rec(train, path, image_size, augment, cutout, subset, **_):
    """``PATH/{train,val}.rec`` with their ``.idx``; classes counted on train.rec if present."""
    rec, idx = _record(path, "train" if train else "val")
    labelled = _record(path, "train") if os.path.isfile(os.path.join(path, "train.idx")) \
        else (rec, idx)
    return _imagenet_style(vision.ImageRecordDataset(rec, flag=1), _record_classes(*labelled),
                           image_size, augment, cutout, subset)


# --------------------------------------------------------------------------- folders, records

def _folder(path, split):
    root = os.path.join(path, split)
    if not os.path.isdir(root):
        raise ValueError("imagefolder: folder %r does not exist; expected %s/{train,val}/"
                         "<class>/*.jpg|png" % (root, path))
    return root


def _synsets(root):
    # The same rule as gluon's ImageFolderDataset, so labels agree with it.
    return [d for d in sorted(os.listdir(root)) if os.path.isdir(os.path.join(root, d))]


def _record(path, split):
    rec, idx = os.path.join(path, split + ".rec"), os.path.join(path, split + ".idx")
    for f in (rec, idx):
        if not os.path.isfile(f):
            raise ValueError("rec: file %r does not exist; expected %s/{train,val}.rec with "
                             "its .idx" % (f, path))
    return rec, idx


@functools.lru_cache(maxsize=None)
def _record_classes(rec, idx):
    """1 + the largest label, reading only the 24-byte header of each record."""
    with open(idx) as f:
        offsets = [int(line.split()[1]) for line in f if line.strip()]
    top = -1
    with open(rec, "rb") as f:
        for offset in offsets:
            f.seek(offset)
            magic, _, flag, label = struct.unpack("<IIIf", f.read(16))
            if magic != 0xced7230a:
                raise ValueError("rec: %r is not a RecordIO file matching %r" % (rec, idx))
            if flag == 1:
                f.seek(16, os.SEEK_CUR)
                label = struct.unpack("<f", f.read(4))[0]
            elif flag > 1:
                raise ValueError("rec: %r holds records with %d labels; one is supported"
                                 % (rec, flag))
            top = max(top, int(label))
    return top + 1


def _imagefolder_classes(path):
    """The number of class folders in ``PATH/train``."""
    return len(_synsets(_folder(path, "train")))


def _imagefolder_names(path):
    """The class folders of ``PATH/train``, in label order."""
    return _synsets(_folder(path, "train"))


def _rec_classes(path):
    """1 + the largest label of ``PATH/train.rec``."""
    return _record_classes(*_record(path, "train"))
