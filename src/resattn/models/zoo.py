"""Model zoo: one spec table, a registry, ``get_model`` and pretrained weights.

Every zoo model is described once, in :data:`MODEL_SPECS`: its architecture,
the preprocessing its weights expect, the paper's figures and the accuracy
published for it. A builder is generated for each and registered with that
spec bound (:func:`resattn.models.register_model`), so
``resattn.models.zoo.attention92_cifar()`` and ``get_model('attention92_cifar')``
are the same thing.
"""
import difflib
import functools
import inspect
import os

from .. import _stats
from ..io import (config_path, load_parameters, read_params, read_weights_config, save_weights,
                  sha1_file)
from ._registry import get_spec, list_models, register_alias, register_model, resolve
from .blocks import PostActResNeXtUnit, ResNeXtUnit, ResidualUnit
from .network import ResidualAttentionNet
from .weights import Weights, default_weights, get_weights, weights_tags

__all__ = ["MODEL_SPECS", "GLUONCV_ALIASES", "get_model", "get_model_list", "get_model_spec", "register_model",
           "model_config", "load_pretrained", "fetch_weights", "short_hash"]

_IMAGENET = dict(stem="imagenet", stem_channels=64, widths=(256, 512, 1024, 2048),
                 stages=(1, 2, 3), final_stride=2, variant="official", classes=1000,
                 input_size=224, mean=_stats.IMAGENET[0], std=_stats.IMAGENET[1])
# The lineage of GluonCV's cifar_residualattentionnet*, the Gluon implementation
# (95.41% on CIFAR-10 with Attention-92) and the PyTorch reference: no stem
# pooling, masks with 2, 1, 0 poolings at 32, 16, 8 pixels.
_CIFAR = dict(stem="cifar", stem_channels=32, widths=(128, 256, 512, 1024), stages=(2, 3, 4),
              final_stride=1, variant="gluoncv", classes=10, input_size=32,
              mean=_stats.CIFAR10[0], std=_stats.CIFAR10[1])
# The paper's own CIFAR networks (Tables 4 and 5) are far thinner and their
# widths are not published. No single set of widths meets all three reported
# counts with this structure; 64/144/224 for the stages and 256 for the final
# units come closest: 2.06M / 4.67M / 9.04M parameters for Attention-92 / 236 /
# 452 against the paper's 1.9M / 5.1M / 8.6M (+8.6%, -8.5%, +5.1%).
_CIFAR_PAPER = dict(_CIFAR, stem_channels=16, widths=(64, 144, 224, 256), variant="official")


def _spec(base, modules, ptr=(1, 2, 1), **extra):
    spec = dict(base, modules=modules, p=ptr[0], t=ptr[1], r=ptr[2])
    spec.update(extra)
    return spec


_A92_CIFAR = ("CIFAR-10 top-1 95.41% (Gluon implementation, PistonY/ResidualAttentionNetwork "
              "README); 95.4% (PyTorch reference model_92_sgd.pkl, tengshaofeng/"
              "ResidualAttentionNetwork-pytorch)")

#: Every zoo model: network arguments, ``input_size``, ``mean`` and ``std``
#: (the preprocessing its weights expect), ``classes`` and, where known,
#: ``paper_params`` (millions), ``paper_macs`` (G multiply-accumulates at
#: ``input_size``), ``published`` (accuracy published for the architecture)
#: and ``weights`` (SHA-1 of a published resattn file; none yet: convert the
#: other implementations' files with :func:`resattn.models.convert.load_params`).
MODEL_SPECS = {
    "attention56": _spec(_IMAGENET, (1, 1, 1), paper_params=31.9, paper_macs=6.2,
                         prototxt_params=31.81,
                         published="ImageNet top-1 error 21.76% (paper, Table 7)"),
    "attention92": _spec(_IMAGENET, (1, 2, 3), paper_params=51.3, paper_macs=10.4,
                         prototxt_params=52.47,
                         published="ImageNet top-1 error 19.5% (paper, Table 7)"),
    "attention128": _spec(_IMAGENET, (2, 3, 4)),
    "attention164": _spec(_IMAGENET, (3, 4, 5)),
    "attention200": _spec(_IMAGENET, (4, 5, 6)),
    "attention236": _spec(_IMAGENET, (5, 6, 7)),
    "attention452": _spec(_IMAGENET, (5, 6, 7), (2, 4, 3)),
    # AttentionNeXt: the post-activation ResNeXt units of the authors' prototxts.
    "attentionnext56": _spec(_IMAGENET, (1, 1, 1), unit="resnext", paper_params=31.9,
                             paper_macs=6.3, prototxt_params=31.32,
                             published="ImageNet top-1 error 21.2% (paper, Table 7)"),
    "attentionnext92": _spec(_IMAGENET, (1, 2, 3), unit="resnext", prototxt_params=52.10),
    "attention56_cifar": _spec(_CIFAR, (1, 1, 1)),
    "attention92_cifar": _spec(_CIFAR, (1, 2, 3), published=_A92_CIFAR),
    "attention452_cifar": _spec(_CIFAR, (5, 6, 7), (2, 4, 3)),
    "attention92_cifar_paper": _spec(_CIFAR_PAPER, (1, 2, 3), paper_params=1.9,
                                     published="CIFAR-10 error 4.99% (paper, Table 5)"),
    "attention236_cifar_paper": _spec(_CIFAR_PAPER, (5, 6, 7), paper_params=5.1,
                                      published="CIFAR-10 error 4.14% (paper, Table 5)"),
    "attention452_cifar_paper": _spec(_CIFAR_PAPER, (5, 6, 7), (2, 4, 3), paper_params=8.6,
                                      published="CIFAR-10 error 3.90% (paper, Table 5)"),
}

#: Keys of a spec that are :class:`ModelSpec` fields; the rest are architecture.
_SPEC_FIELDS = ("input_size", "mean", "std", "classes", "variant", "paper_params", "paper_macs",
                "prototxt_params", "published", "weights")


def get_model_list():
    """Names of all registered models, in registration order."""
    return list_models()


def get_model_spec(name):
    """Architecture and preprocessing of ``name`` as one dict (a copy)."""
    spec = get_spec(name)
    out = dict(spec.arch)
    for key, value in spec.config().items():
        if key != "published":
            out[key] = value
    return out


def model_config(name):
    """Preprocessing and provenance of a model: input size, mean, std, classes, variant.

    Also the paper's ``paper_params`` / ``paper_macs`` where it reports them
    and ``published``, the accuracy published for the architecture.
    """
    return get_spec(name).config()


def _scale(width, mult, multiple):
    return max(multiple, int(round(width * mult / multiple)) * multiple)


#: Keyword arguments of every zoo builder besides :class:`ResidualAttentionNet`'s own.
_BUILDER_KEYS = ("width_mult", "last_gamma", "prefix", "params")


#: Every keyword argument a zoo builder accepts.
_ACCEPTED = sorted(set(inspect.signature(ResidualAttentionNet.__init__).parameters)
                   - {"self", "kwargs"} | set(_BUILDER_KEYS))


#: Largest ``width_mult``: widths scale by it and parameters by its square, so 8x is 64x
#: the parameters (attention92: 3.2 G, 12.9 GB of float32 weights before any gradient or
#: activation), beyond what an accelerator trains; larger values would only exhaust memory.
MAX_WIDTH_MULT = 8.0


def _build(arch, width_mult=1.0, last_gamma=False, **kwargs):
    """:class:`ResidualAttentionNet` of a spec's architecture, widths scaled by ``width_mult``;
    ``last_gamma`` zero-initialises the last BatchNorm of every residual unit."""
    unknown = sorted(set(kwargs) - set(_ACCEPTED))
    if unknown:
        raise ValueError("unknown keyword argument%s %s; a zoo model accepts: %s, and "
                         "get_model's pretrained, ctx, root"
                         % ("s" if len(unknown) > 1 else "", ", ".join(unknown),
                            ", ".join(_ACCEPTED)))
    spec = dict(arch)
    resnext = spec.pop("unit", "residual") == "resnext"
    net_kw = dict(spec)
    unit = kwargs.pop("unit", PostActResNeXtUnit if resnext else ResidualUnit)
    if width_mult != 1.0:
        if isinstance(width_mult, bool) or not isinstance(width_mult, (int, float)) \
                or not 0 < width_mult <= MAX_WIDTH_MULT:  # also refuses nan and inf
            why = ""
            if isinstance(width_mult, (int, float)) and not isinstance(width_mult, bool):
                if width_mult in (float("inf"), float("-inf")) or width_mult != width_mult:
                    why = " (not a finite number)"
                elif MAX_WIDTH_MULT < width_mult < 1e100:
                    why = (" (parameters grow with its square: %g x the widths would be %.3g x "
                           "the parameters)" % (width_mult, float(width_mult) ** 2))
            raise ValueError("width_mult must be a number in (0, %g], got %r%s"
                             % (MAX_WIDTH_MULT, width_mult, why))
        # ResNeXt widths must stay multiples of 2 * cardinality (bottleneck = width / 2).
        cardinality = max(1, int(round(32 * width_mult)))
        multiple = 2 * cardinality if resnext else 4
        net_kw["widths"] = tuple(_scale(w, width_mult, multiple) for w in spec["widths"])
        net_kw["stem_channels"] = _scale(spec["stem_channels"], width_mult, 1)
        if resnext and unit in (PostActResNeXtUnit, ResNeXtUnit):
            unit = functools.partial(unit, cardinality=cardinality)
    if last_gamma:
        unit = functools.partial(unit, last_gamma=True)
    net_kw.update(kwargs, unit=unit)
    return ResidualAttentionNet(**net_kw)


def short_hash(name):
    """First 8 hex digits of the SHA-1 of ``name``'s own resattn file (``ModelSpec.weights``)."""
    sha1 = get_spec(name).weights
    if not sha1:
        with_weights = sorted(n for n in list_models() if get_spec(n).weights)
        raise ValueError("no resattn weight file registered for %r (models with one: %s); "
                         "published weights of other implementations: resattn list "
                         "--pretrained" % (name, ", ".join(with_weights) or "none"))
    return sha1[:8]


class _Pretrained:
    """What ``pretrained=`` resolved to: a published entry, or a file (with its config)."""

    def __init__(self, name, pretrained, source=None):
        self.name, self.source = name, source
        self.entry = self.path = self.config = None
        if pretrained is True:
            self.entry = default_weights(name, missing_ok=True)
            if self.entry is None:
                if get_spec(name).weights:
                    self.path = True  # the model's own file under root (ModelSpec.weights)
                    return
                default_weights(name)  # raises, listing the models that have weights
        elif isinstance(pretrained, Weights) or (isinstance(pretrained, str)
                                                 and pretrained in weights_tags()):
            self.entry = get_weights(pretrained)
            if self.entry.model != name:
                raise ValueError("weights %r are for %s, not %s: get_model(%r, pretrained=%r)"
                                 % (self.entry.tag, self.entry.model, name, self.entry.model,
                                    self.entry.tag))
        elif isinstance(pretrained, (str, os.PathLike)):
            self.path = os.fspath(pretrained)
            if not os.path.isfile(self.path):
                close = difflib.get_close_matches(self.path, weights_tags(), n=3)
                raise ValueError("pretrained=%r: no such file, nor a published weights tag%s "
                                 "(%s)" % (self.path, ", did you mean %s?" % " or ".join(close)
                                           if close else "", ", ".join(weights_tags())))
            self.config = read_weights_config(self.path)
            if self.config is not None and self.config["model"] != name:
                raise ValueError("%s holds weights of %s (its config %s says so), not %s"
                                 % (self.path, self.config["model"], config_path(self.path),
                                    name))
        else:
            raise ValueError("pretrained must be False, True, a weights tag (%s) or a path, got "
                             "%r" % (", ".join(weights_tags()) or "none", pretrained))

    @property
    def arch(self):
        if self.entry is not None:
            return dict(self.entry.arch)
        return dict(self.config["arch"]) if self.config else {}

    def what(self):
        return ("weights %r" % self.entry.tag) if self.entry else (
            "%s (config %s)" % (self.path, config_path(self.path)))

    def merge(self, implied, user):
        """Builder arguments: the alias's, then the weights', then the user's, which may not
        contradict the weights'."""
        arch = self.arch
        clash = ["%s=%r (the weights need %r)" % (k, user[k], arch[k])
                 for k in sorted(set(arch) & set(user)) if user[k] != arch[k]]
        if clash:
            raise ValueError("%s contradict%s %s; leave %s out, or build the model yourself and "
                             "call resattn.io.load_parameters(net, path) to load the weights "
                             "into another architecture on purpose"
                             % (", ".join(clash), "s" if len(clash) == 1 else "", self.what(),
                                "it" if len(clash) == 1 else "them"))
        return dict(implied, **dict(arch, **user))

    def load(self, net, ctx=None, root=None):
        if self.entry is not None:
            path = fetch_weights(self.entry, root=root, net=net, ctx=ctx)
            load_parameters(net, path, ctx=ctx)
            return path
        return load_pretrained(net, self.name, True if self.path is True else self.path,
                               ctx=ctx, root=root, source=self.source)


def fetch_weights(weights, root=None, progress=True, net=None, ctx=None):
    """The resattn file of published weights: downloaded, verified and converted once.

    The published file is downloaded into the cache (``root``, else
    ``$RESATTN_HOME``, else ``~/.resattn``; see :mod:`resattn.hub`) and
    verified by its git blob id; it is converted to resattn's names once, and
    the converted file (``<tag>-<blob[:8]>.resattn.params``, with its config
    beside it) is what later calls return, offline.

    Parameters
    ----------
    weights : str or Weights
        A tag (``resattn list --pretrained``) or an entry.
    root : str, optional
        Cache folder.
    progress : bool
        Show a download progress bar.
    net : ResidualAttentionNet, optional
        The network to convert into (built from the entry when not given).

    Returns
    -------
    str
        Path of the converted ``.params`` file.
    """
    from .. import hub
    entry = get_weights(weights)
    folder = os.path.join(hub.cache_dir(root), "weights")
    converted = os.path.join(folder, "%s-%s.resattn.params" % (entry.tag, entry.blob[:8]))
    if os.path.isfile(converted):
        try:
            config = read_weights_config(converted)
        except ValueError:
            config = None  # corrupted: convert again
        if config and (config.get("provenance") or {}).get("blob") == entry.blob:
            return converted
    raw = hub.download(entry.url, entry.blob, filename=entry.filename, root=root,
                       progress=progress)
    from .convert import load_params
    if net is None:
        net = get_model(entry.model, **entry.arch)
    load_params(net, raw, entry.source, ctx=ctx)
    save_weights(net, converted, entry.model, arch=entry.arch,
                 preprocessing=entry.preprocessing(), class_names=entry.class_names,
                 provenance=entry.provenance())
    return converted


def load_pretrained(net, name, pretrained, ctx=None, root=None, source=None):
    """Load weights into ``net``: ``True`` for the model's own resattn file, or a path.

    ``True`` looks for ``{root}/{name}-{sha1[:8]}.params`` (``ModelSpec.weights``)
    and checks its SHA-1. A path with ``source`` (an alias's naming scheme, e.g.
    ``'gluoncv'``) is read as that implementation's file unless it holds
    resattn's own names. Published weights of other implementations are
    loaded by tag through :func:`get_model` (``pretrained='seed-97.14'``).
    """
    if pretrained is True:
        expected = get_spec(name).weights
        root = os.path.expanduser(root or os.path.join("~", ".mxnet", "models"))
        path = os.path.join(root, "%s-%s.params" % (name, short_hash(name)))
        if not os.path.isfile(path):
            raise ValueError("pretrained weights for %r not found at %s; place the published "
                             "file there (SHA-1 %s) or pass its path as pretrained="
                             % (name, path, expected))
        got = sha1_file(path)
        if got != expected:
            raise ValueError("SHA-1 mismatch for %s: expected %s, got %s (corrupted or a "
                             "different file)" % (path, expected, got))
    elif isinstance(pretrained, (str, os.PathLike)):
        path = os.fspath(pretrained)
        if not os.path.isfile(path):
            raise ValueError("pretrained=%r: no such file" % path)
    else:
        raise ValueError("pretrained must be False, True or a path to a .params file, got %r"
                         % (pretrained,))
    if source is not None and "output.weight" not in read_params(path):
        from .convert import load_params
        load_params(net, path, source, ctx=ctx)
    else:
        read_weights_config(path)  # a file that does not match its config is refused
        load_parameters(net, path, ctx=ctx)
    return path


def get_model(name, pretrained=False, ctx=None, root=None, **kwargs):
    """Build a registered model.

    Parameters
    ----------
    name : str
        A name from :func:`get_model_list`.
    pretrained : bool, str or Weights, default False
        ``True`` loads the model's default published weights
        (``resattn list --pretrained``), a tag such as ``'seed-95.41'`` those
        weights, and a path that file. Published weights are downloaded into
        the cache once (``root``), verified by their git blob id and converted
        once. The architecture arguments the weights need (their config:
        ``variant``, ``classes``, ...) are applied; ``kwargs`` that contradict
        them are refused. Models without published weights say so.
    ctx : Context, default ``mx.cpu()``
        Where the loaded parameters live.
    root : str, default ``$RESATTN_HOME`` or ``~/.resattn``
        Cache of downloaded weights.
    **kwargs
        Overrides of :class:`ResidualAttentionNet` arguments (``classes``,
        ``attention``, ``learning``, ``variant``, ``norm_layer``, ...) and
        ``width_mult`` to scale every width (for quick experiments).

    Examples
    --------
    >>> net = get_model('attention56_cifar', classes=100)
    >>> net.output
    Dense(1024 -> 100, linear)
    """
    spec, implied, source = resolve(name)
    plan = None
    if pretrained is not False and pretrained is not None:
        plan = _Pretrained(spec.name, pretrained, source)
        net_kwargs = plan.merge(implied, kwargs)
    else:
        net_kwargs = dict(implied, **kwargs)
    net = spec.builder(**net_kwargs)
    if plan is not None:
        plan.load(net, ctx=ctx, root=root)
    return net


def _make_builder(name, spec):
    depth = name.split("_")[0].replace("attentionnext", "").replace("attention", "")
    family = "AttentionNeXt" if name.startswith("attentionnext") else "Attention"
    arch = {k: v for k, v in spec.items() if k not in _SPEC_FIELDS or k in ("classes", "variant")}

    def builder(**kwargs):
        return _build(arch, **kwargs)

    builder.__name__ = builder.__qualname__ = name
    builder.__doc__ = (
        "%s-%s (%s, %s variant): modules per stage %s, p, t, r = %d, %d, %d, widths %s, "
        "input %d.\n\n    Keyword arguments override :class:`ResidualAttentionNet` arguments; "
        "see :func:`get_model`.\n    " % (family, depth, spec["stem"], spec["variant"],
                                          spec["modules"], spec["p"], spec["t"], spec["r"],
                                          spec["widths"], spec["input_size"]))
    fields = {k: v for k, v in spec.items() if k in _SPEC_FIELDS}
    return register_model(name, arch=arch, **fields)(builder)


for _name, _entry in MODEL_SPECS.items():
    globals()[_name] = _make_builder(_name, _entry)
    __all__.append(_name)
del _name, _entry


#: GluonCV 0.10's names of the same networks: each builds the resattn model with GluonCV's
#: mask wiring, and a GluonCV parameter file loads into it as it is (``pretrained=PATH``).
#: GluonCV's Attention-452 (one post-processing unit after two pre-processing ones) has no
#: resattn counterpart, so it has no alias.
GLUONCV_ALIASES = {"cifar_residualattentionnet56": "attention56_cifar",
                   "cifar_residualattentionnet92": "attention92_cifar"}
GLUONCV_ALIASES.update(("residualattentionnet%d" % d, "attention%d" % d)
                       for d in (56, 92, 128, 164, 200, 236))
for _alias, _target in GLUONCV_ALIASES.items():
    register_alias(_alias, _target, source="gluoncv", variant="gluoncv")
del _alias, _target
