"""scikit-learn's 1,797 UCI handwritten digits (offline): the fixed split and its statistics."""
import functools

import numpy as np

from .registry import dataset_spec
from .transforms import _resize

__all__ = ["digits_split"]

_DIGITS_TEST_FRACTION = 0.2
_DIGITS_SPLIT_SEED = 0


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
    """Images of a split resized bilinearly to ``size`` x ``size``, and their labels."""
    images, labels, _ = digits_split(train)
    return np.stack([_resize(im, size, size)[:, :, 0] for im in images]), labels


@functools.lru_cache(maxsize=None)
def _digits_stats():
    """Mean and std of the train split at the registered input size of 'digits' (32)."""
    images = _digits_upscaled(True, dataset_spec("digits").input_size)[0]
    return (float(images.mean()),) * 3, (float(images.std()),) * 3
