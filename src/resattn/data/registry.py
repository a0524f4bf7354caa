"""The dataset registry: one :class:`DatasetSpec` per name, bound when it registers.

A dataset registered with :func:`register_dataset` works by name with
:func:`dataset_info`, :func:`~resattn.data.datasets.get_dataset`,
:func:`~resattn.data.loader.get_data_loader` and ``resattn train --dataset``,
like the built-in ones registered at the end of this module. Importing it
loads neither MXNet nor OpenCV (the command-line parser reads
:data:`DATASETS`): built-in builders and measured statistics are
``'package.module:function'`` references, imported on first use.
"""
import collections.abc
import dataclasses
import difflib
import importlib
import os

from .._checks import check_int
from .._stats import CIFAR10, CIFAR10_CLASSES, CIFAR100, DIGIT_CLASSES, IMAGENET
from ._common import STYLES

__all__ = ["DATASETS", "DatasetSpec", "register_dataset", "list_datasets", "dataset_spec",
           "dataset_info"]


def _is_ref(value):
    return isinstance(value, str) and ":" in value


def _load(value):
    """The object a ``'package.module:attr'`` string names; any other value as it is."""
    if not isinstance(value, str):
        return value
    module, _, attr = value.partition(":")
    return getattr(importlib.import_module(module), attr)


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """What the registry holds for one dataset (see :func:`register_dataset`).

    Attributes
    ----------
    name : str
        The name, without ``:PATH``.
    builder : callable or str
        ``builder(train, **options)`` gives the split's source or dataset; a
        ``'package.module:function'`` string is imported on first use.
    classes : int, callable or str
        The number of classes, or a function (or reference to one) that
        returns it: ``classes(path)`` if the dataset takes a path, else
        ``classes()``.
    input_size : int
        Default side of the (square) images.
    stats : tuple, callable or str
        ``(mean, std)``, each 3 floats, per channel of images in [0, 1]; or a
        function returning them, called as ``classes`` is.
    offline : bool
        Whether the data needs no download.
    takes_path : bool
        Named ``NAME:PATH``; the builder gets ``path``.
    takes_root : bool
        The builder gets ``root`` (where a download is stored) from
        :func:`~resattn.data.datasets.get_dataset`.
    style : {'small', 'imagenet', 'fixed'}
        The :class:`~resattn.data.transforms.Preprocess` style of a source the
        builder returns.
    flip : bool
        Whether augmentation mirrors images of such a source.
    class_names : sequence of str, callable, str or None
        Names of the classes in label order, or a function (or reference) that
        returns them, called as ``classes`` is; None where they have none.
    """
    name: str
    builder: object
    classes: object
    input_size: int
    stats: object
    offline: bool = True
    takes_path: bool = False
    takes_root: bool = False
    style: str = "small"
    flip: bool = True
    class_names: object = None

    @property
    def pattern(self):
        """The name as :data:`DATASETS` lists it: ``NAME:PATH`` if it takes a path."""
        return self.name + ":PATH" if self.takes_path else self.name

    def _measure(self, value, path):
        value = _load(value)
        if callable(value):
            return value(path) if self.takes_path else value()
        return value

    def get_builder(self):
        """The builder, imported if it is a reference."""
        return _load(self.builder)

    def get_classes(self, path=None):
        """The number of classes (of the dataset at ``path``, if it takes one)."""
        return int(self._measure(self.classes, path))

    def get_stats(self, path=None):
        """``(mean, std)``, tuples of 3 floats (measured on first use where they are)."""
        mean, std = self._measure(self.stats, path)
        return tuple(map(float, mean)), tuple(map(float, std))

    def get_class_names(self, path=None):
        """The class names in label order, or None."""
        if self.class_names is None:
            return None
        return tuple(str(n) for n in self._measure(self.class_names, path))

    def info(self, path=None):
        """What :func:`dataset_info` returns for this dataset (at ``path``)."""
        mean, std = self.get_stats(path)
        return dict(classes=self.get_classes(path), input_size=self.input_size, mean=mean,
                    std=std, offline=self.offline, class_names=self.get_class_names(path))


_REGISTRY = {}


def _check_stats(stats, name="stats"):
    try:
        mean, std = (tuple(float(v) for v in part) for part in stats)
    except (TypeError, ValueError):
        mean = std = ()
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise ValueError("%s must be (mean, std), each 3 floats with std > 0%s; got %r"
                         % (name, ", or a function returning them" if name == "stats" else "",
                            stats))
    return mean, std


def register_dataset(name, *, classes, input_size, stats, offline=True, takes_path=False,
                     takes_root=False, style="small", flip=True, builder=None,
                     class_names=None):
    """Register a dataset under ``name``, so every function taking a dataset name knows it.

    Parameters
    ----------
    name : str
        Non-empty, without ':'. A name registered twice is an error.
    classes, input_size, stats, offline, takes_path, takes_root, style, flip, class_names
        The fields of :class:`DatasetSpec`.
    builder : callable, str or None
        Called as ``builder(train, **options)`` with the keyword arguments
        ``image_size`` (the side asked for, else ``input_size``), ``augment``
        (bool), ``cutout``, ``seed`` and ``subset`` of
        :func:`~resattn.data.datasets.get_dataset`, plus ``path`` (with ``~``
        expanded) if ``takes_path`` and ``root`` if ``takes_root``; so it
        should accept ``**options``. It returns either a *source*, an indexable
        of ``(image, label)`` with images (H, W), (H, W, 1) or (H, W, 3), uint8
        in [0, 255] or float in [0, 1], which ``get_dataset`` wraps in an
        :class:`~resattn.data.datasets.ImageDataset` normalised with ``stats``
        (preprocessed in ``style``, cut to ``subset``); or a finished
        ``ImageDataset``, returned as it is. A ``'package.module:function'``
        string is imported on first use. None: return a decorator that
        registers the function it decorates.

    Returns
    -------
    DatasetSpec, or the decorator when ``builder`` is None

    Examples
    --------
    >>> import numpy as np
    >>> from resattn.data import dataset_info, get_dataset
    >>> @register_dataset('squares_doc_example', classes=2, input_size=8,
    ...                   stats=((0.5,) * 3, (0.5,) * 3))
    ... def squares(train, **options):
    ...     images = np.zeros((4, 8, 8), np.float32)
    ...     images[2:, 2:6, 2:6] = 1
    ...     return list(zip(images, [0, 0, 1, 1]))
    >>> dataset_info('squares_doc_example')['classes']
    2
    >>> x, y = get_dataset('squares_doc_example', augment=False)[2]
    >>> x.shape, int(y)
    ((3, 8, 8), 1)
    >>> del _REGISTRY['squares_doc_example']
    """
    fields = dict(classes=classes, input_size=input_size, stats=stats, offline=offline,
                  takes_path=takes_path, takes_root=takes_root, style=style, flip=flip,
                  class_names=class_names)
    if builder is None:
        def wrap(fn):
            register_dataset(name, builder=fn, **fields)
            return fn
        return wrap
    if not isinstance(name, str) or not name or ":" in name:
        raise ValueError("dataset name must be a non-empty string without ':', got %r"
                         % (name,))
    if name in _REGISTRY:
        raise ValueError("dataset %r is already registered" % name)
    if not (callable(builder) or _is_ref(builder)):
        raise ValueError("builder of dataset %r must be callable or a 'module:function' "
                         "string, got %r" % (name, builder))
    check_int("input_size", input_size, 1)
    if not (callable(classes) or _is_ref(classes)):
        check_int("classes", classes, 1)
    if not (callable(stats) or _is_ref(stats)):
        fields["stats"] = _check_stats(stats)
    if style not in STYLES:
        raise ValueError("style must be one of %s, got %r" % (", ".join(STYLES), style))
    for flag in ("offline", "takes_path", "takes_root", "flip"):
        fields[flag] = bool(fields[flag])
    spec = DatasetSpec(name, builder, **fields)
    _REGISTRY[name] = spec
    return spec


def list_datasets():
    """The accepted names, in registration order: ``NAME:PATH`` for those taking a path."""
    return [spec.pattern for spec in _REGISTRY.values()]


class _Names(collections.abc.Sequence):
    """:func:`list_datasets` as a tuple-like sequence, read afresh at each use."""

    def __getitem__(self, index):
        return tuple(list_datasets())[index]

    def __len__(self):
        return len(_REGISTRY)

    def __eq__(self, other):
        if isinstance(other, (tuple, _Names)):
            return tuple(self) == tuple(other)
        return NotImplemented

    __hash__ = None

    def __repr__(self):
        return repr(tuple(self))


#: The names :func:`~resattn.data.datasets.get_dataset` accepts, a sequence equal to the
#: tuple of :func:`list_datasets` (and so including datasets registered later).
DATASETS = _Names()


def _parse(name):
    """``(spec, path)`` of a dataset name; ``path`` is None unless the dataset takes one."""
    if not isinstance(name, str):
        raise ValueError("dataset name must be a string, one of %s; got %r"
                         % (", ".join(DATASETS), name))
    kind, sep, path = name.partition(":")
    spec = _REGISTRY.get(kind)
    if spec is not None and spec.takes_path == bool(sep):
        if not sep:
            return spec, None
        if not path:
            raise ValueError("dataset %r needs a path: %s:PATH" % (name, kind))
        return spec, os.path.expanduser(path)
    with_path = [s.pattern for s in _REGISTRY.values() if s.takes_path]
    close = difflib.get_close_matches(name, DATASETS)
    close += [c for c in difflib.get_close_matches(kind, with_path, cutoff=0.5)
              if c not in close]
    hint = "; did you mean %s?" % " or ".join(map(repr, close)) if close else ""
    raise ValueError("unknown dataset %r; valid: %s%s" % (name, ", ".join(DATASETS), hint))


def dataset_spec(name):
    """The :class:`DatasetSpec` of a dataset name (``NAME:PATH`` for those taking a path).

    Raises ValueError, suggesting close names, for an unknown one.
    """
    return _parse(name)[0]


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
    spec, path = _parse(name)
    return spec.info(path)


# --------------------------------------------------------------------------- built-in datasets
_PKG = __package__

register_dataset("cifar10", classes=10, input_size=32, stats=CIFAR10, offline=False,
                 takes_root=True, builder=_PKG + ".datasets:build_cifar10",
                 class_names=CIFAR10_CLASSES)
register_dataset("cifar100", classes=100, input_size=32, stats=CIFAR100, offline=False,
                 takes_root=True, builder=_PKG + ".datasets:build_cifar100")
register_dataset("digits", classes=10, input_size=32, stats=_PKG + ".digits:_digits_stats",
                 flip=False, builder=_PKG + ".datasets:build_digits", class_names=DIGIT_CLASSES)
register_dataset("cluttered-digits", classes=10, input_size=64,
                 stats=_PKG + ".synthetic:_cluttered_stats", style="fixed", flip=False,
                 builder=_PKG + ".synthetic:build_cluttered_digits", class_names=DIGIT_CLASSES)
register_dataset("imagefolder", classes=_PKG + ".datasets:_imagefolder_classes",
                 input_size=224, stats=IMAGENET, takes_path=True, style="imagenet",
                 builder=_PKG + ".datasets:build_imagefolder",
                 class_names=_PKG + ".datasets:_imagefolder_names")
register_dataset("rec", classes=_PKG + ".datasets:_rec_classes", input_size=224,
                 stats=IMAGENET, takes_path=True, style="imagenet",
                 builder=_PKG + ".datasets:build_rec")
