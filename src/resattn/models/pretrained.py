"""What a network's weights expect of their inputs, as data: :class:`PretrainedCfg`.

timm's name and idea: every network resattn builds carries ``net.pretrained_cfg``,
the preprocessing its weights were trained with (input size, pixel scale,
mean and std, the resize and crop rule), their class names, where they come
from and whose format they were in. A published entry
(:class:`~resattn.models.weights.Weights`), a weight config beside a
``.params`` file and a trained run's checkpoint all give one; a network
built without weights carries its model's default
(:meth:`PretrainedCfg.for_model`). :func:`resattn.data.resolve_data_config`
and :func:`resattn.data.create_transform` turn it into the transform.

This module is also the one reader of a weight config's fields
(:func:`check_weights_config`): every command and the Python loader see a
bad field as one ValueError naming the file, the field, the value and the
fix. It imports no MXNet.
"""
import dataclasses
import math
import numbers
import types

from .._stats import IMAGENET

__all__ = ["PretrainedCfg", "CROP_MODES", "INTERPOLATIONS", "check_weights_config",
           "check_run_config", "check_input_size"]

#: How an image becomes the network's input: ``'squash'`` resizes it to the input size
#: (the CIFAR lineage's rule); ``'center'`` resizes its shorter side to
#: ``size / crop_pct`` and takes the centre (ImageNet evaluation, Sec. 4.2 of the paper).
CROP_MODES = ("squash", "center")
#: ``'area'``: OpenCV's area resampling where an image shrinks (no aliasing), bilinear where
#: it grows; ``'bilinear'``: bilinear both ways.
INTERPOLATIONS = ("area", "bilinear")

_CHANNELS = 3


def _freeze(mapping=None):
    return types.MappingProxyType(dict(mapping or {}))


@dataclasses.dataclass(frozen=True)
class PretrainedCfg:
    """The preprocessing, classes and provenance of a network's weights.

    Attributes
    ----------
    input_size : int or (int, int)
        Side (or height and width) of the images the weights were trained on.
    scale : float
        Pixels in [0, 255] are divided by this before ``mean`` and ``std``
        (255: images in [0, 1]).
    mean, std : tuple of 3 float
        Per-channel normalisation after scaling; ``(0, 0, 0)`` / ``(1, 1, 1)``: none.
    crop_mode : {'squash', 'center'}
        See :data:`CROP_MODES`.
    crop_pct : float
        Fraction of the resized shorter side the centre crop keeps (``'center'``).
    interpolation : {'area', 'bilinear'}
        See :data:`INTERPOLATIONS`.
    class_names : tuple of str or None
    num_classes : int or None
        Classifier size of the weights.
    model : str or None
        Registered model the weights fit.
    arch : mapping
        Builder arguments the weights need (``variant``, ``classes``, ...).
    source : str
        Whose format the weights were published in (``'resattn'``, ``'seed'``,
        ``'pytorch'``, ``'gluoncv'``).
    tag : str or None
        Published weights tag, where they are published.
    file : str or None
        The ``.params`` file they were loaded from.
    provenance : mapping
        Where the weights come from (URL and blob id, training run, conversion).
    """
    input_size: object = 224
    scale: float = 255.0
    mean: tuple = IMAGENET[0]
    std: tuple = IMAGENET[1]
    crop_mode: str = "center"
    crop_pct: float = 0.875
    interpolation: str = "bilinear"
    class_names: object = None
    num_classes: object = None
    model: object = None
    arch: types.MappingProxyType = dataclasses.field(default_factory=_freeze)
    source: str = "resattn"
    tag: object = None
    file: object = None
    provenance: types.MappingProxyType = dataclasses.field(default_factory=_freeze)

    def __post_init__(self):
        # Normalise containers so that equal configs compare equal and nothing is mutable.
        set_ = object.__setattr__
        size = self.input_size
        set_(self, "input_size", size if isinstance(size, int) else tuple(size))
        set_(self, "mean", tuple(float(m) for m in self.mean))
        set_(self, "std", tuple(float(s) for s in self.std))
        set_(self, "scale", float(self.scale))
        set_(self, "crop_pct", float(self.crop_pct))
        if self.class_names is not None:
            set_(self, "class_names", tuple(self.class_names))
        set_(self, "arch", _freeze(self.arch))
        set_(self, "provenance", _freeze(self.provenance))

    # ------------------------------------------------------------------ views
    @property
    def is_default(self):
        """True when no trained weights say the preprocessing: a model's documented default
        (a network built without weights, or a file without any config)."""
        return "default_of" in self.provenance or \
            self.provenance.get("preprocessing_from") == "model default"

    def normalization(self):
        """``(mean, std)`` for images in [0, 1] that give what this config gives.

        Dividing pixels in [0, 255] by ``scale`` and then normalising by
        ``mean``/``std`` equals ``(x - mean * scale / 255) / (std * scale / 255)``
        for ``x`` = pixels / 255, which is how resattn's datasets give images.
        """
        k = self.scale / 255.0
        return tuple(m * k for m in self.mean), tuple(s * k for s in self.std)

    def preprocessing(self):
        """The ``preprocessing`` block of a weight config (JSON-ready)."""
        size = self.input_size
        return {"input_size": size if isinstance(size, int) else list(size),
                "scale": self.scale, "mean": list(self.mean), "std": list(self.std),
                "crop_mode": self.crop_mode, "crop_pct": self.crop_pct,
                "interpolation": self.interpolation}

    def data_config(self):
        """timm's data config: what :func:`resattn.data.create_transform` takes."""
        mean, std = self.normalization()
        return {"input_size": self.input_size, "mean": mean, "std": std,
                "crop_mode": self.crop_mode, "crop_pct": self.crop_pct,
                "interpolation": self.interpolation}

    def transforms(self, is_training=False, **kwargs):
        """The transform of these weights (torchvision's ``weights.transforms()``)."""
        from ..data.transforms import create_transform
        return create_transform(**dict(self.data_config(), is_training=is_training, **kwargs))

    def replace(self, **changes):
        """A copy with ``changes`` (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self):
        """Every field as JSON-ready values."""
        out = dataclasses.asdict(self)
        out.update(self.preprocessing(), arch=dict(self.arch), provenance=dict(self.provenance),
                   class_names=list(self.class_names) if self.class_names else None)
        return out

    # ------------------------------------------------------------------ makers
    @classmethod
    def for_model(cls, spec):
        """The default of a registered model (its :class:`~resattn.models.ModelSpec`)."""
        small = _small(spec.input_size)
        return cls(input_size=spec.input_size, scale=255.0, mean=spec.mean, std=spec.std,
                   crop_mode="squash" if small else "center",
                   interpolation="area" if small else "bilinear",
                   num_classes=spec.classes, model=spec.name,
                   arch={"variant": spec.variant} if spec.variant else {},
                   source="resattn", provenance={"default_of": spec.name})

    @classmethod
    def from_weights(cls, entry, file=None):
        """The config of a published :class:`~resattn.models.weights.Weights` entry."""
        return cls(input_size=entry.input_size, scale=entry.scale, mean=entry.mean,
                   std=entry.std, crop_mode="squash", interpolation="area",
                   class_names=entry.class_names, num_classes=entry.arch.get("classes"),
                   model=entry.model, arch=entry.arch, source=entry.source, tag=entry.tag,
                   file=file, provenance=entry.provenance())

    @classmethod
    def from_config(cls, config, file=None, default=None):
        """The config of a weight config dict (:func:`check_weights_config` first).

        Parameters
        ----------
        config : dict
            A weight config (``FILE.params.json``).
        file : str, optional
            The weight file, for messages and :attr:`file`.
        default : PretrainedCfg, optional
            Used where the config has no ``preprocessing`` (a file saved without
            one): the model's documented default; without ``default`` that is a
            ValueError naming what is missing.
        """
        where = (file + ".json") if file else "the weight config"
        config = check_weights_config(config, where)
        pre = config["preprocessing"]
        provenance = config.get("provenance") or {}
        arch = config["arch"]
        if pre is None:
            if default is None:
                raise ValueError("%s has no preprocessing (input_size, mean, std): add it, or "
                                 "load the file with the model's own (pass the model)" % where)
            base = default
        else:
            small = _small(pre["input_size"])
            base = cls(input_size=pre["input_size"], scale=pre.get("scale", 255.0),
                       mean=pre["mean"], std=pre["std"],
                       crop_mode=pre.get("crop_mode", "squash" if small else "center"),
                       crop_pct=pre.get("crop_pct", 0.875),
                       interpolation=pre.get("interpolation", "area" if small else "bilinear"))
        return base.replace(
            class_names=config["class_names"], num_classes=arch.get("classes"),
            model=config["model"], arch=arch,
            source=provenance.get("source", "resattn") if isinstance(
                provenance.get("source"), str) else "resattn",
            tag=provenance.get("tag") if isinstance(provenance.get("tag"), str) else None,
            file=file, provenance=provenance)


def _small(size):
    side = size if isinstance(size, int) else min(size)
    return side <= 64


# ---------------------------------------------------------------------- validation
_FIX = "fix the field, or move the config away to load the file without it"
_RUN_FIX = "fix the field in config.json, or pass the model and its arguments yourself"


def _fail(where, field, value, rule, fix=None):
    fix = fix or _FIX
    shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    raise ValueError("%s: %s is %s: %s%s" % (where, field, shown, rule,
                                              "; " + fix if fix else ""))


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_input_size(value, where, field, fix=None):
    """``value`` as an int or an (H, W) tuple within :data:`resattn.io.MAX_INPUT_SIDE`."""
    from ..io import MAX_INPUT_SIDE
    rule = "it must be an integer N or a pair [H, W] of integers in [1, %d]" % MAX_INPUT_SIDE
    if _is_int(value):
        sides = (value,)
    elif isinstance(value, (list, tuple)) and len(value) == 2 and all(map(_is_int, value)):
        sides = tuple(value)
    else:
        _fail(where, field, value, rule, fix)
    if not all(1 <= s <= MAX_INPUT_SIDE for s in sides):
        _fail(where, field, value, rule, fix)
    return int(sides[0]) if len(sides) == 1 else tuple(int(s) for s in sides)


def _channels(value, where, field, positive):
    rule = "it must be %d finite numbers%s (one per channel)" % (
        _CHANNELS, " > 0" if positive else "")
    if not isinstance(value, (list, tuple)) or len(value) != _CHANNELS \
            or not all(_is_number(v) and math.isfinite(v) for v in value) \
            or (positive and not all(v > 0 for v in value)):
        _fail(where, field, value, rule)
    return [float(v) for v in value]


def _mapping(value, where, field, optional=True):
    if value is None and optional:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        _fail(where, field, value, "it must be a JSON object with string keys")
    return value


def check_weights_config(config, where="the weight config"):
    """Every field of a weight config checked for type, range and finiteness.

    Parameters
    ----------
    config : dict
        As read from ``FILE.params.json`` (:func:`resattn.io.read_weights_config`).
    where : str
        The config's path, named in every message.

    Returns
    -------
    dict
        ``config`` with its fields normalised (``arch`` a dict, ``input_size``
        an int or (H, W), ``mean``/``std`` lists of float).

    Raises
    ------
    ValueError
        One line: the file, the field, its value and what is allowed.
    """
    from ..io import WEIGHTS_VERSION
    if not isinstance(config, dict):
        _fail(where, "the config", config, "it must be a JSON object", _FIX)
    config = dict(config)
    version = config.get("version", 0)
    if not _is_int(version) or version < 0:
        _fail(where, "version", version, "it must be an integer >= 0", _FIX)
    if version > WEIGHTS_VERSION:
        raise ValueError("%s was written by a newer resattn (weight config version %s; this "
                         "one reads %d): upgrade resattn" % (where, version, WEIGHTS_VERSION))
    model = config.get("model")
    if not isinstance(model, str) or not model:
        _fail(where, "model", model, "it must be the name of a registered model", _FIX)
    arch = dict(_mapping(config.get("arch"), where, "arch"))
    if "classes" in arch and (not _is_int(arch["classes"]) or arch["classes"] < 1):
        _fail(where, "arch.classes", arch["classes"], "it must be an integer >= 1", _FIX)
    if "width_mult" in arch and (not _is_number(arch["width_mult"])
                                 or not math.isfinite(arch["width_mult"])
                                 or arch["width_mult"] <= 0):
        _fail(where, "arch.width_mult", arch["width_mult"], "it must be a finite number > 0",
              _FIX)
    config["arch"] = arch
    pre = config.get("preprocessing")
    if pre is not None:
        pre = dict(_mapping(pre, where, "preprocessing", optional=False))
        for key in ("input_size", "mean", "std"):
            if key not in pre:
                raise ValueError("%s: preprocessing has no %s (it needs input_size, mean and "
                                 "std); add it, or move the config away" % (where, key))
        pre["input_size"] = check_input_size(pre["input_size"], where,
                                             "preprocessing.input_size")
        scale = pre.get("scale", 255.0)
        if not _is_number(scale) or not math.isfinite(scale) or scale <= 0:
            _fail(where, "preprocessing.scale", scale, "it must be a finite number > 0 "
                  "(pixels are divided by it; 255 gives images in [0, 1])", _FIX)
        pre["scale"] = float(scale)
        pre["mean"] = _channels(pre["mean"], where, "preprocessing.mean", False)
        pre["std"] = _channels(pre["std"], where, "preprocessing.std", True)
        if pre.get("crop_mode", CROP_MODES[0]) not in CROP_MODES:
            _fail(where, "preprocessing.crop_mode", pre["crop_mode"],
                  "it must be one of %s" % ", ".join(CROP_MODES), _FIX)
        if pre.get("interpolation", INTERPOLATIONS[0]) not in INTERPOLATIONS:
            _fail(where, "preprocessing.interpolation", pre["interpolation"],
                  "it must be one of %s" % ", ".join(INTERPOLATIONS), _FIX)
        crop_pct = pre.get("crop_pct", 0.875)
        if not _is_number(crop_pct) or not 0 < crop_pct <= 1:
            _fail(where, "preprocessing.crop_pct", crop_pct, "it must be a number in (0, 1]",
                  _FIX)
    config["preprocessing"] = pre
    names = config.get("class_names")
    if names is not None:
        if not isinstance(names, (list, tuple)) or not names \
                or not all(isinstance(n, str) for n in names):
            _fail(where, "class_names", names, "it must be a non-empty list of strings", _FIX)
        if "classes" in arch and len(names) != arch["classes"]:
            _fail(where, "class_names", "%d names" % len(names),
                  "arch.classes is %d" % arch["classes"], _FIX)
        config["class_names"] = list(names)
    config["provenance"] = dict(_mapping(config.get("provenance"), where, "provenance"))
    sha1 = config.get("sha1")
    if sha1 is not None and not (isinstance(sha1, str) and len(sha1) == 40
                                 and all(c in "0123456789abcdef" for c in sha1)):
        _fail(where, "sha1", sha1, "it must be 40 lowercase hex digits", _FIX)
    size = config.get("size")
    if size is not None and (not _is_int(size) or size < 0):
        _fail(where, "size", size, "it must be an integer >= 0 (bytes)", _FIX)
    return config


#: Fields of a run's ``config.json`` that loading reads, and their types.
_RUN_FIELDS = {"model": str, "dataset": str, "model_kwargs": dict, "classes": int, "seed": int}


def check_run_config(config, where="config.json"):
    """The fields of a run's ``config.json`` that loading reads, checked like a weight config's.

    Returns
    -------
    dict
        ``config`` unchanged; a ValueError names a field of the wrong type.
    """
    if not isinstance(config, dict):
        _fail(where, "the config", config, "it must be a JSON object", _RUN_FIX)
    for key, kind in _RUN_FIELDS.items():
        value = config.get(key)
        if value is None:
            continue
        ok = _is_int(value) and value >= 0 if kind is int else isinstance(value, kind)
        if not ok:
            _fail(where, key, value, "it must be %s" % {str: "a string", dict: "a JSON object",
                                                        int: "an integer >= 0"}[kind],
                  _RUN_FIX)
    if "image_size" in config and config["image_size"] is not None:
        check_input_size(config["image_size"], where, "image_size", _RUN_FIX)
    return config
