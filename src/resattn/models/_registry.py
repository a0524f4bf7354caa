"""The model registry: one :class:`ModelSpec` per name, bound when the builder registers.

Everything resattn knows about a model (its architecture arguments, the
preprocessing its weights expect, the paper's figures, published accuracy
and weight files) lives in that one spec, so a builder registered by a user
with :func:`register_model` works with :func:`model_config`, ``resattn list``
and ``resattn info`` like the zoo's own.
"""
import dataclasses
import difflib
import importlib
import types

from .._stats import IMAGENET

__all__ = ["ModelSpec", "register_model", "register_alias", "get_spec", "resolve",
           "list_models", "list_aliases"]


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """What the registry holds for one model.

    Attributes
    ----------
    name : str
    builder : callable
        ``builder(**kwargs)`` returns the network.
    arch : mapping
        The network's architecture arguments (:class:`ResidualAttentionNet`'s
        for the zoo; empty for builders that take none).
    input_size : int
        Side of the images the model is meant for (and its MACs are counted at).
    mean, std : tuple of 3 float
        Normalisation of images scaled to [0, 1] that its weights expect.
    classes : int
        Default classifier size.
    variant : str or None
        Mask wiring ('official' or 'gluoncv'), where the model has one.
    paper_params, paper_macs : float or None
        Parameters (millions) and multiply-accumulates (G) reported by the paper.
    prototxt_params : float or None
        Parameters (millions) of the authors' Caffe deploy file of the network
        (``imagenet_model/*-deploy.prototxt``), where there is one.
    published : str or None
        Accuracy published for this architecture, with its source.
    """
    name: str
    builder: object
    arch: types.MappingProxyType = dataclasses.field(default_factory=dict)
    input_size: int = 224
    mean: tuple = IMAGENET[0]
    std: tuple = IMAGENET[1]
    classes: int = 1000
    variant: object = None
    paper_params: object = None
    paper_macs: object = None
    prototxt_params: object = None
    published: object = None

    def config(self):
        """Preprocessing and provenance: ``input_size``, ``mean``, ``std``, ``classes``,
        ``variant``, the paper's and the prototxt's figures where there are any,
        and ``published``."""
        cfg = {"input_size": self.input_size, "mean": tuple(self.mean),
               "std": tuple(self.std), "classes": self.classes, "variant": self.variant}
        for key in ("paper_params", "paper_macs", "prototxt_params"):
            if getattr(self, key) is not None:
                cfg[key] = getattr(self, key)
        cfg["published"] = self.published
        return cfg


_REGISTRY = {}
#: alias -> (registered name, builder keyword arguments the alias implies, weight-file source).
_ALIASES = {}


def _with_zoo():
    """The registry, with the zoo's own models registered first (importing it registers them)."""
    importlib.import_module("resattn.models.zoo")
    return _REGISTRY
_FIELDS = tuple(f.name for f in dataclasses.fields(ModelSpec) if f.name not in ("name", "builder"))


def register_model(name=None, **spec):
    """Register a builder under ``name`` (default: the function's name) with its spec.

    Use as ``@register_model`` or ``@register_model('my_net', input_size=32,
    mean=..., std=..., classes=10)``; keyword arguments are the fields of
    :class:`ModelSpec` (unset ones take its defaults). A name registered
    twice is an error.

    Examples
    --------
    >>> from mxnet.gluon import nn
    >>> @register_model('tiny_doc_example', input_size=8, classes=2)
    ... def tiny(classes=2, **kwargs):
    ...     return nn.Dense(classes)
    >>> get_spec('tiny_doc_example').config()['input_size']
    8
    >>> del _REGISTRY['tiny_doc_example']
    """
    if callable(name) and not spec:  # bare @register_model
        return register_model(None)(name)
    unknown = sorted(set(spec) - set(_FIELDS))
    if unknown:
        raise ValueError("register_model: unknown spec fields %s; known: %s"
                         % (", ".join(unknown), ", ".join(_FIELDS)))

    def wrap(fn):
        _with_zoo()
        key = name or fn.__name__
        if not isinstance(key, str) or not key:
            raise ValueError("model name must be a non-empty string, got %r" % (key,))
        if key in _REGISTRY:
            raise ValueError("model %r is already registered" % key)
        fields = dict(spec)
        fields["arch"] = types.MappingProxyType(dict(fields.get("arch") or {}))
        _REGISTRY[key] = ModelSpec(key, fn, **fields)
        return fn
    return wrap


def list_models(filter="", pretrained=False, exclude_filters=""):
    """Names of the registered models, in registration order (timm's ``list_models``).

    Parameters
    ----------
    filter : str or sequence of str
        Shell-style patterns (``'*cifar*'``, ``'attention5?'``); a name is kept
        when it matches any. Empty: every model.
    pretrained : bool
        Only models with published weights (``resattn list --pretrained``).
    exclude_filters : str or sequence of str
        Patterns of names to leave out.

    Examples
    --------
    >>> list_models('*452*')
    ['attention452', 'attention452_cifar', 'attention452_cifar_paper']
    >>> list_models(pretrained=True)
    ['attention92_cifar']
    """
    import fnmatch

    def patterns(value, what):
        value = [value] if isinstance(value, str) else value
        if not isinstance(value, (list, tuple)) or not all(isinstance(p, str) for p in value):
            raise ValueError("%s must be a pattern or a list of patterns, got %r" % (what, value))
        return [p for p in value or () if p]

    include, exclude = patterns(filter, "filter"), patterns(exclude_filters, "exclude_filters")
    names = [n for n in _with_zoo()
             if (not include or any(fnmatch.fnmatchcase(n, p) for p in include))
             and not any(fnmatch.fnmatchcase(n, p) for p in exclude)]
    if pretrained:
        from .weights import list_weights
        with_weights = {w.model for w in list_weights()}
        names = [n for n in names if n in with_weights]
    return names


def register_alias(alias, target, source=None, **kwargs):
    """Let ``alias`` build the registered model ``target`` with ``kwargs``.

    For other implementations' names: GluonCV's ``cifar_residualattentionnet56``
    is ``attention56_cifar`` with ``variant='gluoncv'``, and its weight files
    (``source='gluoncv'``) load without conversion flags.
    """
    if alias in _with_zoo() or alias in _ALIASES:
        raise ValueError("model %r is already registered" % alias)
    get_spec(target)
    _ALIASES[alias] = (target, dict(kwargs), source)


def list_aliases():
    """``{alias: registered name}`` of every alias."""
    _with_zoo()
    return {alias: target for alias, (target, _, _) in _ALIASES.items()}


def _unknown(name):
    names = list(_REGISTRY) + list(_ALIASES)
    close = difflib.get_close_matches(str(name), names, n=3, cutoff=0.5)
    hint = ""
    if close:
        hint = "did you mean %s? " % ", ".join(
            repr(c) + (" (%s)" % _ALIASES[c][0] if c in _ALIASES else "") for c in close)
    return ValueError("unknown model %r; %savailable: %s" % (name, hint, ", ".join(_REGISTRY)))


def resolve(name):
    """``(spec, kwargs, source)`` of a registered name or an alias.

    ``kwargs`` are the builder arguments the alias implies (none for a
    registered name), ``source`` the naming scheme of its weight files
    (None: resattn's own).
    """
    if name in _with_zoo():
        return _REGISTRY[name], {}, None
    if name in _ALIASES:
        target, kwargs, source = _ALIASES[name]
        spec = _REGISTRY[target]
        if "variant" in kwargs:
            spec = dataclasses.replace(spec, variant=kwargs["variant"])
        return spec, dict(kwargs), source
    raise _unknown(name)


def get_spec(name):
    """The :class:`ModelSpec` of ``name`` (or of the model an alias names);
    ValueError with close names if unknown."""
    return resolve(name)[0]
