"""Loaders: one strided shard of a dataset per worker, batches that do not depend on workers.

See :mod:`resattn.data` (Reproducibility) for how shuffling and augmentation are seeded.
"""
import numpy as np
from mxnet import gluon

from .._checks import check_int
from .datasets import get_dataset

__all__ = ["get_data_loader", "ShardSampler", "shard_indices"]

_LAST_BATCH = ("keep", "discard", "rollover")


def shard_indices(length, num_parts=1, part_index=0):
    """Indices of shard ``part_index`` of ``num_parts``: ``range(part_index, length, num_parts)``.

    Strided, not contiguous: folder and record datasets are sorted by class,
    and a strided shard keeps every worker's class mix that of the whole set.
    Shards are disjoint, cover the dataset and differ in length by at most one.
    """
    check_int("num_parts", num_parts, 1)
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
        (see :mod:`resattn.data`, Reproducibility), else plain indices.
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
    """A ``gluon.data.DataLoader`` over one shard of :func:`~resattn.data.datasets.get_dataset`.

    Parameters
    ----------
    name, train, **dataset_kwargs
        Passed to :func:`~resattn.data.datasets.get_dataset`; ``name`` may be
        any registered dataset.
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
    check_int("batch_size", batch_size, 1)
    check_int("num_workers", num_workers, 0)
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
