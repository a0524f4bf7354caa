"""Datasets, augmentation and loaders for training Residual Attention Networks.

Names accepted by :func:`get_dataset` (see :data:`DATASETS`):

``cifar10``, ``cifar100``
    Gluon's CIFAR classes; they download on first use.
``digits``
    The 1,797 UCI handwritten digits shipped inside scikit-learn (offline),
    upscaled from 8x8 to 32x32 and split 1,437 / 360 (see :func:`digits_split`).
``cluttered-digits``
    A 'cluttered MNIST'-style task built from the digits: one digit and a few
    clutter patches on a 64x64 canvas, with the digit's box kept for plots
    (see :class:`ClutteredDigits`).
``imagefolder:PATH``, ``rec:PATH``
    ``PATH/{train,val}/<class>/*.jpg|png`` or ``PATH/{train,val}.rec`` (+ ``.idx``),
    with ImageNet preprocessing.

Reproducibility
---------------
Augmentation draws from a fresh ``np.random.RandomState`` per item, seeded
by a key; nothing uses Python's ``random`` or MXNet's generator. When an
epoch's iteration starts (at its first batch), :func:`get_data_loader`'s
sampler draws the whole epoch's shuffle order and one key per item from
NumPy's global generator *in the main process*. So a trainer that calls
``np.random.seed(f(seed, epoch))`` before each epoch (and ``mx.random.seed``
for the network's initialisation) gets the same batches whatever
``num_workers`` is, and reseeding between batches changes nothing; worker
processes never touch a global generator. Indexing a dataset directly,
``dataset[i]``, draws the key from NumPy's global generator in the calling
process.
"""
import difflib
import functools
import os
import struct

import cv2
import mxnet as mx
import numpy as np
from mxnet import gluon
from mxnet.gluon.data import vision

__all__ = ["DATASETS", "dataset_info", "get_dataset", "get_data_loader", "digits_split",
           "make_cluttered_digits", "ImageDataset", "ClutteredDigits", "Preprocess",
           "ShardSampler", "shard_indices", "pad_crop", "random_flip", "cutout",
           "random_resized_crop", "resize_short", "center_crop"]

DATASETS = ("cifar10", "cifar100", "digits", "cluttered-digits", "imagefolder:PATH",
            "rec:PATH")

# The values every CIFAR codebase of the resattn lineage uses (as in zoo._CIFAR).
_CIFAR10_STATS = ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))
_CIFAR100_STATS = ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))
_IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
_CLASSES = {"cifar10": 10, "cifar100": 100, "digits": 10, "cluttered-digits": 10}
_INPUT_SIZE = {"cifar10": 32, "cifar100": 32, "digits": 32, "cluttered-digits": 64,
               "imagefolder": 224, "rec": 224}
_LAST_BATCH = ("keep", "discard", "rollover")
_DIGITS_TEST_FRACTION = 0.2
_DIGITS_SPLIT_SEED = 0


# --------------------------------------------------------------------------- transforms
# All take and return (H, W, C) float32 arrays; ``rng`` is a np.random.RandomState.

def pad_crop(img, pad, rng):
    """Zero-pad by ``pad`` pixels on each side and crop a random window of the input's size.

    The CIFAR augmentation of He et al. 2016 (Sec. 4.2) that the paper follows
    (Sec. 4.1): 4 pixels for 32x32 images.
    """
    if pad == 0:
        return img
    h, w = img.shape[:2]
    y, x = rng.randint(0, 2 * pad + 1, size=2)
    padded = np.pad(img, ((pad, pad), (pad, pad), (0, 0)))
    return padded[y:y + h, x:x + w]


def random_flip(img, rng):
    """Mirror left-right with probability 1/2."""
    return img[:, ::-1] if rng.rand() < 0.5 else img


def cutout(img, size, rng):
    """Zero a ``size`` x ``size`` square centred on a uniformly drawn pixel.

    DeVries & Taylor 2017, "Improved Regularization of Convolutional Neural
    Networks with Cutout": applied after normalisation, and the square is
    clipped where it crosses the border (which the paper found to matter).
    """
    if size == 0:
        return img
    h, w = img.shape[:2]
    y0, x0 = rng.randint(h) - size // 2, rng.randint(w) - size // 2
    img = img.copy()
    img[max(y0, 0):max(y0 + size, 0), max(x0, 0):max(x0 + size, 0)] = 0
    return img


def random_resized_crop(img, size, rng, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """Crop a random area fraction ``scale`` and aspect ``ratio``, resized to ``size``.

    The scale and aspect-ratio augmentation of Szegedy et al. 2015 that the
    paper uses on ImageNet (Sec. 4.2). After 10 failed draws, a centre crop.
    """
    h, w = img.shape[:2]
    for _ in range(10):
        area = h * w * rng.uniform(*scale)
        aspect = np.exp(rng.uniform(np.log(ratio[0]), np.log(ratio[1])))
        cw, ch = int(round(np.sqrt(area * aspect))), int(round(np.sqrt(area / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            y, x = rng.randint(h - ch + 1), rng.randint(w - cw + 1)
            return _resize(img[y:y + ch, x:x + cw], size, size)
    return center_crop(resize_short(img, size), size)


def resize_short(img, short):
    """Resize bilinearly so that the shorter side is ``short`` pixels."""
    h, w = img.shape[:2]
    if h <= w:
        return _resize(img, short, max(int(round(w * short / h)), short))
    return _resize(img, max(int(round(h * short / w)), short), short)


def center_crop(img, size):
    """The central ``size`` x ``size`` window (the image must be at least that large)."""
    h, w = img.shape[:2]
    y, x = (h - size) // 2, (w - size) // 2
    return img[y:y + size, x:x + size]


def _resize(img, h, w):
    if img.shape[:2] == (h, w):
        return img
    out = cv2.resize(np.ascontiguousarray(img), (w, h), interpolation=cv2.INTER_LINEAR)
    return out.reshape(h, w, -1)


class Preprocess:
    """Turn an (H, W, C) image into a normalised (3, size, size) float32 array.

    Parameters
    ----------
    size : int
        Output side.
    mean, std : tuple of 3 floats
        Per-channel statistics of images scaled to [0, 1].
    style : {'small', 'imagenet', 'fixed'}
        'small' (CIFAR, digits): resize to ``size`` x ``size``; augmentation is
        :func:`pad_crop` with ``size // 8`` pixels. 'imagenet': evaluation
        resizes the shorter side to ``size * 256 / 224`` (~1.14x) and takes the
        centre crop; augmentation is :func:`random_resized_crop`. 'fixed'
        (cluttered digits): no geometric transform at all.
    augment : bool
        Apply the style's crop, ``flip`` and ``cutout``; without it they are all off.
    flip : bool
        Mirror half of the training images (off for digits: a mirrored digit is
        another shape).
    cutout : int
        Side of the :func:`cutout` square, 0 for none.
    """

    def __init__(self, size, mean, std, style="small", augment=False, flip=True, cutout=0):
        if style not in ("small", "imagenet", "fixed"):
            raise ValueError("style must be 'small', 'imagenet' or 'fixed', got %r" % (style,))
        self.size, self.style = size, style
        self.mean = np.asarray(mean, np.float32)
        self.std = np.asarray(std, np.float32)
        self.augment, self.flip, self.cutout = bool(augment), bool(flip), int(cutout)

    def __call__(self, img, rng=None):
        img = _as_float_rgb(img)
        if self.style == "imagenet":
            if self.augment:
                img = random_resized_crop(img, self.size, rng)
            else:
                img = center_crop(resize_short(img, int(round(self.size * 256 / 224))),
                                  self.size)
        elif self.style == "small":
            img = _resize(img, self.size, self.size)
            if self.augment:
                img = pad_crop(img, self.size // 8, rng)
        elif img.shape[:2] != (self.size, self.size):
            raise ValueError("style 'fixed' expects %dx%d images, got %dx%d"
                             % (self.size, self.size, img.shape[0], img.shape[1]))
        if self.augment and self.flip:
            img = random_flip(img, rng)
        img = (img - self.mean) / self.std
        if self.augment:
            img = cutout(img, self.cutout, rng)
        return np.ascontiguousarray(img.transpose(2, 0, 1), dtype=np.float32)


def _as_float_rgb(img):
    if isinstance(img, mx.nd.NDArray):
        img = img.asnumpy()
    img = np.asarray(img)
    img = img.astype(np.float32) / 255 if img.dtype == np.uint8 else img.astype(np.float32)
    if img.ndim == 2:
        img = img[:, :, None]
    if img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    return img


# --------------------------------------------------------------------------- datasets

class ImageDataset(gluon.data.Dataset):
    """Items ``(x, y)`` of a source dataset passed through :class:`Preprocess`.

    ``x`` is a float32 ``mx.nd.NDArray`` of shape (3, H, W), ``y`` a
    ``np.int32``. An index may be an int or ``(int, key)``: the key seeds the
    item's augmentation (see the module docstring); with a plain int the key
    comes from NumPy's global generator.

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
    def __init__(self, images, labels):
        self.images, self.labels = images, labels

    def __len__(self):
        return len(self.images)

    def __getitem__(self, idx):
        return self.images[idx], self.labels[idx]


@functools.lru_cache(maxsize=None)
def _load_digits():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    digits = load_digits()
    index = np.arange(len(digits.target))
    train, test = train_test_split(index, test_size=_DIGITS_TEST_FRACTION,
                                   stratify=digits.target, random_state=_DIGITS_SPLIT_SEED)
    images = (digits.images / 16).astype(np.float32)
    labels = digits.target.astype(np.int32)
    return {split: (images[np.sort(idx)], labels[np.sort(idx)], np.sort(idx))
            for split, idx in (("train", train), ("test", test))}


def digits_split(train=True):
    """The fixed split of scikit-learn's ``load_digits()``: 1,437 train / 360 test.

    ``sklearn.model_selection.train_test_split(test_size=0.2, stratify=labels,
    random_state=0)``, each part kept in the original order.

    Returns
    -------
    images : (N, 8, 8) float32 in [0, 1]
    labels : (N,) int32
    indices : (N,) int, positions in ``load_digits()``
    """
    images, labels, indices = _load_digits()["train" if train else "test"]
    return images.copy(), labels.copy(), indices.copy()


@functools.lru_cache(maxsize=None)
def _digits_upscaled(train, size):
    images, labels, _ = digits_split(train)
    return np.stack([_resize(im, size, size)[:, :, 0] for im in images]), labels


@functools.lru_cache(maxsize=None)
def _digits_stats():
    images = _digits_upscaled(True, _INPUT_SIZE["digits"])[0]
    return (float(images.mean()),) * 3, (float(images.std()),) * 3


def _split_seed(seed, train):
    # SeedSequence and RandomState streams are frozen across NumPy versions.
    state = np.random.SeedSequence([seed, 0 if train else 1]).generate_state(1)
    return int(state[0])


def make_cluttered_digits(images, seed, canvas=64, digit_size=(20, 28), clutter=(4, 8),
                          patch=8):
    """Place each digit on a canvas among clutter patches cut from the other digits.

    In the spirit of cluttered MNIST (Mnih et al. 2014): one digit, rescaled
    bilinearly to a random side in ``digit_size`` (inclusive), pasted at a random
    position; then a random number (in ``clutter``, inclusive) of ``patch`` x
    ``patch`` crops, each cut at a random place from another digit of
    ``images`` rescaled the same way, so no whole digit of another class
    appears. Patches are combined with ``max`` and may overlap the digit.
    Positions and sizes of the digits are drawn before any clutter, so the boxes
    do not depend on ``clutter``.

    Parameters
    ----------
    images : (N, h, w) float32 in [0, 1]
    seed : int or sequence of int
        Seeds ``np.random.RandomState``.

    Returns
    -------
    canvases : (N, canvas, canvas) float32 in [0, 1]
    boxes : (N, 4) int64, (x0, y0, x1, y1) of each digit's square, x1 and y1 exclusive.
    """
    rng = np.random.RandomState(seed)
    n = len(images)
    lo, hi = digit_size
    sizes = rng.randint(lo, hi + 1, n)
    x0 = (rng.random_sample(n) * (canvas - sizes + 1)).astype(np.int64)
    y0 = (rng.random_sample(n) * (canvas - sizes + 1)).astype(np.int64)
    counts = rng.randint(clutter[0], clutter[1] + 1, n)
    owners = np.repeat(np.arange(n), counts)
    total = len(owners)
    donors = (owners + rng.randint(1, max(n, 2), total)) % n
    donor_sizes = rng.randint(lo, hi + 1, total)
    cy = (rng.random_sample(total) * (donor_sizes - patch + 1)).astype(np.int64)
    cx = (rng.random_sample(total) * (donor_sizes - patch + 1)).astype(np.int64)
    py = (rng.random_sample(total) * (canvas - patch + 1)).astype(np.int64)
    px = (rng.random_sample(total) * (canvas - patch + 1)).astype(np.int64)

    out = np.zeros((n, canvas, canvas), np.float32)
    for i in range(n):
        s = sizes[i]
        out[i, y0[i]:y0[i] + s, x0[i]:x0[i] + s] = _resize(images[i], s, s)[:, :, 0]
    for k in range(total):
        s = donor_sizes[k]
        piece = _resize(images[donors[k]], s, s)[cy[k]:cy[k] + patch, cx[k]:cx[k] + patch, 0]
        region = out[owners[k], py[k]:py[k] + patch, px[k]:px[k] + patch]
        np.maximum(region, piece, out=region)
    boxes = np.stack([x0, y0, x0 + sizes, y0 + sizes], axis=1)
    return out, boxes


@functools.lru_cache(maxsize=None)
def _cluttered_stats():
    canvases, _ = make_cluttered_digits(digits_split(True)[0], _split_seed(0, True))
    return (float(canvases.mean()),) * 3, (float(canvases.std()),) * 3


class ClutteredDigits(ImageDataset):
    """'cluttered-digits': each split of :func:`digits_split` on cluttered canvases.

    Item ``i`` shows digit ``i`` of the split (same label), generated by
    :func:`make_cluttered_digits` with a seed derived from ``(seed, split)``,
    so train and test differ and each uses only its own digits. There is no
    geometric augmentation, so :attr:`boxes` stays exact; ``augment`` only
    turns on ``cutout``. Mean and std are those of the default training set
    (seed 0), whatever ``seed`` is.

    Parameters
    ----------
    train : bool
    seed : int
    canvas : int
        Side of the image; digit sizes and patches scale with ``canvas / 64``.
    digit_size, clutter, patch
        As in :func:`make_cluttered_digits`, for a 64-pixel canvas.
    augment : bool or None
        None means ``train``.
    cutout : int
    subset : int or None

    Attributes
    ----------
    boxes : (N, 4) int64 array
        (x0, y0, x1, y1) of each digit, x1 and y1 exclusive.
    """

    def __init__(self, train=True, seed=0, canvas=64, digit_size=(20, 28), clutter=(4, 8),
                 patch=8, augment=None, cutout=0, subset=None):
        images, labels, _ = digits_split(train)
        scale = canvas / 64
        canvases, boxes = make_cluttered_digits(
            images, _split_seed(seed, train), canvas,
            tuple(max(int(round(s * scale)), 1) for s in digit_size), clutter,
            max(int(round(patch * scale)), 1))
        mean, std = _cluttered_stats()
        preprocess = Preprocess(canvas, mean, std, "fixed", train if augment is None else augment,
                                flip=False, cutout=cutout)
        super().__init__(_Arrays(canvases, labels), preprocess, subset, 10, "cluttered-digits")
        self.boxes = boxes[:len(self)]

    def raw_image(self, i):
        """Image ``i`` before normalisation: (H, W, 3) float32 in [0, 1], for plots."""
        return np.repeat(self._source.images[i][:, :, None], 3, axis=2)


# --------------------------------------------------------------------------- names

def _parse(name):
    if not isinstance(name, str):
        raise ValueError("dataset name must be a string, one of %s; got %r"
                         % (", ".join(DATASETS), name))
    kind, sep, path = name.partition(":")
    if sep and kind in ("imagefolder", "rec"):
        if not path:
            raise ValueError("dataset %r needs a path: %s:PATH" % (name, kind))
        return kind, os.path.expanduser(path)
    if name in _CLASSES:
        return name, None
    close = difflib.get_close_matches(name, DATASETS)
    close += [c for c in difflib.get_close_matches(kind, ("imagefolder:PATH", "rec:PATH"),
                                                   cutoff=0.5) if c not in close]
    hint = "; did you mean %s?" % " or ".join(map(repr, close)) if close else ""
    raise ValueError("unknown dataset %r; valid: %s%s" % (name, ", ".join(DATASETS), hint))


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


def dataset_info(name):
    """Classes, input size, normalisation and whether the data needs no download.

    Parameters
    ----------
    name : str
        One of :data:`DATASETS`.

    Returns
    -------
    dict
        ``classes`` (int), ``input_size`` (int, square side), ``mean`` and
        ``std`` (tuples of 3 floats, for images in [0, 1]) and ``offline`` (bool).
        For 'imagefolder:PATH' the classes are the folders of PATH/train; for
        'rec:PATH' 1 + the largest label in PATH/train.rec (headers only).
        Digits statistics are measured on the train split at 32x32, cluttered
        digits' on the seed-0 train set, once per process.
    """
    kind, path = _parse(name)
    info = dict(input_size=_INPUT_SIZE[kind], offline=kind not in ("cifar10", "cifar100"))
    if kind == "imagefolder":
        info.update(classes=len(_synsets(_folder(path, "train"))), stats=_IMAGENET_STATS)
    elif kind == "rec":
        info.update(classes=_record_classes(*_record(path, "train")), stats=_IMAGENET_STATS)
    else:
        stats = {"cifar10": _CIFAR10_STATS, "cifar100": _CIFAR100_STATS}.get(kind)
        if kind == "digits":
            stats = _digits_stats()
        elif kind == "cluttered-digits":
            stats = _cluttered_stats()
        info.update(classes=_CLASSES[kind], stats=stats)
    mean, std = info.pop("stats")
    info.update(mean=tuple(mean), std=tuple(std))
    return info


def _check_int(name, value, low, allow_none=False):
    if value is None and allow_none:
        return
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) \
            or value < low:
        raise ValueError("%s must be an integer >= %d%s, got %r"
                         % (name, low, " or None" if allow_none else "", value))


def get_dataset(name, train=True, root=None, augment=None, cutout=0, seed=0, image_size=None,
                subset=None):
    """A dataset of ``(x, y)``: normalised (3, H, W) float32 NDArray and int32 label.

    Parameters
    ----------
    name : str
        One of :data:`DATASETS`.
    train : bool
        Training split ('train'), else the test or validation split ('val').
    root : str or None
        Where CIFAR is stored or downloaded (Gluon's default if None). The other
        datasets take no root ('imagefolder:PATH' and 'rec:PATH' carry theirs).
    augment : bool or None
        None means ``train``. Crop and flip as in :class:`Preprocess`: pad-crop
        and flip for CIFAR, pad-crop only for digits, random-resized-crop and
        flip for image folders and records, none for cluttered digits.
    cutout : int
        Side of the :func:`cutout` square, part of augmentation: it has no
        effect when ``augment`` is False, so one set of keyword arguments can
        build both the training and the evaluation set.
    seed : int
        Seeds the generation of 'cluttered-digits'; the other datasets are
        fixed and their augmentation is seeded as the module docstring says.
    image_size : int or None
        Side of ``x``; None for the dataset's ``input_size``.
    subset : int or None
        Keep only the first ``subset`` items.
    """
    kind, path = _parse(name)
    _check_int("cutout", cutout, 0)
    _check_int("seed", seed, 0)
    _check_int("image_size", image_size, 1, allow_none=True)
    _check_int("subset", subset, 1, allow_none=True)
    if root is not None and kind not in ("cifar10", "cifar100"):
        raise ValueError("root=%r is only used by cifar10 and cifar100; dataset %r takes "
                         "none" % (root, name))
    augment = train if augment is None else bool(augment)
    size = image_size or _INPUT_SIZE[kind]
    if kind == "cluttered-digits":
        return ClutteredDigits(train, seed, size, augment=augment, cutout=cutout, subset=subset)

    if kind in ("cifar10", "cifar100"):
        cls = vision.CIFAR10 if kind == "cifar10" else vision.CIFAR100
        kwargs = {} if root is None else {"root": root}
        source, classes, style = cls(train=train, **kwargs), _CLASSES[kind], "small"
        mean, std = _CIFAR10_STATS if kind == "cifar10" else _CIFAR100_STATS
    elif kind == "digits":
        source = _Arrays(*_digits_upscaled(bool(train), size))
        (mean, std), classes, style = _digits_stats(), 10, "small"
    elif kind == "imagefolder":
        source = vision.ImageFolderDataset(_folder(path, "train" if train else "val"), flag=1)
        if not train and os.path.isdir(os.path.join(path, "train")):
            expected = _synsets(os.path.join(path, "train"))
            if source.synsets != expected:
                raise ValueError("imagefolder: classes of %r, %s, differ from those of train, %s;"
                                 " labels would not match" % (os.path.join(path, "val"),
                                                               source.synsets, expected))
        (mean, std), classes, style = _IMAGENET_STATS, len(source.synsets), "imagenet"
    else:
        rec, idx = _record(path, "train" if train else "val")
        source, style = vision.ImageRecordDataset(rec, flag=1), "imagenet"
        labelled = _record(path, "train") if os.path.isfile(os.path.join(path, "train.idx")) \
            else (rec, idx)
        (mean, std), classes = _IMAGENET_STATS, _record_classes(*labelled)
    preprocess = Preprocess(size, mean, std, style, augment, flip=kind != "digits",
                            cutout=cutout)
    dataset = ImageDataset(source, preprocess, subset, classes, name)
    if kind == "imagefolder":
        dataset.synsets = list(source.synsets)
    return dataset


# --------------------------------------------------------------------------- loaders

def shard_indices(length, num_parts=1, part_index=0):
    """Indices of shard ``part_index`` of ``num_parts``: ``range(part_index, length, num_parts)``.

    Strided, not contiguous: folder and record datasets are sorted by class,
    and a strided shard keeps every worker's class mix that of the whole set.
    Shards are disjoint, cover the dataset and differ in length by at most one.
    """
    _check_int("num_parts", num_parts, 1)
    if not isinstance(part_index, (int, np.integer)) or isinstance(part_index, bool) \
            or not 0 <= part_index < num_parts:
        raise ValueError("part_index must be an integer in [0, num_parts=%d), got %r"
                         % (num_parts, part_index))
    return np.arange(part_index, length, num_parts)


class ShardSampler(gluon.data.Sampler):
    """Samples one shard, optionally shuffled, optionally with augmentation keys.

    Parameters
    ----------
    length : int
        Items in the dataset.
    num_parts, part_index : int
        See :func:`shard_indices`.
    shuffle : bool
        A new order every epoch from ``np.random.permutation``.
    keyed : bool
        Yield ``(index, key)`` with a key from ``np.random.randint`` per item
        (see the module docstring), else plain indices.
    equal : bool
        Yield ``length // num_parts`` items from every shard, so that all
        workers of a synchronous job run the same number of steps; with
        ``shuffle`` the item left out changes every epoch.
    """

    def __init__(self, length, num_parts=1, part_index=0, shuffle=False, keyed=False,
                 equal=False):
        self.indices = shard_indices(length, num_parts, part_index)
        self.count = length // num_parts if equal else len(self.indices)
        self.shuffle, self.keyed = shuffle, keyed

    def __len__(self):
        return self.count

    def __iter__(self):
        order = np.random.permutation(self.indices) if self.shuffle else self.indices
        order = order[:self.count].tolist()
        if not self.keyed:
            return iter(order)
        return iter(zip(order, np.random.randint(2 ** 31, size=len(order)).tolist()))


def get_data_loader(name, train, batch_size, num_workers=0, num_parts=1, part_index=0,
                    shuffle=None, last_batch=None, **dataset_kwargs):
    """A ``gluon.data.DataLoader`` over one shard of :func:`get_dataset`.

    Parameters
    ----------
    name, train, **dataset_kwargs
        Passed to :func:`get_dataset`.
    batch_size : int
    num_workers : int
        Worker processes; batches do not depend on it.
    num_parts, part_index : int
        This worker's strided shard (:func:`shard_indices`). With ``num_parts >
        1`` and ``last_batch`` other than 'keep', every shard yields
        ``len(dataset) // num_parts`` items so workers stay in step.
    shuffle : bool or None
        None means ``train``.
    last_batch : {'keep', 'discard', 'rollover'} or None
        None means 'discard' for training and 'keep' for evaluation.
    """
    _check_int("batch_size", batch_size, 1)
    _check_int("num_workers", num_workers, 0)
    shard_indices(0, num_parts, part_index)
    if last_batch is None:
        last_batch = "discard" if train else "keep"
    if last_batch not in _LAST_BATCH:
        raise ValueError("last_batch must be one of %s, got %r" % (_LAST_BATCH, last_batch))
    dataset = get_dataset(name, train=train, **dataset_kwargs)
    sampler = ShardSampler(len(dataset), num_parts, part_index,
                           shuffle=train if shuffle is None else bool(shuffle),
                           keyed=dataset.augment, equal=num_parts > 1 and last_batch != "keep")
    if last_batch == "discard" and len(sampler) < batch_size:
        raise ValueError("batch_size=%d exceeds the %d items of this shard of %r, so "
                         "last_batch='discard' would give no batch; use a smaller batch_size "
                         "or last_batch='keep'" % (batch_size, len(sampler), name))
    batches = gluon.data.BatchSampler(sampler, batch_size, last_batch)
    return gluon.data.DataLoader(dataset, batch_sampler=batches, num_workers=num_workers)
