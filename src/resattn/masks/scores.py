"""How much a soft mask prefers an object: inside/outside-box ratios per stage."""
from collections import OrderedDict

import mxnet as mx
import numpy as np

from ..models.blocks import _check_choice
from .masknet import Mask, capture, capture_trunk
from .reduce import reduce_masks

__all__ = ["box_score", "box_auc", "score_by_stage"]

#: What :func:`score_by_stage` scores, and how.
SOURCES = ("mask", "trunk")
SCORES = ("ratio", "auc")


def _coverage(lo, hi, size, cells):
    """(N, cells): the fraction of each map cell inside [lo, hi) of an axis ``size`` long."""
    step = size / cells
    edges = np.arange(cells + 1) * step
    overlap = np.minimum(hi[:, None], edges[None, 1:]) - np.maximum(lo[:, None], edges[None, :-1])
    return np.clip(overlap, 0, None) / step


def box_score(maps, boxes, image_size=None, per_image=False):
    """How much more a mask map is open inside an object box than outside.

    Per image, the mean of the map inside the box divided by its mean
    outside (a ratio of means: 1 means no preference, 2 twice as open on the
    object); then the mean of these ratios over the images. A map cell
    counts inside in proportion to its area covered by the box, which equals
    upsampling the map to the image by nearest neighbour and counting pixels,
    so maps of any resolution compare with boxes in image pixels.

    Parameters
    ----------
    maps : array_like
        Reduced masks (N, h, w), e.g. from :func:`reduce_mask`.
    boxes : array_like
        (N, 4) boxes ``(x0, y0, x1, y1)`` in image pixels, ends exclusive.
    image_size : (int, int), optional
        ``(H, W)`` of the image the boxes refer to; default the maps' (h, w).
    per_image : bool
        Return the N ratios instead of their mean.

    Returns
    -------
    float or numpy.ndarray
        The mean ratio, or (N,) ratios; ``inf`` where a map is 0 outside the box.
    """
    maps, boxes, inside = _inside(maps, boxes, image_size)
    outside = 1.0 - inside
    mean_in = (inside * maps).sum(axis=(1, 2)) / inside.sum(axis=(1, 2))
    mean_out = (outside * maps).sum(axis=(1, 2)) / outside.sum(axis=(1, 2))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = mean_in / mean_out
    return ratios if per_image else float(ratios.mean())


def box_auc(maps, boxes, image_size=None, per_image=False):
    """How often a map is higher inside an object box than outside it.

    Per image, the probability that a pixel drawn inside the box has a higher
    map value than a pixel drawn outside (ties count one half): the area
    under the ROC curve of the map as a detector of the box. 0.5 means no
    preference, 1 that every pixel on the object outranks every pixel off it.
    Unlike :func:`box_score`'s ratio of means it depends only on the order
    of the values, so maps on different scales (a sigmoid mask near 0.5, a
    feature magnitude near 0 off the object) compare on one footing. Pixels
    are counted as :func:`box_score` counts them (a map cell weighs by its
    area inside and outside the box).

    Parameters
    ----------
    maps, boxes, image_size
        As in :func:`box_score`.
    per_image : bool
        Return the N values instead of their mean.

    Returns
    -------
    float or numpy.ndarray
    """
    maps, boxes, inside = _inside(maps, boxes, image_size)
    values = np.empty(maps.shape[0])
    for i, (v, w_in) in enumerate(zip(maps.reshape(len(maps), -1),
                                      inside.reshape(len(maps), -1))):
        w_out = 1.0 - w_in
        uniq, inverse = np.unique(v, return_inverse=True)
        win = np.bincount(inverse, w_in, len(uniq))
        wout = np.bincount(inverse, w_out, len(uniq))
        below = np.cumsum(wout) - wout  # outside weight strictly below each value
        values[i] = (win * (below + 0.5 * wout)).sum() / (win.sum() * wout.sum())
    return values if per_image else float(values.mean())


def _inside(maps, boxes, image_size):
    """Checked ``(maps, boxes, inside)``, ``inside`` (N, h, w) each cell's box coverage."""
    maps = np.asarray(maps, dtype=np.float64)
    boxes = np.asarray(boxes, dtype=np.float64)
    if maps.ndim != 3:
        raise ValueError("maps must be (N, h, w), got shape %s" % (maps.shape,))
    if boxes.shape != (maps.shape[0], 4):
        raise ValueError("boxes must be (N, 4) = (%d, 4) boxes (x0, y0, x1, y1), got shape %s"
                         % (maps.shape[0], boxes.shape))
    n, h, w = maps.shape
    height, width = (h, w) if image_size is None else tuple(image_size)
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
            raise ValueError("box %d = %s is not a non-empty box inside the %dx%d (HxW) image"
                             % (i, tuple(boxes[i].tolist()), height, width))
        if x0 == 0 and y0 == 0 and x1 == width and y1 == height:
            raise ValueError("box %d = %s covers the whole %dx%d image: nothing outside it"
                             % (i, tuple(boxes[i].tolist()), height, width))
    inside = _coverage(boxes[:, 1], boxes[:, 3], height, h)[:, :, None] \
        * _coverage(boxes[:, 0], boxes[:, 2], width, w)[:, None, :]
    return maps, boxes, inside


def _batches(data, batch_size):
    if isinstance(data, (np.ndarray, mx.nd.NDArray)):
        size = data.shape[0] if batch_size is None else batch_size
        for start in range(0, data.shape[0], size):
            yield data[start:start + size]
    else:
        for batch in data:
            yield batch[0] if isinstance(batch, (tuple, list)) else batch


def score_by_stage(net, data, boxes, image_size=None, reduce="mean", by="stage",
                   batch_size=None, hybridize=None, source="mask", score="ratio"):
    """:func:`box_score` of every captured mask, averaged per stage (or per module).

    With ``source='trunk'`` the same reduction is applied to the magnitude
    ``|T(x)|`` of the trunk features (:func:`capture_trunk`) instead of the
    soft masks: the baseline a mask's score is read against, available for
    a plain network of the same depth (``attention='none'``) too. A network's
    features are larger where the strokes are, so a score above 1 says
    little until it is compared with that baseline.

    Parameters
    ----------
    net : ResidualAttentionNet
    data : array_like or iterable
        Images (N, 3, H, W), or an iterable of batches (a batch may be a tuple
        whose first element is the images, as a DataLoader gives).
    boxes : array_like
        (N, 4) boxes ``(x0, y0, x1, y1)`` for the images in order.
    image_size : (int, int), optional
        ``(H, W)`` the boxes refer to; default each batch's input size.
    reduce : str, tuple or list
        Reduction of each mask, as in :func:`reduce_masks`.
    by : {'stage', 'module'}
        Aggregate the modules of a stage, or keep one score per module.
    batch_size : int, optional
        Split an array ``data`` into batches of this size (default: one batch).
    hybridize : bool, optional
        Passed to :func:`capture` (``source='mask'``).
    source : {'mask', 'trunk'}
        Score the soft masks ``M``, or the trunk features' magnitude ``|T|``.
    score : {'ratio', 'auc'}
        :func:`box_score` (mean inside / mean outside) or :func:`box_auc`
        (how often a pixel inside outranks one outside; 0.5 is no preference).

    Returns
    -------
    OrderedDict
        ``{'stage1': score, ...}`` or ``{'stage1.module1': score, ...}``: the
        mean over images and over the stage's modules of the per-image scores.
    """
    if by not in ("stage", "module"):
        raise ValueError("by must be 'stage' or 'module', got %r" % (by,))
    _check_choice("source", source, SOURCES)
    _check_choice("score", score, SCORES)
    judge = box_score if score == "ratio" else box_auc
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError("boxes must be (N, 4), got shape %s" % (boxes.shape,))
    ratios = OrderedDict()
    seen = 0
    for x in _batches(data, batch_size):
        n = x.shape[0]
        if seen + n > len(boxes):
            raise ValueError("data has more images than the %d boxes" % len(boxes))
        size = tuple(x.shape[2:]) if image_size is None else image_size
        if source == "mask":
            maps = capture(net, x, hybridize=hybridize).masks
        else:
            maps = [Mask(m.name, m.stage, m.index, np.abs(m.array))
                    for m in capture_trunk(net, x).masks]
        for mask in reduce_masks(maps, reduce):
            key = mask.name if by == "module" else "stage%d" % mask.stage
            ratios.setdefault(key, []).append(
                judge(mask.array, boxes[seen:seen + n], size, per_image=True))
        seen += n
    if seen != len(boxes):
        raise ValueError("data has %d images but %d boxes were given" % (seen, len(boxes)))
    return OrderedDict((k, float(np.concatenate(v).mean())) for k, v in ratios.items())

