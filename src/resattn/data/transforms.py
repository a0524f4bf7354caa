"""Image transforms on (H, W, C) float32 arrays, and :class:`Preprocess` that chains them.

The random ones take ``rng``, a ``np.random.RandomState``.
"""
import cv2
import numpy as np

from ._common import STYLES

__all__ = ["Preprocess", "pad_crop", "random_flip", "cutout", "random_resized_crop",
           "resize_short", "center_crop"]


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
    return _resize_short_center(img, size, size)


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


#: Before resizing for a centre crop, an image's long side is cut to this many times its
#: short side (around the centre, which the crop keeps): resizing a 1 x 100000 image to a
#: short side of 256 whole would need 256 x 25600000 pixels, 78 GB as float32.
_MAX_ASPECT = 4


def _resize_short_center(img, short, size):
    """``center_crop(resize_short(img, short), size)``, without resizing far-away pixels.

    Images up to :data:`_MAX_ASPECT` times as long as they are wide (or the reverse) go
    through those two functions unchanged; longer ones are first cut to that aspect.
    """
    h, w = img.shape[:2]
    keep = _MAX_ASPECT * min(h, w)
    if h > keep:
        img = img[(h - keep) // 2:(h - keep) // 2 + keep]
    elif w > keep:
        img = img[:, (w - keep) // 2:(w - keep) // 2 + keep]
    return center_crop(resize_short(img, short), size)


def _resize(img, h, w):
    """``img`` resized bilinearly to ``h`` x ``w``, always (H, W, C)."""
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
        if style not in STYLES:
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
                img = _resize_short_center(img, int(round(self.size * 256 / 224)),
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
    """(H, W, 3) float32 from a uint8 ([0, 255]) or float image, gray or RGB."""
    if hasattr(img, "asnumpy"):  # an mx.nd.NDArray, without importing MXNet here
        img = img.asnumpy()
    img = np.asarray(img)
    img = img.astype(np.float32) / 255 if img.dtype == np.uint8 else img.astype(np.float32)
    if img.ndim == 2:
        img = img[:, :, None]
    if img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    return img
