"""Model zoo: one spec table and the builders generated from it.

Every zoo model is described once, in :data:`MODEL_SPECS`: its architecture,
the preprocessing its weights expect, the paper's figures and the accuracy
published for it. A builder is generated for each and registered with that
spec bound (:func:`resattn.models.register_model`), so
``resattn.models.zoo.attention92_cifar()`` and ``get_model('attention92_cifar')``
are the same thing. Building with weights is :mod:`resattn.models._builder`'s.
"""
import functools
import inspect

from .. import _stats
# get_model lives with the loader; it is importable from here as in 0.1 (resattn.zoo.get_model).
from ._builder import get_model
from ._registry import get_spec, register_alias, register_model
from .blocks import PostActResNeXtUnit, ResNeXtUnit, ResidualUnit
from .network import ResidualAttentionNet

__all__ = ["MODEL_SPECS", "GLUONCV_ALIASES", "get_model", "register_model", "model_config"]

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
#: ``input_size``) and ``published`` (accuracy published for the architecture).
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
                "prototxt_params", "published")


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
                         "get_model's pretrained, ctx, root, features_only, out_indices"
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
