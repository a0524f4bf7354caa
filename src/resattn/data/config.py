"""The data config of a network's weights (timm's ``resolve_data_config``).

:func:`resolve_data_config` reads ``net.pretrained_cfg``
(:class:`~resattn.models.PretrainedCfg`) and gives the keyword arguments of
:func:`~resattn.data.create_transform`; command-line flags (or a dict) may
change them, but only where the user says so (``override``, the CLI's
``--override-config``) when the network carries trained weights.
"""
from ..models.pretrained import PretrainedCfg

__all__ = ["resolve_data_config", "DATA_KEYS"]

#: The keys of a data config, in :func:`~resattn.data.create_transform`'s order.
DATA_KEYS = ("input_size", "mean", "std", "crop_mode", "crop_pct", "interpolation")


def _given(args):
    if args is None:
        return {}, False
    if isinstance(args, dict):
        values = dict(args)
    else:  # an argparse.Namespace, or any object with the attributes
        values = {k: getattr(args, k) for k in DATA_KEYS + ("override_config",)
                  if hasattr(args, k)}
    override = bool(values.pop("override_config", False) or values.pop("override", False))
    unknown = sorted(set(values) - set(DATA_KEYS))
    if unknown:
        raise ValueError("resolve_data_config: unknown key%s %s; known: %s"
                         % ("s" if len(unknown) > 1 else "", ", ".join(unknown),
                            ", ".join(DATA_KEYS)))
    return {k: v for k, v in values.items() if v is not None}, override


def resolve_data_config(args=None, pretrained_cfg=None, model=None, override=False):
    """The data config (``input_size``, ``mean``, ``std``, ``crop_mode``, ``crop_pct``,
    ``interpolation``) of a network's weights.

    Parameters
    ----------
    args : dict or argparse.Namespace, optional
        Values that replace the weights' (``None`` ones are ignored); an
        ``override_config`` (or ``override``) entry set to True allows them.
    pretrained_cfg : PretrainedCfg, optional
        Used when ``model`` is not given.
    model : mxnet.gluon.Block, optional
        A network; its ``pretrained_cfg`` is read.
    override : bool
        Let ``args`` change the preprocessing of trained weights. Without it,
        a value that differs from the weights' is a ValueError (a network
        without weights takes any).

    Returns
    -------
    dict
        Keyword arguments of :func:`~resattn.data.create_transform`; ``mean``
        and ``std`` are for images in [0, 1].

    Examples
    --------
    >>> import resattn
    >>> net = resattn.get_model('attention56_cifar')
    >>> cfg = resolve_data_config(model=net)
    >>> cfg['input_size'], cfg['crop_mode'], cfg['mean']
    (32, 'squash', (0.4914, 0.4822, 0.4465))
    """
    cfg = pretrained_cfg
    if model is not None:
        cfg = getattr(model, "pretrained_cfg", None)
        if cfg is None:
            raise ValueError("%s has no pretrained_cfg: build it with resattn.get_model or "
                             "resattn.load_model, or pass pretrained_cfg=..."
                             % type(model).__name__)
    if cfg is None:
        cfg = PretrainedCfg()
    if not isinstance(cfg, PretrainedCfg):
        raise ValueError("pretrained_cfg must be a resattn PretrainedCfg, got %r" % (cfg,))
    data = cfg.data_config()
    given, override_arg = _given(args)
    trained = not cfg.is_default
    if trained and not (override or override_arg):
        def same(a, b):
            return (tuple(a) if isinstance(a, (list, tuple)) else a) == \
                (tuple(b) if isinstance(b, (list, tuple)) else b)
        clash = ["%s=%r (the weights' %r)" % (k, v, data[k]) for k, v in given.items()
                 if not same(v, data[k])]
        if clash:
            raise ValueError("%s differ%s from the preprocessing of the weights (%s); leave "
                             "%s out, or pass override=True (--override-config)"
                             % (", ".join(clash), "s" if len(clash) == 1 else "",
                                cfg.tag or cfg.file or cfg.model,
                                "it" if len(clash) == 1 else "them"))
    data.update(given)
    return data
