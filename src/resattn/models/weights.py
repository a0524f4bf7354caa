"""Published weights as first-class entries: what each file is, where it is, what it expects.

Each :class:`Weights` entry says everything needed to turn a published file
into correct predictions: the model and architecture arguments it fits, the
implementation whose names it uses (``source``), its preprocessing (input
size, pixel range, mean and std, or none), its class names, and its
provenance (URL at a fixed commit, git blob id, the accuracy its authors
claim and how they measured it). ``get_model(name, pretrained=TAG)`` and
``resattn eval --pretrained TAG`` use them; ``resattn list --pretrained``
shows them.

Nine files are published, all for the CIFAR-10 Attention-92 of the GluonCV
lineage (``attention92_cifar``): eight by the Gluon implementation
(PistonY/ResidualAttentionNetwork) and one by the PyTorch reference
(tengshaofeng/ResidualAttentionNetwork-pytorch). The accuracies are their
authors' own: the best test-set checkpoint of a training run, one 32x32 view
per image. resattn cannot download them on its test machines; see
``docs/pretrained.md`` for what was and was not verified.

Where raw.githubusercontent.com cannot be reached, ``$RESATTN_MIRROR`` names
a server that holds the same files under the same ``<repo>/<commit>/<path>``
(an internal mirror): the blob id check makes any server as good as GitHub.

This module does not import MXNet.
"""
import dataclasses
import difflib
import os

from .. import _stats

__all__ = ["Weights", "CIFAR10_CLASSES", "register_weights", "get_weights", "list_weights",
           "default_weights", "find_weights", "SOURCE_NORMALIZATION"]

#: CIFAR-10's class names, in label order.
CIFAR10_CLASSES = _stats.CIFAR10_CLASSES

_RAW = "https://raw.githubusercontent.com/%s/%s/%s"


@dataclasses.dataclass(frozen=True)
class Weights:
    """One published weight file.

    Attributes
    ----------
    tag : str
        Short name, e.g. ``'seed-97.14'``.
    model : str
        The registered model it fits (``'attention92_cifar'``).
    arch : dict
        Keyword arguments of :func:`resattn.get_model` the weights need
        (``variant``, ``classes``).
    source : str
        Whose parameter names the file uses (:data:`resattn.models.choices.SOURCES`).
    input_size : int
        Side of the images the weights were trained on.
    scale : float
        Pixels are divided by this (255: images in [0, 1]) before ``mean``/``std``.
    mean, std : tuple of 3 float
        Per-channel normalisation after scaling; ``(0, 0, 0)`` and ``(1, 1, 1)``: none.
    class_names : tuple of str
    repo, commit, path : str
        Where the file is: ``https://raw.githubusercontent.com/<repo>/<commit>/<path>``.
    blob : str
        Its git blob id (``git hash-object``): a download is genuine when it matches.
    accuracy : float
        Top-1 (percent) its authors claim.
    measured : str
        How they measured it.
    default : bool
        The entry ``pretrained=True`` picks for ``model``.
    note : str
        Anything else a user should know (training recipe, format).
    size : int or None
        The file's size in bytes, the ``max_bytes`` of its download: a server that
        sends more is cut off. Exact for the seed's ``.params`` files (their size
        follows from the parameter names and shapes of the commit's model code); for
        ``pytorch-95.4`` an upper bound from its tensors (its pickle's length
        depends on the storage keys, heap addresses). None: not known.
    """
    tag: str
    model: str
    arch: dict
    source: str
    input_size: int
    scale: float
    mean: tuple
    std: tuple
    class_names: tuple
    repo: str
    commit: str
    path: str
    blob: str
    accuracy: float
    measured: str
    default: bool = False
    note: str = ""
    size: int = None

    @property
    def url(self):
        """The raw file at its commit (on ``$RESATTN_MIRROR`` instead of GitHub if set)."""
        base = os.environ.get("RESATTN_MIRROR", "").rstrip("/")
        if base:
            return "%s/%s/%s/%s" % (base, self.repo, self.commit, self.path)
        return _RAW % (self.repo, self.commit, self.path)

    @property
    def filename(self):
        """Name of the downloaded file in the cache (tag and blob id make it unique)."""
        ext = self.path.rsplit(".", 1)[-1]
        return "%s-%s.%s" % (self.tag, self.blob[:8], ext)

    @property
    def pretrained_cfg(self):
        """Its :class:`~resattn.models.pretrained.PretrainedCfg` (the preprocessing it expects)."""
        from .pretrained import PretrainedCfg
        return PretrainedCfg.from_weights(self)

    def transforms(self, is_training=False):
        """The transform its images need (torchvision's ``weights.transforms()``)."""
        return self.pretrained_cfg.transforms(is_training=is_training)

    def provenance(self):
        """Where the file comes from and what its authors claim of it."""
        return {"tag": self.tag, "url": self.url, "repo": self.repo, "commit": self.commit,
                "path": self.path, "blob": self.blob, "source": self.source,
                "claimed_top1": self.accuracy, "measured": self.measured, "note": self.note}


_REGISTRY = {}


def register_weights(entry):
    """Add a :class:`Weights` entry (its tag must be new); returns it."""
    if not isinstance(entry, Weights):
        raise TypeError("register_weights takes a Weights entry, got %r" % (entry,))
    if entry.tag in _REGISTRY:
        raise ValueError("weights tag %r is already registered" % entry.tag)
    if entry.default and default_weights(entry.model, missing_ok=True) is not None:
        raise ValueError("model %r already has default weights (%s)"
                         % (entry.model, default_weights(entry.model).tag))
    _REGISTRY[entry.tag] = entry
    return entry


def _tags():
    """Tags of the registered weights, in registration order."""
    return list(_REGISTRY)


def list_weights(model=None):
    """The registered :class:`Weights` (of ``model`` only, if given), in registration order."""
    return [w for w in _REGISTRY.values() if model is None or w.model == model]


def get_weights(tag):
    """The entry of ``tag``; an unknown tag is a ValueError listing the known ones."""
    if isinstance(tag, Weights):
        return tag
    try:
        return _REGISTRY[tag]
    except (KeyError, TypeError):
        close = difflib.get_close_matches(str(tag), list(_REGISTRY), n=3)
        raise ValueError("unknown weights %r%s; published weights: %s (resattn list "
                         "--pretrained)" % (tag, " (did you mean %s?)" % ", ".join(close)
                                            if close else "", ", ".join(_REGISTRY))) from None


def default_weights(model, missing_ok=False):
    """The entry ``pretrained=True`` loads for ``model``; None or a ValueError without one."""
    for entry in _REGISTRY.values():
        if entry.model == model and entry.default:
            return entry
    if missing_ok:
        return None
    with_weights = sorted({w.model for w in _REGISTRY.values()})
    raise ValueError("no published weights for %r (models with weights: %s); pass a tag or "
                     "a file path as pretrained=..." % (model, ", ".join(with_weights) or
                                                        "none"))


_SEED = "PistonY/ResidualAttentionNetwork"
_MEASURED = ("by the authors: CIFAR-10 test set (10,000 images), one 32x32 view each, the best "
             "checkpoint of the run chosen on that test set (the number is in the file name)")
_SEED_NOTE = ("Gluon implementation's %s; saved with Gluon's save_parameters from the model "
              "code of %s")
_OLD = "6c48813 (ResidualAttentionModel_92_32input_update)"
_NEW = "8574060 on (ResidualAttentionModel_32input(additional_stage=True))"


#: Bytes of a ``save_parameters`` file of each naming: 750 float32 arrays, the same shapes,
#: names 170 bytes longer in all at 6c48813 (tests/test_hub.py recomputes them).
_SEED_SIZE = {_OLD: 48_994_898, _NEW: 48_994_728}


def _seed(accuracy, commit, path, blob, recipe, code, default=False):
    return register_weights(Weights(
        tag="seed-%.2f" % accuracy, model="attention92_cifar",
        arch={"variant": "gluoncv", "classes": 10}, source="seed", input_size=32, scale=255.0,
        mean=_stats.IMAGENET[0], std=_stats.IMAGENET[1], class_names=CIFAR10_CLASSES,
        repo=_SEED, commit=commit, path=path, blob=blob, accuracy=accuracy,
        measured=_MEASURED, default=default, note=_SEED_NOTE % (recipe, code),
        size=_SEED_SIZE[code]))


_seed(95.41, "444d42422f19aaf9b88239736e0dbf9cf703d16e",
      "cifar_param/test_iter198999_0.95410.param", "e2e9eb3e390e47862c9aa63c18fc133714483475",
      "first published result (its README's 95.41%)", _OLD)
_seed(95.65, "505af36bc2b0377578a09f28b3f823336edd32e6",
      "cifar_param/test_iter205999_0.95650.param", "d9a77b9e0fe5d47a5932ea6776130e782d22a858",
      "run", _OLD)
_seed(95.68, "519725f028b914f5bb6ab8efdba02b1b300d1aef",
      "cifar_param/test_iter233999_0.95680.param", "d993ef832ea1d24d6820365633a05f7df9c601e6",
      "run with MSRAPrelu initialisation", _OLD)
_seed(96.57, "6b390fbe610158b21a4fdc8c67bf3716ad09a697",
      "cifar_param/test_iter228999_0.96570.param", "caf12fec216cdb5301ee69cd1ac2cf3edd750f1e",
      "run with mixup", _OLD)
_seed(96.65, "857406012ef92a017bd4196df4a7700d341f4f6a",
      "cifar_param/test_iter254999_0.96650.param", "374846578c70f1b25f46a696b9de84a6317c0fd6",
      "run", _NEW)
_seed(96.98, "9aa6552f025a5a7927b16f924cd434330c53c723",
      "cifar_param/test_iter124020_0.96980.param", "7013b7a7f7346e0ff0dd6aed8c5e7e6d46ff097c",
      "run", _NEW)
_seed(97.00, "14e2c40d136f3958da498a305850ab2bd1d4f613",
      "cifar_param/test_iter59475_0.97000.param", "ebf42af744cd00905a13583b92f645ab65abf32d",
      "run", _NEW)
_seed(97.14, "6200f0769f0d5ab9cffba46a9250df9fa5aaea77",
      "cifar_param/test_epoch215_0.97140.param", "da69d2712986e1bcf9b94049f8bcbc8df5839d8f",
      "best run (also at commit cfa4d45 under cifar_param/cifar_att92/, the only file still "
      "in the repository's current tree)", _NEW, default=True)
register_weights(Weights(
    tag="pytorch-95.4", model="attention92_cifar", arch={"variant": "gluoncv", "classes": 10},
    source="pytorch", input_size=32, scale=255.0, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
    class_names=CIFAR10_CLASSES, repo="tengshaofeng/ResidualAttentionNetwork-pytorch",
    commit="fd627b603a01ae69d4a1c1092601e6b1575cd0fa",
    path="Residual-Attention-Network/model_92_sgd.pkl",
    blob="3ab391d84690a68f733d42cfd0418df8f07c7775", accuracy=95.4,
    measured="by the authors: CIFAR-10 test set, one 32x32 view each (README: 0.954)",
    note="PyTorch reference's ResidualAttentionModel_92_32input_update state_dict, a torch "
         "0.3/0.4 pickle written by Python 2 with CUDA storages; trained on pixels / 255 "
         "without mean/std normalisation",
    size=80_114_481))


#: Preprocessing of each implementation's CIFAR files: (mean, std) of images in [0, 1];
#: None: the model's own (GluonCV's scripts normalise with the statistics resattn's specs
#: hold, CIFAR-10's on CIFAR and ImageNet's on ImageNet).
SOURCE_NORMALIZATION = {"seed": _stats.IMAGENET, "pytorch": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
                        "gluoncv": None}


def find_weights(blob):
    """The published entry whose file has git blob id ``blob``, or None."""
    for entry in _REGISTRY.values():
        if entry.blob == blob:
            return entry
    return None
