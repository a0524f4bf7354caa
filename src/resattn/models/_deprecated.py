"""Names of resattn 0.1 that 0.2 replaced, kept for one release with a DeprecationWarning.

Each says which name replaces it; they will be removed in 0.3 (CHANGELOG.md).
"""
import os
import warnings

__all__ = ["get_model_list", "get_model_spec", "load_pretrained", "short_hash"]


def _warn(old, new):
    warnings.warn("resattn.%s is deprecated and will be removed in 0.3: use %s" % (old, new),
                  DeprecationWarning, stacklevel=3)


def get_model_list():
    """Deprecated: :func:`resattn.list_models`."""
    _warn("get_model_list", "resattn.list_models()")
    from ._registry import list_models
    return list_models()


def get_model_spec(name):
    """Deprecated: :func:`resattn.models.get_spec` (architecture in ``.arch``, the rest in
    ``.config()``)."""
    _warn("get_model_spec", "resattn.models.get_spec(name)")
    from ._registry import get_spec
    spec = get_spec(name)
    out = dict(spec.arch)
    out.update((k, v) for k, v in spec.config().items() if k != "published")
    return out


def load_pretrained(net, name, pretrained, ctx=None, root=None, source=None):
    """Deprecated: :func:`resattn.load_model` or ``get_model(name, pretrained=...)``.

    Loads the file ``pretrained`` into ``net`` (with ``source``'s names where it
    has no resattn names) and returns its path. ``pretrained=True`` named a
    resattn weight file that was never published; it is a ValueError saying so.
    """
    _warn("load_pretrained", "resattn.load_model(path) or get_model(name, pretrained=...)")
    from ..io import load_parameters, read_params, read_weights_config
    if pretrained is True:
        raise ValueError("no resattn weight file was ever published for %r; "
                         "get_model(%r, pretrained=True) loads the published weights of other "
                         "implementations (resattn list --pretrained)" % (name, name))
    if not isinstance(pretrained, (str, os.PathLike)) or not os.path.isfile(pretrained):
        raise ValueError("pretrained=%r: no such file" % (pretrained,))
    path = os.fspath(pretrained)
    if source is not None and "output.weight" not in read_params(path):
        from .convert import load_params
        load_params(net, path, source, ctx=ctx)
    else:
        read_weights_config(path)  # a file that does not match its config is refused
        load_parameters(net, path, ctx=ctx)
    return path


def short_hash(name):
    """Deprecated: there are no resattn weight files to hash; always a ValueError."""
    _warn("short_hash", "the published tags (resattn list --pretrained)")
    raise ValueError("no resattn weight file registered for %r: published weights of other "
                     "implementations are listed by resattn list --pretrained" % (name,))
