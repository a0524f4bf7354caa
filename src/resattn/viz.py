"""Pictures: soft masks overlaid on their images (the paper's Fig. 1), and training curves.

Figures are drawn with :class:`matplotlib.figure.Figure` and the Agg canvas
directly, so the backend of a user's pyplot session is left alone.
"""
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .io import atomic_write
from .masks import Mask, reduce_masks

__all__ = ["upsample", "plot_masks", "plot_curves", "loss_scale"]


def _axis_weights(out_size, in_size):
    """Source indices and weights of 1-D linear interpolation with pixel centres aligned."""
    pos = np.clip((np.arange(out_size) + 0.5) * in_size / out_size - 0.5, 0, in_size - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, in_size - 1)
    return lo, hi, pos - lo


def upsample(maps, size):
    """Bilinear resize of maps (N, h, w) to ``size`` = (H, W).

    Pixel centres are aligned (``align_corners=False``): map cell ``j``
    covers image pixels ``[j W / w, (j + 1) W / w)``, and values beyond the
    outermost cell centres are held constant.
    """
    maps = np.asarray(maps, dtype=np.float64)
    if maps.ndim != 3:
        raise ValueError("maps must be (N, h, w), got shape %s" % (maps.shape,))
    height, width = size
    y0, y1, fy = _axis_weights(height, maps.shape[1])
    x0, x1, fx = _axis_weights(width, maps.shape[2])
    rows = maps[:, y0] * (1 - fy)[None, :, None] + maps[:, y1] * fy[None, :, None]
    return rows[:, :, x0] * (1 - fx) + rows[:, :, x1] * fx


def _as_images(images):
    arr = images.asnumpy() if hasattr(images, "asnumpy") else np.asarray(images)
    if arr.ndim not in (3, 4) or arr.shape[-1] != 3:
        raise ValueError("image must be (H, W, 3) or a batch (N, H, W, 3), got shape %s "
                         "(for (3, H, W) arrays use .transpose(1, 2, 0))" % (arr.shape,))
    if arr.ndim == 3:
        arr = arr[None]
    if arr.dtype == np.uint8:
        return arr.astype(np.float64) / 255.0
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError("image must be uint8 or float in [0, 1], got dtype %s" % arr.dtype)
    if arr.size and (arr.min() < 0 or arr.max() > 1):
        raise ValueError("a float image must lie in [0, 1], got values in [%g, %g]"
                         % (arr.min(), arr.max()))
    return arr.astype(np.float64)


def plot_masks(images, masks, path, reduce="mean", title=None, alpha=0.5, cmap="jet",
               vmin=None, vmax=None, panel_size=2.0, dpi=100):
    """Write a PNG: each image, then each module's mask map over it as a heat map.

    One row per image: the input, then one panel per module titled by its
    name (``'stage1.module1'``), the reduced mask upsampled bilinearly to the
    image size (:func:`upsample`) and drawn with ``alpha`` over the image,
    with a colour bar. The file is replaced atomically.

    Parameters
    ----------
    images : array_like
        One image (H, W, 3) or a batch (N, H, W, 3), uint8 or float in [0, 1].
    masks : list of Mask
        From :func:`resattn.masks.capture` on the same N images.
    path : str or os.PathLike
        Output file; written as PNG whatever its suffix.
    reduce : str, tuple, list or None
        How masks become maps (see :func:`resattn.masks.reduce_mask`), one for
        all or a list of one per mask; ``None`` if the masks' arrays are
        already maps (N, h, w).
    title : str, optional
        Title of the figure.
    alpha : float
        Opacity of the heat maps, in [0, 1].
    cmap : str
        Matplotlib colour map.
    vmin, vmax : float, optional
        Colour range of every panel; by default each module's own range over
        the images, so rows are comparable.
    panel_size : float
        Side of one panel in inches.
    dpi : int
        Pixels per inch: the PNG is ``round(dpi * panel_size * (1 + modules))``
        pixels wide and ``round(dpi * panel_size * N)`` high.

    Returns
    -------
    str
        ``path``.
    """
    images = _as_images(images)
    masks = list(masks)
    if not masks:
        raise ValueError("masks is empty: nothing to plot")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError("alpha must be in [0, 1], got %r" % (alpha,))
    if reduce is None:
        maps = [Mask(m.name, m.stage, m.index, np.asarray(m.array)) for m in masks]
        for m in maps:
            if m.array.ndim != 3:
                raise ValueError("reduce=None needs maps (N, h, w); %s has shape %s"
                                 % (m.name, m.array.shape))
    else:
        maps = reduce_masks(masks, reduce)
    n, height, width = images.shape[:3]
    for m in maps:
        if m.array.shape[0] != n:
            raise ValueError("%d images but mask %s is for %d" % (n, m.name, m.array.shape[0]))
    rows, cols = n, 1 + len(maps)
    fig = Figure(figsize=(cols * panel_size, rows * panel_size), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False)
    up = [upsample(m.array, (height, width)) for m in maps]
    for r in range(rows):
        axes[r, 0].imshow(images[r])
        axes[r, 0].set_title("input" if rows == 1 else "input %d" % r, fontsize=8)
        for c, (m, heat) in enumerate(zip(maps, up), start=1):
            ax = axes[r, c]
            ax.imshow(images[r])
            shown = ax.imshow(heat[r], cmap=cmap, alpha=alpha,
                              vmin=heat.min() if vmin is None else vmin,
                              vmax=heat.max() if vmax is None else vmax)
            ax.set_title(m.name, fontsize=8)
            bar = fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.02)
            bar.ax.tick_params(labelsize=6)
    for ax in axes.flat:
        ax.set_axis_off()
    if title is not None:
        fig.suptitle(title, fontsize=10)
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi))


def loss_scale(history):
    """``'log'`` where the losses of ``history`` span more than a factor of 10 (an early
    evaluation spike of 20 beside later losses of 0.05 would flatten every later epoch on
    a linear axis), else ``'linear'``."""
    import math
    losses = [r[k] for r in history for k in ("train_loss", "val_loss")
              if math.isfinite(r[k]) and r[k] > 0]
    return "log" if losses and max(losses) > 10 * min(losses) else "linear"


def plot_curves(history, path):
    """Loss and accuracy per epoch as a PNG (matplotlib, Agg canvas); the loss axis is
    logarithmic where the losses span more than a factor of 10 (:func:`loss_scale`)."""
    import math
    fig = Figure(figsize=(9, 3.5), dpi=100)
    FigureCanvasAgg(fig)
    epochs = [row["epoch"] for row in history]
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    finite = [{k: (r[k] if math.isfinite(r[k]) else float("nan"))
               for k in ("train_loss", "val_loss")} for r in history]
    ax1.plot(epochs, [r["train_loss"] for r in finite], "o-", label="train")
    ax1.plot(epochs, [r["val_loss"] for r in finite], "s-", label="val")
    ax1.set_xlabel("epoch")
    scale = loss_scale(history)
    ax1.set_yscale(scale)
    ax1.set_ylabel("cross-entropy" + (" (log scale)" if scale == "log" else ""))
    ax1.legend()
    ax2.plot(epochs, [r["val_top1"] for r in history], "s-", label="val top-1")
    ax2.plot(epochs, [r["val_top5"] for r in history], "^-", label="val top-5")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("accuracy")
    ax2.set_ylim(0, 1)
    ax2.legend(loc="lower right")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
