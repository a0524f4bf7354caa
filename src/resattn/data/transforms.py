"""Image transforms on (H, W, C) float32 arrays, and :class:`Preprocess` that chains them.

The random ones take ``rng``, a ``np.random.RandomState``.
"""
import cv2
import numpy as np

from ._common import STYLES

__all__ = ["Preprocess", "create_transform", "denormalize", "pad_crop", "random_flip", "cutout",
           "random_resized_crop", "resize_short", "center_crop"]

#: OpenCV's resampling of each :data:`resattn.models.pretrained.INTERPOLATIONS` name.
_CV2_INTERPOLATION = {"bilinear": cv2.INTER_LINEAR, "area": cv2.INTER_AREA}


def _hw(size):
    return (size, size) if isinstance(size, (int, np.integer)) else (int(size[0]), int(size[1]))


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


def random_resized_crop(img, size, rng, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3),
                        interpolation="bilinear"):
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
            return _resize(img[y:y + ch, x:x + cw], *_hw(size), interpolation=interpolation)
    return _resize_short_center(img, min(_hw(size)), size, interpolation)


def resize_short(img, short, interpolation="bilinear"):
    """Resize (bilinearly by default) so that the shorter side is ``short`` pixels."""
    h, w = img.shape[:2]
    if h <= w:
        return _resize(img, short, max(int(round(w * short / h)), short), interpolation)
    return _resize(img, max(int(round(h * short / w)), short), short, interpolation)


def center_crop(img, size):
    """The central ``size`` (int, or (H, W)) window; the image must be at least that large."""
    ch, cw = _hw(size)
    h, w = img.shape[:2]
    y, x = (h - ch) // 2, (w - cw) // 2
    return img[y:y + ch, x:x + cw]


#: Before resizing for a centre crop, an image's long side is cut to this many times its
#: short side (around the centre, which the crop keeps): resizing a 1 x 100000 image to a
#: short side of 256 whole would need 256 x 25600000 pixels, 78 GB as float32.
_MAX_ASPECT = 4


def _resize_short_center(img, short, size, interpolation="bilinear"):
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
    return center_crop(resize_short(img, short, interpolation), size)


def _resize(img, h, w, interpolation="bilinear"):
    """``img`` resized to ``h`` x ``w`` (bilinearly, or OpenCV's area rule), always (H, W, C)."""
    if img.shape[:2] == (h, w):
        return img
    out = cv2.resize(np.ascontiguousarray(img), (w, h),
                     interpolation=_CV2_INTERPOLATION[interpolation])
    return out.reshape(h, w, -1)


class Preprocess:
    """Turn an (H, W, C) image into a normalised (3, size, size) float32 array.

    Parameters
    ----------
    size : int or (int, int)
        Output side, or height and width.
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
    interpolation : {'bilinear', 'area'}
        Resampling of every resize ('area': OpenCV's ``INTER_AREA``).
    crop_pct : float
        'imagenet' evaluation resizes the shorter side to ``size / crop_pct``
        before the centre crop (224 / 256 by default).
    pad : int, optional
        :func:`pad_crop`'s padding in 'small' augmentation (default ``size // 8``).
    """

    def __init__(self, size, mean, std, style="small", augment=False, flip=True, cutout=0,
                 interpolation="bilinear", crop_pct=224 / 256, pad=None):
        if style not in STYLES:
            raise ValueError("style must be 'small', 'imagenet' or 'fixed', got %r" % (style,))
        if interpolation not in _CV2_INTERPOLATION:
            raise ValueError("interpolation must be one of %s, got %r"
                             % (", ".join(_CV2_INTERPOLATION), interpolation))
        if not 0 < crop_pct <= 1:
            raise ValueError("crop_pct must be in (0, 1], got %r" % (crop_pct,))
        self.size, self.style = size, style
        self.mean = np.asarray(mean, np.float32)
        self.std = np.asarray(std, np.float32)
        self.augment, self.flip, self.cutout = bool(augment), bool(flip), int(cutout)
        self.interpolation, self.crop_pct = interpolation, float(crop_pct)
        self.pad = min(_hw(size)) // 8 if pad is None else int(pad)

    def __repr__(self):
        return ("Preprocess(size=%r, style=%r, augment=%r, interpolation=%r, mean=%s, std=%s)"
                % (self.size, self.style, self.augment, self.interpolation,
                   tuple(round(float(v), 4) for v in self.mean),
                   tuple(round(float(v), 4) for v in self.std)))

    def denormalize(self, x):
        """Network inputs back to images for plotting (:func:`denormalize` with this
        transform's mean and std)."""
        return denormalize(x, self.mean, self.std)

    def __call__(self, img, rng=None):
        img = _as_float_rgb(img)
        h, w = _hw(self.size)
        if self.style == "imagenet":
            if self.augment:
                img = random_resized_crop(img, self.size, rng, interpolation=self.interpolation)
            else:
                img = _resize_short_center(img, int(round(max(h, w) / self.crop_pct)),
                                           self.size, self.interpolation)
        elif self.style == "small":
            img = _resize(img, h, w, self.interpolation)
            if self.augment:
                img = pad_crop(img, self.pad, rng)
        elif img.shape[:2] != (h, w):
            raise ValueError("style 'fixed' expects %dx%d images, got %dx%d"
                             % (h, w, img.shape[0], img.shape[1]))
        if self.augment and self.flip:
            img = random_flip(img, rng)
        img = (img - self.mean) / self.std
        if self.augment:
            img = cutout(img, self.cutout, rng)
        return np.ascontiguousarray(img.transpose(2, 0, 1), dtype=np.float32)


def _as_float_rgb(img):
    """(H, W, 3) float32 from a uint8 ([0, 255]), uint16 or float image, gray, RGB or RGBA,
    NumPy, MXNet or PIL."""
    if hasattr(img, "asnumpy"):  # an mx.nd.NDArray, without importing MXNet here
        img = img.asnumpy()
    if hasattr(img, "convert") and hasattr(img, "mode"):  # a PIL image, without importing PIL
        img = img.convert("RGB") if img.mode not in ("RGB", "L") else img
    img = np.asarray(img)
    if img.dtype == np.uint8:
        img = img.astype(np.float32) / 255
    elif img.dtype == np.uint16:
        img = img.astype(np.float32) / 65535
    else:
        img = img.astype(np.float32)
    if img.ndim == 2:
        img = img[:, :, None]
    if img.ndim != 3 or img.shape[2] not in (1, 3, 4):
        raise ValueError("an image must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got shape "
                         "%s" % (img.shape,))
    if img.shape[2] == 4:
        img = img[:, :, :3]  # RGBA: the colour, as OpenCV's IMREAD_COLOR reads it
    if img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    return img


def denormalize(x, mean, std):
    """Network inputs back to images for plotting: (3, H, W) or (N, 3, H, W) float32
    normalised with ``mean``/``std`` (of images in [0, 1]) to (H, W, 3) or (N, H, W, 3)
    float32 in [0, 1]."""
    x = np.asarray(x.asnumpy() if hasattr(x, "asnumpy") else x, np.float32)
    x = np.moveaxis(x, -3, -1)
    return np.clip(x * np.asarray(std, np.float32) + np.asarray(mean, np.float32), 0, 1)


def create_transform(input_size, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                     crop_mode="center", crop_pct=0.875, interpolation="bilinear",
                     is_training=False, hflip=True, pad=None, cutout=0):
    """The transform from an image to a network input (timm's ``create_transform``).

    ``create_transform(**resolve_data_config(model=net))`` gives what
    ``resattn predict`` applies to an image file for ``net``'s weights.

    Parameters
    ----------
    input_size : int or (int, int)
        Side (or height and width) of the network input.
    mean, std : tuple of 3 float
        Normalisation of images scaled to [0, 1].
    crop_mode : {'squash', 'center'}
        'squash': resize the image to ``input_size``; 'center': resize its
        shorter side to ``input_size / crop_pct`` and take the centre.
    crop_pct : float
    interpolation : {'area', 'bilinear'}
        'area' is OpenCV's ``INTER_AREA``.
    is_training : bool
        The training transform instead: for 'squash', the paper's CIFAR
        augmentation (crop with ``pad`` pixels of zero padding, default
        ``size // 8``; ``hflip``; ``cutout``), for 'center' a random-resized
        crop and ``hflip``. It takes ``rng``, a ``np.random.RandomState``.
    hflip : bool
    pad : int, optional
    cutout : int
        Side of the cutout square (training; 0: none).

    Returns
    -------
    Preprocess
        ``transform(img[, rng])``: an (H, W, C) uint8 NumPy image (or PIL,
        MXNet, uint16, float in [0, 1]; grey, RGB or RGBA) to a (3, H, W)
        float32 array.

    Examples
    --------
    >>> import numpy as np
    >>> t = create_transform(32, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), crop_mode='squash')
    >>> t(np.full((45, 37, 3), 255, np.uint8)).shape, float(t(np.zeros((8, 8), np.uint8))[0, 0, 0])
    ((3, 32, 32), -2.0)
    """
    from ..models.pretrained import CROP_MODES, check_input_size
    if crop_mode not in CROP_MODES:
        raise ValueError("crop_mode must be one of %s, got %r" % (", ".join(CROP_MODES),
                                                                  crop_mode))
    size = check_input_size(input_size, "create_transform", "input_size",
                            "pass an int N or (H, W)")
    for name, values in (("mean", mean), ("std", std)):
        values = np.asarray(values, np.float64)
        if values.shape != (3,) or not np.all(np.isfinite(values)) \
                or (name == "std" and not np.all(values > 0)):
            raise ValueError("%s must be 3 finite numbers%s, got %r"
                             % (name, " > 0" if name == "std" else "", values.tolist()))
    style = "small" if crop_mode == "squash" else "imagenet"
    return Preprocess(size, mean, std, style, augment=is_training, flip=hflip, cutout=cutout,
                      interpolation=interpolation, crop_pct=crop_pct, pad=pad)
