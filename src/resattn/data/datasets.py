"""Datasets by name: :class:`ImageDataset`, :func:`get_dataset` and the built-in builders.

:func:`get_dataset` looks the name up in :mod:`resattn.data.registry`; the
builders here are those of 'cifar10', 'cifar100', 'digits',
'imagefolder:PATH' and 'rec:PATH'.
"""
import functools
import os
import stat
import struct
import tarfile
import warnings
import zlib

import mxnet as mx
import numpy as np
from mxnet import gluon
from mxnet.gluon.data import vision

from .._checks import check_int, first_line
from .._stats import IMAGENET
from . import images
from .digits import _digits_upscaled
from .images import _Unusable
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
        self._noise = {}  # index -> offset added to its label (modulo classes)

    def add_label_noise(self, fraction, seed=0):
        """Replace the labels of ``fraction`` of the items by wrong ones, at random (seeded).

        ``round(fraction * len(self))`` items, drawn without replacement, each get a label
        drawn uniformly from the ``classes - 1`` wrong ones; the same ``(fraction, seed)``
        always picks the same items and labels, and ``fraction=0`` changes nothing. The
        paper's robustness experiment (Sec. 4.1, Table 6) trains on such labels.

        Returns
        -------
        numpy.ndarray
            The indices whose label was replaced, sorted.
        """
        _check_noise(fraction)
        if not self.classes or self.classes < 2:
            raise ValueError("label noise needs the number of classes (>= 2), got %r"
                             % (self.classes,))
        state = np.random.SeedSequence([int(seed), 0x1ab31]).generate_state(1)
        rng = np.random.RandomState(state)
        chosen = np.sort(rng.permutation(self._length)[:int(round(fraction * self._length))])
        offsets = rng.randint(1, self.classes, size=len(chosen))
        self._noise = dict(zip(chosen.tolist(), offsets.tolist()))
        return chosen

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
        if self._noise:
            label = (int(label) + self._noise.get(idx % self._length, 0)) % self.classes
        rng = None
        if self.augment:
            rng = np.random.RandomState(np.random.randint(2 ** 31) if key is None else key)
        return mx.nd.array(self.preprocess(img, rng), dtype=np.float32), np.int32(label)


def _check_noise(fraction):
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) \
            or not 0 <= fraction < 1:
        raise ValueError("label noise must be a fraction in [0, 1), got %r" % (fraction,))


class _Arrays:
    """A source of ``(images[i], labels[i])``."""

    def __init__(self, images, labels):
        self.images, self.labels = images, labels

    def __len__(self):
        return len(self.images)

    def __getitem__(self, idx):
        return self.images[idx], self.labels[idx]


def get_dataset(name, train=True, root=None, augment=None, cutout=0, seed=0, image_size=None,
                subset=None, normalize=None, label_noise=0.0):
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
        Seeds the generation of 'cluttered-digits' (its data seed, which a
        training run may keep apart from its training seed: ``resattn train
        --data-seed``) and the choice of noisy labels; the other datasets are
        fixed and their augmentation is seeded as :mod:`resattn.data` says.
    image_size : int or None
        Side of ``x``; None for the dataset's ``input_size``.
    subset : int or None
        Keep only the first ``subset`` items.
    normalize : (mean, std) or None
        Per-channel statistics of images in [0, 1] to normalise with instead of
        the dataset's own: those a model's weights were trained with (their
        config's preprocessing), ``((0, 0, 0), (1, 1, 1))`` for none.
    label_noise : float
        Fraction of the *training* labels replaced by wrong ones at random
        (:meth:`ImageDataset.add_label_noise`, seeded by ``seed``); the test
        split is never changed. 0: none.
    """
    spec, path = _parse(name)
    _check_noise(label_noise)
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
    if label_noise and train:  # test labels are never changed
        dataset.add_label_noise(label_noise, seed)
    return dataset



# --------------------------------------------------------------------------- built-in builders
# Called by get_dataset as the registry says: builder(train, **options).

#: ``{name: (title, archive, its SHA-1)}``, as Gluon's CIFAR classes download them.
_CIFAR = {"cifar10": ("CIFAR-10", "cifar-10-binary.tar.gz",
                      "fab780a1e191a7eda0f345501ccd62d20f7ed891"),
          "cifar100": ("CIFAR-100", "cifar-100-binary.tar.gz",
                       "a0bb982c76b83111308126cc779a992fa506b90b")}

#: What Gluon's download and unpacking of CIFAR raise when it cannot get or read the files
#: (requests' errors are OSErrors; a bad checksum is a UserWarning, an HTTP error a
#: RuntimeError).
_FETCH_ERRORS = (OSError, RuntimeError, UserWarning, EOFError, tarfile.TarError, zlib.error)


def _cifar(cls, name, train, root):
    """``cls(train, root)``, Gluon's CIFAR; what stops it is a one-line ValueError.

    Offline, Gluon's download retries five times and raises the last of its chained
    errors; here that is one ValueError saying where to put the archive by hand.
    """
    title, archive, sha1 = _CIFAR[name]
    where = os.path.expanduser(root) if root is not None \
        else os.path.join(mx.base.data_dir(), "datasets", name)
    if os.path.exists(where) and not os.path.isdir(where):
        raise ValueError("%s: root %r is a file, not a folder; pass the folder that holds (or "
                         "is to hold) %s" % (title, where, archive))
    try:
        return cls(train=train, **({} if root is None else {"root": root}))
    except _FETCH_ERRORS as err:
        reason = first_line(err, with_type=True)
        url = gluon.utils._get_repo_file_url("gluon/dataset/" + name, archive)
        offline = "use an offline dataset (digits, cluttered-digits, imagefolder:PATH)"
        path = os.path.join(where, archive)
        if not os.path.isfile(path):
            raise ValueError("%s is not in %s and cannot be downloaded (%s): put %s (from %s) "
                             "in %s, or %s" % (title, where, reason, archive, url,
                                               where, offline)) from err
        if not gluon.utils.check_sha1(path, sha1):
            raise ValueError("%s: %s is damaged (its SHA-1 is not %s) and cannot be downloaded "
                             "again (%s): replace it with a copy from %s, or %s"
                             % (title, path, sha1, reason, url, offline)) from err
        raise ValueError("%s: %s could not be unpacked or read in %s (%s); check that the "
                         "folder is writable and has room for it, or %s"
                         % (title, path, where, reason, offline)) from err


def build_cifar10(train, root=None, **_):
    """Gluon's CIFAR-10 split (downloaded on first use into ``root``).

    Without network and without ``root/cifar-10-binary.tar.gz``, a ValueError says where
    to put that archive by hand.
    """
    return _cifar(vision.CIFAR10, "cifar10", train, root)


def build_cifar100(train, root=None, **_):
    """Gluon's CIFAR-100 split (downloaded on first use into ``root``), as :func:`build_cifar10`."""
    return _cifar(vision.CIFAR100, "cifar100", train, root)


def build_digits(train, image_size, **_):
    """The :func:`~resattn.data.digits.digits_split` split upscaled to ``image_size``."""
    return _Arrays(*_digits_upscaled(bool(train), image_size))


def _imagenet_style(source, classes, image_size, augment, cutout, subset):
    preprocess = Preprocess(image_size, *IMAGENET, style="imagenet", augment=augment,
                            cutout=cutout)
    return ImageDataset(source, preprocess, subset, classes)


def build_imagefolder(train, path, image_size, augment, cutout, subset, **_):
    """``PATH/{train,val}/<class>/*.jpg|png``; the val classes must be those of train.

    The classes are the sub-folders of the split and the labels their sorted order
    (the rule of Gluon's ``ImageFolderDataset``). Listing skips what is not a usable
    image, with *one* warning per split naming the skipped files and why, so that one bad
    file among thousands does not stop a run:

    - entries that are not regular files, though named like images: a folder
      ``foo.png/``, a broken or self-referential symbolic link (``loop.png -> loop.png``),
      a pipe or a device (never opened);
    - files not named ``.jpg``, ``.jpeg`` or ``.png`` (any case) and files beside the
      class folders (hidden ones not named like images, such as ``.DS_Store``, without a
      word);
    - files that are empty, unreadable, not JPEG or PNG inside (a text file named
      ``x.png``), damaged in their header, or truncated: a PNG must end with its IEND
      chunk, a JPEG must have an end-of-image marker after its first scan;
    - images larger than :data:`resattn.data.images.MAX_IMAGE_PIXELS` by their header
      (decompression bombs): never decoded; ``RESATTN_MAX_IMAGE_PIXELS`` raises the limit.

    A JPEG or PNG named with another of these extensions is read as what it is, and data
    after a JPEG's end marker (as phones append) is allowed. Listing opens each file for
    its header and its last bytes, never its pixels: some 30 us a file when the files are
    in the page cache, about 40 s for ImageNet's 1.28 million. A split without a class
    folder or without a usable image is a ValueError, with the skipped files. An image
    that passes these checks and still does not decode when its item is read (damaged
    inside, or changed since listing) is a ValueError naming the file, not a skip: the
    batch it belongs to cannot be made without it.
    """
    root = _folder(path, "train" if train else "val")
    source = _ImageFiles(root)
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
    """``PATH/{train,val}.rec`` with their ``.idx``; classes counted on train.rec if present.

    Building checks the index against the record file, reading only each record's
    header: a malformed .idx line, an offset past the end of the .rec or where no record
    starts, and a record running past the end (a truncated .rec) are ValueErrors naming
    the file and the record. A record image that does not decode, or is larger than
    :data:`resattn.data.images.MAX_IMAGE_PIXELS`, is a ValueError naming it when it is read.
    """
    rec, idx = _record(path, "train" if train else "val")
    labelled = _record(path, "train") if os.path.isfile(os.path.join(path, "train.idx")) \
        else (rec, idx)
    classes = _record_classes(*labelled)
    return _imagenet_style(_Records(rec, idx), classes, image_size, augment, cutout, subset)


# --------------------------------------------------------------------------- image files

_IMAGE_EXTS = (".jpg", ".jpeg", ".png")
_SHOWN = 5  # skipped files named per reason in the warning


def _probe_file(path):
    """Check the JPEG or PNG at ``path`` from its header and end (:func:`.images._probe`),
    never opening what is not a regular file; raises ``images._Unusable``."""
    try:
        st = os.stat(path)
    except OSError as err:  # broken or looping link
        raise _Unusable("not a regular file", err.strerror or type(err).__name__) from None
    if not stat.S_ISREG(st.st_mode):
        raise _Unusable("not a regular file", "a folder" if stat.S_ISDIR(st.st_mode) else "")
    try:
        with open(path, "rb") as f:
            images._probe(f, st.st_size, images._pixel_limit(), formats=("jpeg", "png"))
    except OSError as err:
        raise _Unusable("unreadable", err.strerror or type(err).__name__) from None


def _decode(buf, what):
    """The (H, W, 3) uint8 RGB image encoded in ``buf``; ValueError naming ``what`` if not.

    The size is checked from the header first, so nothing larger than
    :data:`resattn.data.images.MAX_IMAGE_PIXELS` is decoded (as :func:`.images.read_image`).
    """
    try:
        return images._decode(buf, images._pixel_limit())
    except _Unusable as bad:
        raise ValueError(images._message(what, bad)) from None


class _ImageFiles:
    """A source of ``(image, label)`` over the listed images of one split folder.

    Attributes ``synsets`` (class names in label order), ``items`` (``(file, label)``)
    and ``skipped`` (``{reason: [file (detail)]}``), as :func:`build_imagefolder` says.
    """

    def __init__(self, root):
        self.root = root
        self.synsets = _synsets(root)
        if not self.synsets:
            raise ValueError("imagefolder: no class folders in %r; expected %s/<class>/"
                             "*.jpg|png" % (root, root))
        self.items, self.skipped = [], {}
        classes = set(self.synsets)
        tried = 0
        for name in _listdir(root):
            if name not in classes and not name.startswith("."):
                tried += 1
                self._skip(name, _Unusable("not in a class folder"))
        for label, cls in enumerate(self.synsets):
            for name in _listdir(os.path.join(root, cls)):
                rel = os.path.join(cls, name)
                if os.path.splitext(name)[1].lower() not in _IMAGE_EXTS:
                    if not name.startswith("."):
                        tried += 1
                        self._skip(rel, _Unusable("not named .jpg, .jpeg or .png"))
                    continue
                tried += 1
                try:
                    _probe_file(os.path.join(root, rel))
                except _Unusable as bad:
                    self._skip(rel, bad)
                    continue
                self.items.append((os.path.join(root, rel), label))
        summary = self._summary(tried)
        if not self.items:
            raise ValueError("imagefolder: no usable image in %r; expected %s/<class>/*.jpg|"
                             "png%s" % (root, root, "; " + summary if summary else ""))
        if summary:
            warnings.warn("imagefolder: " + summary, stacklevel=4)

    def _skip(self, rel, bad):
        self.skipped.setdefault(bad.reason, []).append(
            rel + (" (%s)" % bad.detail if bad.detail else ""))

    def _summary(self, tried):
        if not self.skipped:
            return ""
        count = sum(map(len, self.skipped.values()))
        parts = []
        for reason, files in self.skipped.items():
            more = " and %d more" % (len(files) - _SHOWN) if len(files) > _SHOWN else ""
            parts.append("%s: %s%s" % (reason, ", ".join(files[:_SHOWN]), more))
        return "skipped %d of %d files in %r, which are not usable images: %s" \
            % (count, tried, self.root, "; ".join(parts))

    def __len__(self):
        return len(self.items)

    def __getitem__(self, idx):
        path, label = self.items[idx]
        try:
            return images.read_image(path), label
        except images._FileError as err:
            raise ValueError("imagefolder: %s, listed when the dataset was built; restore it "
                             "or build the dataset again" % err) from None
        except ValueError as err:
            raise ValueError("imagefolder: %s" % err) from None


def _listdir(folder):
    try:
        return sorted(os.listdir(folder))
    except OSError as err:
        raise ValueError("imagefolder: cannot list %r (%s)"
                         % (folder, err.strerror or type(err).__name__)) from None


# --------------------------------------------------------------------------- records

_RECORD_MAGIC = 0xced7230a
_MAGIC_BYTES = struct.pack("<I", _RECORD_MAGIC)


def _stamp(path):
    st = os.stat(path)
    return path, st.st_size, st.st_mtime_ns


def _read_index(idx):
    """``[(key, offset)]`` of an .idx file (``KEY<tab>OFFSET`` lines); ValueError if malformed.

    Blank lines are skipped, and any whitespace separates the two numbers.
    """
    entries = []
    with open(idx, encoding="ascii", errors="replace") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            fields = line.split()
            try:
                key, offset = int(fields[0]), int(fields[1])
            except (IndexError, ValueError):
                key = offset = -1
            if key < 0 or offset < 0:
                raise ValueError("rec: line %d of %r is %r, not 'KEY<tab>OFFSET' with two "
                                 "integers >= 0; rebuild the index with the .rec"
                                 % (number, idx, line.strip()[:60]))
            entries.append((key, offset))
    return entries


def _record_part(f, size, pos, where, rec):
    """``(cflag, length)`` of the record part at byte ``pos``; ValueError unless whole."""
    if pos + 8 > size:
        raise ValueError("rec: %s starts at byte %d, past the end of %r (%d bytes); the .idx "
                         "does not match the .rec (or the .rec is truncated): rebuild both"
                         % (where, pos, rec, size))
    f.seek(pos)
    magic, lrec = struct.unpack("<II", f.read(8))
    if magic != _RECORD_MAGIC:
        raise ValueError("rec: %s: no record starts at byte %d of %r; it is not a RecordIO file "
                         "matching its .idx: rebuild the index" % (where, pos, rec))
    cflag, length = lrec >> 29, lrec & ((1 << 29) - 1)
    if pos + 8 + length > size:
        raise ValueError("rec: %s runs to byte %d, past the end of %r (%d bytes): the .rec is "
                         "truncated; copy or build it again" % (where, pos + 8 + length, rec,
                                                                size))
    return cflag, length


def _read_record(f, size, offset, where, rec):
    """The payload of the record at ``offset`` (its parts joined as dmlc's reader does)."""
    cflag, length = _record_part(f, size, offset, where, rec)
    if cflag not in (0, 1):
        raise ValueError("rec: %s at byte %d of %r is the middle of a record; the .idx does "
                         "not match the .rec: rebuild the index" % (where, offset, rec))
    f.seek(offset + 8)
    parts = [f.read(length)]
    pos = offset + 8 + (length + 3) // 4 * 4
    while cflag in (1, 2):
        cflag, length = _record_part(f, size, pos, where, rec)
        if cflag not in (2, 3):
            raise ValueError("rec: %s at byte %d of %r is cut short; the .rec is damaged: "
                             "build it again" % (where, offset, rec))
        f.seek(pos + 8)
        parts.append(f.read(length))
        pos += 8 + (length + 3) // 4 * 4
    return _MAGIC_BYTES.join(parts)


def _record_label(f, size, offset, where, rec):
    """The label of the record at ``offset``, reading only its header (unless it is split)."""
    cflag, length = _record_part(f, size, offset, where, rec)
    if cflag == 0:
        head = f.read(min(length, 28))
    else:
        head = _read_record(f, size, offset, where, rec)[:28]
    flag = struct.unpack("<I", head[:4])[0] if len(head) >= 4 else 0
    if flag > 1:
        raise ValueError("rec: %r holds records with %d labels; one is supported"
                         % (rec, flag))
    if len(head) < 24 + 4 * flag:
        raise ValueError("rec: %s in %r holds %d bytes, too few for an image record; build "
                         "the .rec again" % (where, rec, len(head)))
    label = struct.unpack("<f", head[24:28] if flag else head[4:8])[0]
    if not np.isfinite(label) or label < 0:
        raise ValueError("rec: %s in %r has label %r; labels must be integers >= 0"
                         % (where, rec, label))
    return label


@functools.lru_cache(maxsize=None)
def _scan_records(rec_stamp, idx_stamp):
    """``(offsets, classes)`` of a checked .rec/.idx pair (cached per size and mtime)."""
    (rec, size, _), (idx, _, _) = rec_stamp, idx_stamp
    entries = _read_index(idx)
    if not entries:
        raise ValueError("rec: %r lists no records; rebuild it with its .rec" % idx)
    top = -1
    with open(rec, "rb") as f:
        for n, (key, offset) in enumerate(entries):
            where = "record %d (key %d) of %r" % (n, key, idx)
            top = max(top, int(_record_label(f, size, offset, where, rec)))
    return tuple(offset for _, offset in entries), top + 1


class _Records:
    """A source of ``(image, label)`` over the records of a checked ``.rec``/``.idx`` pair.

    Reads with plain file reads, the file opened anew in each process (DataLoader workers).
    """

    def __init__(self, rec, idx):
        self.rec, self.idx = rec, idx
        self.offsets, _ = _scan_records(_stamp(rec), _stamp(idx))
        self._file = self._pid = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_file"] = state["_pid"] = None
        return state

    def __len__(self):
        return len(self.offsets)

    def __getitem__(self, idx):
        where = "record %d of %r" % (idx, self.rec)
        if self._pid != os.getpid():
            self._file, self._pid = open(self.rec, "rb"), os.getpid()
        size = os.fstat(self._file.fileno()).st_size
        payload = _read_record(self._file, size, self.offsets[idx], where, self.rec)
        if len(payload) < 24:
            raise ValueError("rec: %s holds %d bytes, too few for an image record; the .rec "
                             "changed since the dataset was built" % (where, len(payload)))
        header, img = mx.recordio.unpack(payload)
        return _decode(img, "rec: " + where), header.label


# --------------------------------------------------------------------------- folders, records

def _folder(path, split):
    root = os.path.join(path, split)
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError("imagefolder: %r is a file, not a folder; expected %s/{train,val}/"
                         "<class>/*.jpg|png" % (path, path))
    if not os.path.isdir(root):
        raise ValueError("imagefolder: folder %r does not exist; expected %s/{train,val}/"
                         "<class>/*.jpg|png" % (root, path))
    return root


def _synsets(root):
    # The same rule as gluon's ImageFolderDataset, so labels agree with it.
    return [d for d in _listdir(root) if os.path.isdir(os.path.join(root, d))]


def _record(path, split):
    rec, idx = os.path.join(path, split + ".rec"), os.path.join(path, split + ".idx")
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError("rec: %r is a file, not a folder; expected %s/{train,val}.rec with "
                         "its .idx" % (path, path))
    for f in (rec, idx):
        if not os.path.isfile(f):
            raise ValueError("rec: file %r does not exist; expected %s/{train,val}.rec with "
                             "its .idx" % (f, path))
    return rec, idx


def _record_classes(rec, idx):
    """1 + the largest label, reading only the header of each record (checked on the way)."""
    return _scan_records(_stamp(rec), _stamp(idx))[1]


def _imagefolder_classes(path):
    """The number of class folders in ``PATH/train``."""
    return len(_imagefolder_names(path))


def _imagefolder_names(path):
    """The class folders of ``PATH/train``, in label order (ValueError if there are none)."""
    root = _folder(path, "train")
    names = _synsets(root)
    if not names:
        raise ValueError("imagefolder: no class folders in %r; expected %s/<class>/*.jpg|png"
                         % (root, root))
    return names


def _rec_classes(path):
    """1 + the largest label of ``PATH/train.rec``."""
    return _record_classes(*_record(path, "train"))
