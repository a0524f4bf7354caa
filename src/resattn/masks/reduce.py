"""Reductions of soft masks ``M`` (N, C, H, W) to one map (N, H, W) per image."""
import numbers

import mxnet as mx
import numpy as np

from .masknet import Mask

__all__ = ["REDUCTIONS", "reduce_mask", "reduce_masks"]

#: Reductions of ``(N, C, H, W)`` masks to ``(N, H, W)`` maps (see :func:`reduce_mask`).
REDUCTIONS = ("mean", "max", ("channel", "k"), ("channels", "indices"))


def _mask_array(mask):
    arr = mask.array if isinstance(mask, Mask) else mask
    arr = arr.asnumpy() if isinstance(arr, mx.nd.NDArray) else np.asarray(arr)
    if arr.ndim != 4:
        raise ValueError("a soft mask is (N, C, H, W), got shape %s" % (arr.shape,))
    return arr


def _channel_index(k, channels):
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or not 0 <= k < channels:
        raise ValueError("channel index must be an integer in 0..%d (the mask has %d channels), "
                         "got %r" % (channels - 1, channels, k))
    return int(k)


def reduce_mask(mask, how="mean"):
    """Reduce a soft mask ``M`` (N, C, H, W) to one map (N, H, W) per image.

    Parameters
    ----------
    mask : Mask or array_like
        A :class:`Mask` from :func:`capture` or an array (N, C, H, W).
    how : str or tuple
        - ``'mean'``: the channel mean, how much the module lets the trunk
          features through at each position on average (``(1 + M) T``):
          where it enhances or diminishes features, as in the paper's Fig. 1.
        - ``'max'``: the channel maximum, where any feature's mask is open.
        - ``('channel', k)``: channel ``k`` alone, the mask of one trunk feature.
        - ``('channels', indices)``: the mean over a subset of channels,
          ``indices`` of shape (K,) for every image or (N, K) per image, e.g.
          ``class_channels(...)[i].channels``.

    Returns
    -------
    numpy.ndarray
        ``(N, H, W)``, float32 for float32 masks.
    """
    arr = _mask_array(mask)
    channels = arr.shape[1]
    if isinstance(how, str):
        if how == "mean":
            return arr.mean(axis=1)
        if how == "max":
            return arr.max(axis=1)
    elif isinstance(how, tuple) and len(how) == 2 and how[0] == "channel":
        return arr[:, _channel_index(how[1], channels)]
    elif isinstance(how, tuple) and len(how) == 2 and how[0] == "channels":
        idx = np.asarray(how[1])
        if idx.ndim == 1:
            idx = np.broadcast_to(idx, (arr.shape[0],) + idx.shape)
        if idx.ndim != 2 or idx.shape[0] != arr.shape[0] or idx.shape[1] == 0 \
                or not np.issubdtype(idx.dtype, np.integer):
            raise ValueError("('channels', indices) needs integer indices of shape (K,) or (N, K) "
                             "with N = %d, K >= 1; got %s of shape %s"
                             % (arr.shape[0], idx.dtype, idx.shape))
        bad = idx[(idx < 0) | (idx >= channels)]
        if bad.size:
            _channel_index(int(bad.flat[0]), channels)
        return np.take_along_axis(arr, idx[:, :, None, None], axis=1).mean(axis=1)
    raise ValueError("unknown reduction %r; valid: 'mean', 'max', ('channel', k), "
                     "('channels', indices)" % (how,))


def reduce_masks(masks, how="mean"):
    """:func:`reduce_mask` for a list of masks: a list of :class:`Mask` with (N, H, W) arrays.

    ``how`` is one reduction for all masks or a list of one per mask.
    """
    masks = list(masks)
    hows = how if isinstance(how, list) else [how] * len(masks)
    if len(hows) != len(masks):
        raise ValueError("reduce: a list needs one reduction per mask (%d), got %d"
                         % (len(masks), len(hows)))
    return [Mask(m.name, m.stage, m.index, reduce_mask(m, h)) for m, h in zip(masks, hows)]


