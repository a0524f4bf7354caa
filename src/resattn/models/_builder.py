"""Building networks, with or without weights: the one loader (timm's ``_builder.py``).

:func:`get_model` builds a registered model; with ``pretrained=`` it goes
through :func:`load_model`, which every command and every Python user shares
for published tags, converted files, trained runs (``best.params``) and 0.1
files alike:

1. resolve the weights: a tag is downloaded, verified and converted once
   (:func:`fetch_weights`); a path is read with its weight config
   (:func:`resattn.io.read_weights_config`, every field checked);
2. decide the architecture: the config's model and arguments, the run's
   ``config.json`` for files without one, and the caller's arguments, which
   may not contradict the weights unless ``override=True``;
3. build the network and assign every parameter, names and shapes checked;
4. attach ``net.pretrained_cfg`` (:class:`~resattn.models.pretrained.PretrainedCfg`).
"""
import difflib
import json
import os

from ..io import (assign_parameters, config_path, read_params, read_weights_config,
                  save_weights)
from ._registry import get_spec, resolve
from .pretrained import PretrainedCfg, check_run_config
from .weights import (SOURCE_NORMALIZATION, Weights, _tags, default_weights, find_weights,
                      get_weights)

__all__ = ["get_model", "load_model", "fetch_weights", "convert_file", "attach_cfg",
           "run_config", "resolve_weights", "merge_arch"]


def attach_cfg(net, cfg):
    """Set ``net.pretrained_cfg = cfg`` (a no-op for objects that take no attributes)."""
    try:
        object.__setattr__(net, "pretrained_cfg", cfg)
    except (AttributeError, TypeError):
        pass
    return net


def run_config(params_path):
    """The ``config.json`` that ``resattn train`` wrote beside ``params_path`` ({} if none).

    Its fields that loading reads are checked (:func:`~resattn.models.pretrained.check_run_config`).
    """
    path = os.path.join(os.path.dirname(os.path.abspath(params_path)), "config.json")
    if not os.path.isfile(path):
        return {}
    try:
        with open(path) as f:
            config = json.load(f)
    except RecursionError:
        raise ValueError("cannot read %s: it nests too deeply to be a run config" % path) \
            from None
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ValueError("cannot read %s: %s" % (path, str(err).splitlines()[0])) from None
    return check_run_config(config, path)


# ----------------------------------------------------------------------------- published
def fetch_weights(weights, root=None, progress=True, net=None, ctx=None):
    """The resattn file of published weights: downloaded, verified and converted once.

    The published file is downloaded into the cache (``root``, else
    ``$RESATTN_HOME``, else ``~/.resattn``; see :mod:`resattn.hub`), verified
    by its git blob id and bounded by its recorded size; it is converted to
    resattn's names once, and the converted file
    (``<tag>-<blob[:8]>.resattn.params``, with its config beside it) is what
    later calls return, offline.

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
    ctx : mxnet.Context, optional

    Returns
    -------
    str
        Path of the converted ``.params`` file.
    """
    from .. import hub
    from .convert import load_params
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
                       progress=progress, max_bytes=entry.size)
    if net is None:
        net = _build(entry.model, dict(entry.arch))
    load_params(net, raw, entry.source, ctx=ctx)
    cfg = PretrainedCfg.from_weights(entry)
    save_weights(net, converted, entry.model, arch=entry.arch,
                 preprocessing=cfg.preprocessing(), class_names=entry.class_names,
                 provenance=entry.provenance())
    return converted


def convert_file(model_name, weights, source, out_path, **model_kwargs):
    """Build ``model_name``, load ``weights`` from ``source`` and save a resattn ``.params``
    with its config beside it (``out_path + '.json'``).

    The config records the model, the architecture arguments and the
    preprocessing the weights were trained with: a published file
    (recognised by its git blob id, see :mod:`resattn.models.weights`) brings
    its entry's, any other that of its implementation
    (:data:`~resattn.models.weights.SOURCE_NORMALIZATION`: the seed's
    ImageNet mean and std, the PyTorch reference's pixels / 255), so that
    ``get_model(..., pretrained=out_path)`` and every command apply it. Both
    files are written atomically. The wiring recorded is ``variant='gluoncv'``,
    that of GluonCV, the reference and the seed, unless ``variant`` is given.

    Parameters
    ----------
    model_name : str
        A name from :func:`resattn.list_models`.
    weights : str or os.PathLike
        The foreign file.
    source : {'gluoncv', 'pytorch', 'seed', 'resattn'}
        Whose names it uses (:func:`resattn.models.convert.load_params`).
    out_path : str or os.PathLike
        The ``.params`` file to write.
    **model_kwargs
        Builder arguments (``classes=100``, ...).

    Returns
    -------
    str
        ``out_path``.
    """
    from ..hub import blob_id
    from .convert import check_source, load_params
    check_source(source)
    if source != "resattn":
        # All three foreign implementations wire their masks as variant='gluoncv'.
        model_kwargs.setdefault("variant", "gluoncv")
    net = _build(model_name, model_kwargs)
    load_params(net, weights, source)
    spec = get_spec(model_name)
    arch = dict({"variant": spec.variant, "classes": spec.classes}, **model_kwargs)
    path = os.fspath(weights)
    blob = blob_id(path)
    entry = find_weights(blob)
    if entry is not None and entry.model == spec.name:
        cfg = PretrainedCfg.from_weights(entry)
        arch = dict(entry.arch, **arch)
        provenance = dict(entry.provenance(), converted_from=path)
    else:
        norm = SOURCE_NORMALIZATION.get(source) or (spec.mean, spec.std)
        cfg = PretrainedCfg.for_model(spec).replace(mean=norm[0], std=norm[1])
        if arch["classes"] != 10 or spec.input_size != 32:
            cfg = cfg.replace(class_names=None)
        elif cfg.class_names is None:
            from .weights import CIFAR10_CLASSES
            cfg = cfg.replace(class_names=CIFAR10_CLASSES)
        provenance = {"converted_from": path, "source": source, "blob": blob}
    return save_weights(net, out_path, spec.name, arch=arch, preprocessing=cfg.preprocessing(),
                        class_names=cfg.class_names, provenance=provenance)


# ----------------------------------------------------------------------------- loading
def resolve_weights(weights, root=None, progress=True):
    """``(path, entry or None)`` of a published tag or entry (fetched: downloaded, verified
    and converted once, :func:`fetch_weights`) or a path (which must be a file)."""
    if isinstance(weights, Weights) or (isinstance(weights, str) and weights in _tags()):
        entry = get_weights(weights)
        return fetch_weights(entry, root=root, progress=progress), entry
    if not isinstance(weights, (str, os.PathLike)):
        raise ValueError("weights must be a published tag (%s), a Weights entry or a path to a "
                         ".params file, got %r" % (", ".join(_tags()) or "none", weights))
    path = os.fspath(weights)
    if not os.path.isfile(path):
        close = difflib.get_close_matches(path, _tags(), n=3)
        raise ValueError("%r: no such file, nor a published weights tag%s (%s)"
                         % (path, ", did you mean %s?" % " or ".join(close) if close else "",
                            ", ".join(_tags())))
    return path, None


def merge_arch(what, arch, user, override=False, overridable=True):
    """Builder arguments: the weights' ``arch``, then the caller's ``user``, which may not
    contradict them (unless ``override``); the one check of every loader and command.

    ``what`` names the weights in the error; ``overridable=False`` leaves the
    ``override=True`` advice out of it (for callers that offer no override).
    """
    clash = ["%s=%r (the weights need %r)" % (k, user[k], arch[k])
             for k in sorted(set(arch) & set(user)) if user[k] != arch[k]]
    if clash and not override:
        n = len(clash)
        them = "it" if n == 1 else "them"
        raise ValueError("%s contradict%s %s; leave %s out%s"
                         % (", ".join(clash), "s" if n == 1 else "", what, them,
                            ", or pass override=True (--override-config) to use %s anyway"
                            % them if overridable else ""))
    return dict(arch, **user)


def _build(name, kwargs):
    spec, implied, _ = resolve(name)
    net = spec.builder(**dict(implied, **kwargs))
    return attach_cfg(net, PretrainedCfg.for_model(spec))


def load_model(weights, model=None, ctx=None, root=None, override=False, classes=None,
               progress=True, source=None, **kwargs):
    """A network with trained weights and their preprocessing (``net.pretrained_cfg``).

    Parameters
    ----------
    weights : str, os.PathLike or Weights
        A published tag (``resattn list --pretrained``), or a ``.params`` file:
        one converted by ``resattn convert``, a run's ``best.params`` /
        ``last.params``, a file saved by :func:`resattn.io.save_weights`, or a
        0.1 file.
    model : str, optional
        The registered model (or alias). Needed only for a file with neither a
        weight config nor a run's ``config.json`` beside it; otherwise it must
        agree with theirs (unless ``override``).
    ctx : mxnet.Context, optional
    root : str, optional
        Cache of downloaded weights.
    override : bool
        Let ``model`` and ``kwargs`` override what the weights' config says
        (the CLI's ``--override-config``) instead of refusing them.
    classes : int, optional
        Classifier size where nothing else says (the file's own otherwise).
    progress : bool
        Show download progress.
    source : str, optional
        Whose names a file without resattn's names uses (``'gluoncv'``, ...).
    **kwargs
        Builder arguments (``width_mult``, ``attention``, ...).

    Returns
    -------
    ResidualAttentionNet
        With ``pretrained_cfg``: the weights' preprocessing, class names and
        provenance; for a file without a config, its run's dataset's (from
        ``config.json``) or else the model's documented default, marked in
        ``pretrained_cfg.provenance['preprocessing_from']``.

    Raises
    ------
    ValueError
        An unknown tag or missing file; a config field out of range; a model
        or argument that contradicts the weights; a missing model for a bare
        file; parameters that do not fit (each named).
    """
    if isinstance(weights, Weights) or (isinstance(weights, str) and weights in _tags()):
        # Before any download: arguments that contradict the published entry.
        entry = get_weights(weights)
        merge_arch("weights %r" % entry.tag, dict(entry.arch), kwargs, override)
    path, entry = resolve_weights(weights, root, progress)
    config = read_weights_config(path)
    saved = run_config(path) if config is None else {}
    if config is not None:
        what = "the weights' config %s" % config_path(path)
        if model is not None and get_spec(model).name != config["model"] and not override:
            raise ValueError("%s holds weights of %s (%s says so), not %s; leave the model out, "
                             "or pass override=True (--override-config)"
                             % (path, config["model"], config_path(path), model))
        name = model if (model is not None and override) else config["model"]
        arch = merge_arch(what, dict(config["arch"]), kwargs, override)
    else:
        name = model or saved.get("model")
        if not name:
            raise ValueError("%s has no weight config (%s) and no config.json beside it: pass "
                             "the model (model=..., --model)" % (path, config_path(path)))
        arch = dict(saved.get("model_kwargs") or {}, **kwargs)
    spec, implied, alias_source = resolve(name)
    source = source or alias_source
    arrays = read_params(path)
    if "classes" not in arch:
        weight = arrays.get("output.weight")
        found = saved.get("classes") or (weight.shape[0] if weight is not None else None) \
            or classes
        if found:
            arch["classes"] = int(found)
    net = _build(name, arch)
    if source is not None and source != "resattn" and "output.weight" not in arrays:
        from .convert import load_params
        load_params(net, path, source, ctx=ctx)
    else:
        assign_parameters(net, arrays, ctx=ctx, source=path)
    cfg = _cfg_of(spec, path, config, saved, entry, source)
    return attach_cfg(net, cfg.replace(model=spec.name))


def _cfg_of(spec, path, config, saved, entry, source):
    """The :class:`PretrainedCfg` of weights loaded from ``path``."""
    default = PretrainedCfg.for_model(spec)
    if config is not None:
        cfg = PretrainedCfg.from_config(config, file=path, default=default)
        if config["preprocessing"] is None:
            cfg = cfg.replace(provenance=dict(cfg.provenance,
                                              preprocessing_from="model default"))
        return cfg
    provenance = {"file": path}
    if entry is not None:
        return PretrainedCfg.from_weights(entry, file=path)
    if saved.get("dataset"):  # a 0.1 run: the dataset it was trained on says
        from ..data.registry import dataset_info
        try:
            info = dataset_info(saved["dataset"])
        except ValueError:
            info = None
        if info is not None:
            size = saved.get("image_size") or info["input_size"]
            return default.replace(
                input_size=size, mean=info["mean"], std=info["std"],
                class_names=info.get("class_names"), file=path,
                provenance=dict(provenance, dataset=saved["dataset"],
                                preprocessing_from="run config.json"))
    if source in SOURCE_NORMALIZATION and SOURCE_NORMALIZATION[source]:
        mean, std = SOURCE_NORMALIZATION[source]
        return default.replace(mean=mean, std=std, source=source, file=path,
                               provenance=dict(provenance, preprocessing_from="source " + source))
    return default.replace(file=path, source=source or "resattn",
                           provenance=dict(provenance, preprocessing_from="model default"))


def get_model(name, pretrained=False, ctx=None, root=None, features_only=False, out_indices=None,
              **kwargs):
    """Build a registered model, with published or saved weights if asked.

    Parameters
    ----------
    name : str
        A name from :func:`resattn.list_models` (or a GluonCV alias).
    pretrained : bool, str or Weights, default False
        ``True`` loads the model's default published weights
        (``resattn list --pretrained``), a tag such as ``'seed-95.41'`` those
        weights, and a path that file (:func:`load_model`). The architecture
        arguments the weights need (``variant``, ``classes``, ...) are applied;
        ``kwargs`` that contradict them are refused. Models without published
        weights say so.
    ctx : Context, default ``mx.cpu()``
        Where the loaded parameters live.
    root : str, default ``$RESATTN_HOME`` or ``~/.resattn``
        Cache of downloaded weights.
    features_only : bool, default False
        Return the backbone instead of the classifier (timm's way): a
        :class:`~resattn.models.features.ResidualAttentionFeatures` whose
        forward gives the list of the outputs of the blocks ``out_indices``
        (0 stem, 1..3 the attention stages, 4 the head before its global
        pooling), described by ``net.feature_info``; it shares the classifier's
        parameters (``net.classifier``), so ``pretrained=`` loads them as for
        the classifier.
    out_indices : sequence of int, optional
        With ``features_only``: the blocks whose outputs are returned, in
        increasing order, 0..4 (or -5..-1); default all five.
    **kwargs
        Overrides of :class:`ResidualAttentionNet` arguments (``classes``,
        ``attention``, ``learning``, ``variant``, ``norm_layer``, ...) and
        ``width_mult`` to scale every width (for quick experiments).

    Returns
    -------
    mxnet.gluon.HybridBlock
        With ``pretrained_cfg``: the weights' preprocessing, or the model's default.

    Examples
    --------
    >>> net = get_model('attention56_cifar', classes=100)
    >>> net.output
    Dense(1024 -> 100, linear)
    >>> net.pretrained_cfg.input_size, net.pretrained_cfg.crop_mode
    (32, 'squash')
    """
    if features_only:
        from .features import check_out_indices, feature_net
        indices = check_out_indices(out_indices)  # before building or downloading anything
        net = get_model(name, pretrained=pretrained, ctx=ctx, root=root, **kwargs)
        return feature_net(net, indices)
    if out_indices is not None:
        raise ValueError("out_indices=%r selects feature outputs: pass features_only=True with it"
                         % (out_indices,))
    spec, _, _ = resolve(name)
    if pretrained is False or pretrained is None:
        return _build(name, kwargs)
    if pretrained is True:
        pretrained = default_weights(spec.name)  # raises, listing the models with weights
    elif isinstance(pretrained, Weights) or (isinstance(pretrained, str)
                                             and pretrained in _tags()):
        entry = get_weights(pretrained)
        if entry.model != spec.name:
            raise ValueError("weights %r are for %s, not %s: get_model(%r, pretrained=%r)"
                             % (entry.tag, entry.model, spec.name, entry.model, entry.tag))
    elif not isinstance(pretrained, (str, os.PathLike)):
        raise ValueError("pretrained must be False, True, a weights tag (%s) or a path, got %r"
                         % (", ".join(_tags()) or "none", pretrained))
    return load_model(pretrained, model=name, ctx=ctx, root=root, **kwargs)
