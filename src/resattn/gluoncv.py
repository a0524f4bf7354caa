"""resattn inside GluonCV: its model zoo, its training scripts, its import.

GluonCV's scripts build networks with ``gluoncv.model_zoo.get_model(name,
**kwargs)``. :func:`register` adds every resattn model (``attention56_cifar``,
``attention92``, ...) to GluonCV's model table, so those scripts, and any code
that calls GluonCV's ``get_model``, build resattn models by name while
GluonCV's own names (``resnet18_v1b`` as a ``--teacher``,
``cifar_residualattentionnet56``) keep building GluonCV's models.
:func:`run_script` (``resattn gluoncv SCRIPT.py ARGS...``) runs an unedited
GluonCV script that way::

    resattn gluoncv train_cifar10.py --model attention56_cifar --num-epochs 200 ...

GluonCV 0.10 refuses to import where PyTorch >= 2 is installed (its check
allows only ``torch<2``) although its MXNet half does not use PyTorch.
:func:`import_gluoncv` imports it anyway by hiding ``torch`` for the
duration of the import; GluonCV's PyTorch models (``gluoncv.torch``) are then
unavailable in that process, everything MXNet works, and ``torch`` itself
imports normally afterwards.

A Residual Attention Network as the backbone of GluonCV's dense models
(``docs/backbone.md``): :func:`faster_rcnn`, :func:`ssd`, :func:`yolov3` and
:func:`center_net` for detection, :func:`fcn`, :func:`pspnet` and
:func:`deeplabv3` for segmentation build GluonCV's own model classes around
a resattn network (published weights, a trained run's ``best.params``, a
name or a network), trained with GluonCV's own target generators and
losses. :func:`backbone` prepares the network with GluonCV's BatchNorm
handling for fine-tuning (``norm='frozen'``: running statistics and affine
parameters fixed, as GluonCV's Faster R-CNN; ``'sync'``: synchronised across
devices, as its ``*_syncbn`` models; ``'batch'``: trained as is) and, for
segmentation, the dilated network (:func:`resattn.models.features.dilate`).
:func:`capture_masks` reads the backbone's soft masks for a dense model's input.
"""
import collections
import math
import os
import runpy
import sys
import warnings

from ._compat import import_gluoncv

__all__ = ["import_gluoncv", "model_table", "register", "run_script", "NORMS", "backbone",
           "backbone_of", "freeze_batchnorm", "sync_batchnorm", "capture_masks", "DenseCapture",
           "faster_rcnn", "ssd", "yolov3", "center_net", "fcn", "pspnet", "deeplabv3"]


def model_table():
    """GluonCV's name -> builder table (the dict ``gluoncv.model_zoo.get_model`` reads).

    It is private to GluonCV (``gluoncv.model_zoo.model_zoo._models``); this is
    the one place resattn touches it, and it fails clearly if GluonCV changes.
    """
    import_gluoncv()
    module = sys.modules.get("gluoncv.model_zoo.model_zoo")
    table = getattr(module, "_models", None)
    if not isinstance(table, dict) or "resnet18_v1b" not in table:
        raise RuntimeError("this GluonCV (%s) has no model table at gluoncv.model_zoo."
                           "model_zoo._models; resattn.gluoncv supports GluonCV 0.10"
                           % getattr(sys.modules.get("gluoncv"), "__version__", "?"))
    return table


def _builder(name):
    from .models import get_model

    def build(**kwargs):
        return get_model(name, **kwargs)
    build.__name__ = build.__qualname__ = name
    build.__doc__ = "resattn's %s (resattn.get_model), for GluonCV's get_model." % name
    build.resattn = True
    return build


def register(names=None):
    """Add resattn models to GluonCV's model table; returns the names added.

    Parameters
    ----------
    names : list of str, optional
        Registered resattn names (default: all). A name GluonCV already has
        is an error, so that none of GluonCV's models is ever replaced.

    Examples
    --------
    >>> from resattn import gluoncv as rg
    >>> added = rg.register()
    >>> net = rg.import_gluoncv().model_zoo.get_model('attention56_cifar', classes=10)
    """
    from .models import list_models
    table = model_table()
    names = list_models() if names is None else list(names)
    unknown = sorted(set(names) - set(list_models()))
    if unknown:
        raise ValueError("not resattn models: %s; available: %s"
                         % (", ".join(unknown), ", ".join(list_models())))
    added = []
    for name in names:
        current = table.get(name)
        if current is not None and not getattr(current, "resattn", False):
            raise ValueError("GluonCV already has a model named %r; resattn does not replace "
                             "GluonCV's models" % name)
        if current is None:
            table[name] = _builder(name)
            added.append(name)
    return added


def run_script(path, argv=()):
    """Run a GluonCV script as ``python PATH ARGV...`` with resattn's models registered.

    The script runs unedited in this process, as ``__main__``, with
    ``sys.argv = [path, *argv]``, after :func:`import_gluoncv` and
    :func:`register`. Returns its exit status (0 when it ends normally).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError("GluonCV script %s: no such file" % path)
    register()
    saved_argv, saved_path = sys.argv, list(sys.path)
    sys.argv = [path] + list(argv)
    sys.path.insert(0, os.path.dirname(os.path.abspath(path)))
    try:
        runpy.run_path(path, run_name="__main__")
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        sys.stderr.write("%s\n" % exc.code)
        return 1
    finally:
        sys.argv, sys.path[:] = saved_argv, saved_path
    return 0


# ----------------------------------------------------------------------------- dense models
#: BatchNorm handling of a backbone: trained as is, frozen (GluonCV's Faster R-CNN
#: fine-tuning: ``use_global_stats`` and fixed affine parameters) or synchronised
#: across devices (``mxnet.gluon.contrib.nn.SyncBatchNorm``, GluonCV's ``*_syncbn`` models).
NORMS = ("batch", "frozen", "sync")

#: Result of :func:`capture_masks`: the dense model's inference ``outputs`` (its own
#: tuple: ids, scores, boxes for detectors; class maps for segmentation) and
#: ``masks``, the backbone's soft masks (:class:`resattn.masks.Mask`, in network order).
DenseCapture = collections.namedtuple("DenseCapture", "outputs masks")
_BACKBONE = "resattn_backbone"


def _batchnorms(block):
    """``[(parent, name, child)]`` of every BatchNorm-like child under ``block``."""
    from mxnet.gluon import nn
    from ._compat import named_children
    found, stack = [], [block]
    while stack:
        parent = stack.pop()
        for name, child in named_children(parent):
            if isinstance(child, nn.BatchNorm):
                found.append((parent, name, child))
            else:
                stack.append(child)
    return found


def freeze_batchnorm(block):
    """Freeze every BatchNorm under ``block``, in place, as GluonCV fine-tunes Faster R-CNN.

    Each one normalises with its running statistics in training too
    (``use_global_stats=True``, GluonCV's ``use_global_stats`` backbones),
    and its scale and shift are not trained (``grad_req='null'``; GluonCV's
    ``train_patterns`` leave them out), so batches of one or two images
    leave the pretrained statistics alone. No parameter is added or renamed.

    Returns
    -------
    int
        The number of BatchNorm layers frozen.
    """
    from ._compat import batchnorm_global_stats, clear_cached_graph, iter_blocks
    norms = _batchnorms(block)
    for _, _, bn in norms:
        batchnorm_global_stats(bn, True)
        for param in (bn.gamma, bn.beta):
            param.grad_req = "null"
    for b in iter_blocks(block):
        if hasattr(b, "_clear_cached_op"):
            clear_cached_graph(b)
    return len(norms)


def sync_batchnorm(block, num_devices):
    """Replace every BatchNorm under ``block`` by a SyncBatchNorm over ``num_devices``, in place.

    ``mxnet.gluon.contrib.nn.SyncBatchNorm`` computes the batch statistics
    over all devices, as GluonCV's ``*_syncbn`` detectors and its
    segmentation training do. Structural parameter names (``...bn1.gamma``)
    and values (scale, shift, running statistics) are kept; eps and momentum
    too.

    Returns
    -------
    int
        The number of layers replaced.

    Raises
    ------
    ValueError
        ``num_devices`` not a positive integer.
    """
    import mxnet as mx
    from mxnet.gluon.contrib.nn import SyncBatchNorm
    from ._compat import batchnorm_kwargs, set_child
    if isinstance(num_devices, bool) or not isinstance(num_devices, int) or num_devices < 1:
        raise ValueError("num_devices must be a positive int (the devices SyncBatchNorm "
                         "synchronises), got %r" % (num_devices,))
    count = 0
    for parent, name, bn in _batchnorms(block):
        if isinstance(bn, SyncBatchNorm):
            continue
        kw = batchnorm_kwargs(bn)
        channels = bn.gamma.shape[0] if bn.gamma.shape else 0
        with parent.name_scope():
            new = SyncBatchNorm(in_channels=channels, num_devices=num_devices,
                                momentum=kw["momentum"], epsilon=kw["eps"],
                                use_global_stats=kw["use_global_stats"])
        try:
            ctx = bn.gamma.list_ctx()
            values = {k: p.data(ctx[0]) for k, p in bn._reg_params.items()}
        except RuntimeError:  # not initialised: the new layer starts as a fresh one
            values = None
        except mx.base.MXNetError:  # deferred: no data yet
            values = None
        if values is not None and all(v is not None for v in values.values()):
            new.initialize(ctx=ctx)
            for k, v in values.items():
                new._reg_params[k].set_data(v)
        for k in ("gamma", "beta"):
            new._reg_params[k].grad_req = bn._reg_params[k].grad_req
        set_child(parent, name, new)
        count += 1
    return count


def _check_norm(norm):
    if norm not in NORMS:
        raise ValueError("norm must be one of %s (BatchNorm trained as is, frozen as GluonCV's "
                         "Faster R-CNN fine-tuning, or synchronised across devices), got %r"
                         % (", ".join(map(repr, NORMS)), norm))


def _initialize_rest(block, init, ctx):
    """Initialise the parameters of ``block`` not initialised yet; the others keep their values.

    A parameter's own initialiser comes first; without one (the layers GluonCV's
    feature expander adds as symbols), scales and variances start at 1, shifts,
    means and biases at 0, and weights with ``init``.
    """
    import mxnet as mx
    from .models.backbone import _uninitialised
    for param in block.collect_params().values():
        if not _uninitialised(param):
            continue
        chosen = None
        if param.init is None:
            name = param.name
            if name.endswith(("gamma", "running_var", "moving_var")):
                chosen = mx.init.One()
            elif name.endswith(("beta", "running_mean", "moving_mean", "bias")):
                chosen = mx.init.Zero()
        param.initialize(chosen, ctx=ctx, default_init=init)


def backbone(model, pretrained=False, norm="batch", num_devices=1, output_stride=None,
             ctx=None, **kwargs):
    """A Residual Attention Network prepared as the backbone of a dense model.

    Parameters
    ----------
    model : str or ResidualAttentionNet
        A zoo name (``'attention56'``; ``resattn.list_models()``), or a
        classification network, e.g. ``resattn.load_model('runs/a56/best.params')``
        (a feature network stands for its ``classifier``). A network is used,
        not copied: the dense model shares its parameters.
    pretrained : bool, str or Weights
        With a name: as :func:`resattn.get_model`'s ``pretrained`` (``True``
        the default published weights, a tag, or the path of a classification
        checkpoint such as a run's ``best.params``). Without weights the
        network is initialised with ``mx.init.MSRAPrelu()``.
    norm : {'batch', 'frozen', 'sync'}
        BatchNorm handling (:data:`NORMS`): trained as is; frozen
        (:func:`freeze_batchnorm`, GluonCV's Faster R-CNN fine-tuning); or
        synchronised over ``num_devices`` (:func:`sync_batchnorm`, GluonCV's
        ``*_syncbn`` models and segmentation training).
    num_devices : int
        Devices a SyncBatchNorm synchronises (``norm='sync'``).
    output_stride : int, optional
        Dilate the later stages to this total stride
        (:func:`resattn.models.features.dilate`; 8 for segmentation).
    ctx : mxnet.Context, default ``mx.cpu()``
    **kwargs
        Builder arguments with a name (``width_mult``, ``classes``, ...).

    Returns
    -------
    ResidualAttentionNet
        Initialised, on ``ctx``.

    Raises
    ------
    ValueError
        An unknown ``norm``, an ``output_stride`` the network cannot give
        (the allowed ones are named), builder arguments or ``pretrained``
        given with a network.
    """
    import mxnet as mx
    from .models import get_model
    from .models.features import ResidualAttentionFeatures, check_network, dilate
    _check_norm(norm)
    ctx = mx.cpu() if ctx is None else ctx
    if isinstance(model, ResidualAttentionFeatures):
        model = model.classifier
    if isinstance(model, str):
        net = get_model(model, pretrained=pretrained, ctx=ctx, **kwargs)
    else:
        check_network(model, "backbone")
        if kwargs or pretrained not in (False, None):
            raise ValueError("backbone: %s given with a network; builder arguments and "
                             "pretrained= go with a model name (or load the network first "
                             "with resattn.load_model)"
                             % ", ".join(sorted(kwargs) + (["pretrained"] if pretrained
                                                            not in (False, None) else [])))
        net = model
    if output_stride is not None:
        dilate(net, output_stride)
    if norm == "sync":
        sync_batchnorm(net, num_devices)
    _initialize_rest(net, mx.init.MSRAPrelu(), ctx)
    if norm == "frozen":
        freeze_batchnorm(net)
    return net


def backbone_of(model):
    """The resattn classification network inside a dense model built here (or the network)."""
    from .models.features import ResidualAttentionFeatures, check_network
    if isinstance(model, ResidualAttentionFeatures):
        return model.classifier
    net = model.__dict__.get(_BACKBONE) if hasattr(model, "__dict__") else None
    if net is None:
        return check_network(model, "backbone_of (a dense model from resattn.gluoncv or a "
                          "ResidualAttentionNet)")
    return net


def _attach(model, net, ctx):
    """Finish a dense model: its other parameters initialised, the backbone recorded."""
    import mxnet as mx
    object.__setattr__(model, _BACKBONE, net)
    cfg = getattr(net, "pretrained_cfg", None)
    if cfg is not None:
        object.__setattr__(model, "pretrained_cfg", cfg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _initialize_rest(model, mx.init.Uniform(), ctx)
        for param in model.collect_params().values():
            try:
                param.reset_ctx(ctx)
            except (ValueError, RuntimeError):
                pass
    return model


def capture_masks(model, x):
    """A dense model's inference outputs on ``x`` and its backbone's soft masks.

    The masks come from the resattn network inside ``model``
    (:func:`backbone_of`) through :func:`resattn.masks.capture`: its blocks
    and parameters are the dense model's own (for SSD, the same parameters
    behind GluonCV's feature expander), in inference mode, so they are the
    masks the model computes for ``x``, named ``'stage{s}.module{k}'``.
    Draw them over the images with :func:`resattn.viz.plot_masks`.

    Parameters
    ----------
    model : HybridBlock
        From :func:`faster_rcnn`, :func:`ssd`, :func:`yolov3`,
        :func:`center_net`, :func:`fcn`, :func:`pspnet` or :func:`deeplabv3`.
    x : NDArray or array_like
        A normalised batch ``(N, 3, H, W)``.

    Returns
    -------
    DenseCapture
        ``outputs`` (the model's own, as NDArrays) and ``masks``.
    """
    import mxnet as mx
    import numpy as np
    from mxnet import autograd
    from ._compat import imperative
    from .masks import capture
    net = backbone_of(model)
    if not isinstance(x, mx.nd.NDArray):
        ctx = next(iter(net.collect_params().values())).list_ctx()[0]
        x = mx.nd.array(np.asarray(x, dtype=np.float32), ctx=ctx)
    # Imperatively: a model hybridized for training (Faster R-CNN and YOLOv3 take targets
    # there) has a cached graph of another signature, which is kept for the next step.
    with imperative(model), autograd.pause(train_mode=False):
        outputs = model(x)
    return DenseCapture(outputs, capture(net, x).masks)


def _strided(info, indices, what):
    strides = [info.reduction(i) for i in range(len(info))]
    for i, (a, b) in enumerate(zip(strides, strides[1:])):
        if b != 2 * a:
            raise ValueError("%s needs outputs whose strides double from one to the next; "
                             "out_indices %s have strides %s" % (what, tuple(indices), strides))
    return strides


def _scaled(values, net, minimum=8):
    """GluonCV's widths for a 2048-channel backbone, scaled to ``net``'s final width."""
    ratio = net.widths[3] / 2048.0
    return tuple(max(minimum, int(round(v * ratio))) for v in values)


def _norm_args(norm, num_devices):
    from mxnet.gluon import nn
    if norm == "sync":
        from mxnet.gluon.contrib.nn import SyncBatchNorm
        return SyncBatchNorm, {"num_devices": num_devices}
    return nn.BatchNorm, None


def faster_rcnn(model, classes, pretrained=False, norm="frozen", num_devices=1, short=600,
                max_size=1000, ctx=None, backbone_kwargs=None, **kwargs):
    """GluonCV's Faster R-CNN on a Residual Attention Network (Ren et al. 2015, the C4 design).

    As GluonCV's ``faster_rcnn_resnet50_v1b_*``: ``features`` are the stem and
    the three attention stages (total stride 16 for the ImageNet models, 4 for
    the CIFAR ones), the RPN and RoIAlign (14 x 14) work on the last stage's
    map, and ``top_features`` are the residual head without its global
    pooling (stride 2 more: 7 x 7 regions), pooled for the box classifier
    and regressor. Train it as GluonCV does: the RPN targets from
    ``gluoncv.data.transforms.presets.rcnn.FasterRCNNDefaultTrainTransform(short,
    max_size, net, ashape=net.ashape)`` (its ``RPNTargetGenerator``), the
    R-CNN targets from the network itself (``rcnn_target``), sigmoid and
    Huber losses for the RPN, softmax and Huber losses for the boxes.

    Parameters
    ----------
    model, pretrained, norm, num_devices
        The backbone (:func:`backbone`); ``norm='frozen'`` by default, as
        GluonCV's Faster R-CNN.
    classes : sequence of str
        Foreground classes.
    short, max_size : int
        Input short side and largest long side (GluonCV's defaults 600, 1000).
    ctx : mxnet.Context, default ``mx.cpu()``
    backbone_kwargs : dict, optional
        Builder arguments of the backbone (``width_mult``, ...).
    **kwargs
        Any :class:`gluoncv.model_zoo.FasterRCNN` argument; the defaults are
        those of ``faster_rcnn_resnet50_v1b_voc`` except ``strides`` (the
        stage's own), ``rpn_channel`` (the stage's width) and ``alloc_size``
        (at least the map of a ``max_size`` image).

    Returns
    -------
    gluoncv.model_zoo.FasterRCNN
        Initialised; :func:`backbone_of` gives the resattn network.
    """
    import mxnet as mx
    import_gluoncv()
    from gluoncv.model_zoo.rcnn.faster_rcnn import FasterRCNN
    from .models.features import trunk_blocks
    ctx = mx.cpu() if ctx is None else ctx
    net = backbone(model, pretrained, norm, num_devices, ctx=ctx, **(backbone_kwargs or {}))
    info = net.feature_info
    stride = info.reduction(3)
    alloc = max(128, int(math.ceil(max_size / float(stride))))
    options = dict(train_patterns=None, nms_thresh=0.3, nms_topk=400, post_nms=100,
                   roi_mode="align", roi_size=(14, 14), strides=stride, clip=None,
                   rpn_channel=info.channels(3), base_size=16, scales=(2, 4, 8, 16, 32),
                   ratios=(0.5, 1, 2), alloc_size=(alloc, alloc), rpn_nms_thresh=0.7,
                   rpn_train_pre_nms=12000, rpn_train_post_nms=2000, rpn_test_pre_nms=6000,
                   rpn_test_post_nms=300, rpn_min_size=16, num_sample=128, pos_iou_thresh=0.5,
                   pos_ratio=0.25, max_num_gt=100)
    options.update(kwargs)
    det = FasterRCNN(features=trunk_blocks(net, 0, 3), top_features=trunk_blocks(net, 4, 4),
                     classes=list(classes), short=short, max_size=max_size, **options)
    return _attach(det, net, ctx)


def _ssd_defaults(base_size, n):
    if n < 2:
        sizes = [0.1 * base_size, 0.96 * base_size]
    else:
        step = (0.88 - 0.2) / max(n - 2, 1)
        sizes = [0.1] + [0.2 + step * k for k in range(n - 1)] + [0.96]
        sizes = [round(s * base_size, 2) for s in sizes]
    if n >= 4:
        ratios = [[1, 2, 0.5]] + [[1, 2, 0.5, 3, 1.0 / 3]] * (n - 3) + [[1, 2, 0.5]] * 2
    else:
        ratios = [[1, 2, 0.5]] * n
    return sizes, ratios


def ssd(model, classes, base_size=512, out_indices=(3, 4), num_filters=None, sizes=None,
        ratios=None, steps=None, pretrained=False, norm="batch", num_devices=1, ctx=None,
        backbone_kwargs=None, **kwargs):
    """GluonCV's SSD (Liu et al. 2016) on a Residual Attention Network, through its expander.

    As GluonCV's ``ssd_512_resnet50_v1_*``: GluonCV's ``FeatureExpander``
    takes the outputs of the blocks ``out_indices`` of the resattn network
    (by default the third attention stage and the head: strides 16 and 32 for
    the ImageNet models) as the base features and appends ``num_filters``
    extra stride-2 layers; each map gets a class and a box predictor. Train
    it with ``gluoncv.model_zoo.ssd.target.SSDTargetGenerator`` and
    ``gluoncv.loss.SSDMultiBoxLoss`` (or GluonCV's ``SSDDefaultTrainTransform``).

    Parameters
    ----------
    model, pretrained, norm, num_devices
        The backbone (:func:`backbone`); ``norm='frozen'`` or ``'batch'`` (the
        expander traces the network into a symbol, so set the BatchNorm
        handling here, not afterwards).
    classes : sequence of str
    base_size : int
        Input size the anchor sizes refer to.
    out_indices : sequence of int
        Feature blocks whose outputs are the base features (0..4).
    num_filters : sequence of int, optional
        Channels of the extra layers; default GluonCV's ``[512, 512, 256,
        256]`` scaled by the backbone's final width / 2048.
    sizes, ratios, steps : optional
        Anchors per map (``len(out_indices) + len(num_filters)`` maps):
        default sizes from 0.1 to 0.96 of ``base_size`` as GluonCV's 512
        presets, its ratios, and steps the maps' strides.
    ctx : mxnet.Context
    backbone_kwargs : dict, optional
    **kwargs
        Any other :class:`gluoncv.model_zoo.ssd.SSD` argument (``min_depth``,
        ``nms_thresh``, ...; ``min_depth`` defaults to the smallest of
        ``num_filters``).

    Returns
    -------
    gluoncv.model_zoo.ssd.SSD
    """
    import mxnet as mx
    import_gluoncv()
    from gluoncv.model_zoo.ssd.ssd import SSD
    from .models.features import ResidualAttentionFeatures, check_out_indices
    ctx = mx.cpu() if ctx is None else ctx
    if norm == "sync":
        raise ValueError("ssd: norm='sync' is not available: GluonCV's feature expander traces "
                         "the backbone into a symbol with plain BatchNorm; use 'batch' or "
                         "'frozen'")
    indices = check_out_indices(out_indices)
    net = backbone(model, pretrained, norm, num_devices, ctx=ctx, **(backbone_kwargs or {}))
    feat = ResidualAttentionFeatures(net, indices)
    outputs = feat(mx.sym.var("data"))
    prefix = net.prefix
    names = []
    for sym in outputs:
        if not sym.name.startswith(prefix):
            raise ValueError("ssd: the output %s of the backbone is not named under its prefix "
                             "%r" % (sym.name, prefix))
        names.append(sym.name[len(prefix):])
    if num_filters is None:
        num_filters = _scaled((512, 512, 256, 256), net, 16)
    num_filters = list(num_filters)
    n = len(names) + len(num_filters)
    default_sizes, default_ratios = _ssd_defaults(base_size, n)
    strides = feat.feature_info.reduction()
    if steps is None:
        steps = list(strides) + [strides[-1] * 2 ** (k + 1) for k in range(len(num_filters))]
    kwargs.setdefault("min_depth", min(num_filters) if num_filters else 128)
    with warnings.catch_warnings():
        # The expander's SymbolBlock cannot tell the input's type before a call.
        warnings.filterwarnings("ignore", message="Cannot decide type")
        det = SSD(network=net, base_size=base_size, features=names, num_filters=num_filters,
                  sizes=default_sizes if sizes is None else sizes,
                  ratios=default_ratios if ratios is None else ratios, steps=steps,
                  classes=list(classes), ctx=ctx, **kwargs)
    return _attach(det, net, ctx)


def yolov3(model, classes, out_indices=None, channels=None, anchors=None, pretrained=False,
           norm="batch", num_devices=1, alloc_size=None, ctx=None, backbone_kwargs=None,
           **kwargs):
    """GluonCV's YOLOv3 on a Residual Attention Network (Redmon and Farhadi 2018).

    GluonCV's ``YOLOV3`` takes its backbone as ``stages``: here three
    sequences of the resattn blocks ending at the blocks ``out_indices``
    (strides 8, 16, 32 for the ImageNet models: stem to the second attention
    stage, the third stage, the head without its pooling), whose outputs
    feed its detection blocks from the deepest up, as Darknet-53's do.
    Train it as GluonCV does: in training mode with the targets of
    ``gluoncv.model_zoo.yolo.yolo_target.YOLOV3PrefetchTargetGenerator`` (or
    its ``YOLO3DefaultTrainTransform``) it returns GluonCV's ``YOLOV3Loss``
    terms (objectness, center, scale, class).

    Parameters
    ----------
    model, pretrained, norm, num_devices
        The backbone (:func:`backbone`).
    classes : sequence of str
    out_indices : sequence of 3 int, optional
        Blocks whose outputs feed the three YOLO layers; their strides must
        double from one to the next. Default the last three such blocks
        ((2, 3, 4) for the ImageNet models, (1, 2, 3) for the CIFAR ones).
    channels : sequence of 3 int, optional
        Widths of the detection blocks, deepest first; default GluonCV's
        ``[512, 256, 128]`` scaled by the backbone's final width / 2048.
    anchors : list of 3 lists, optional
        GluonCV's COCO/VOC anchors by default.
    alloc_size : (int, int), optional
        Largest map of the finest YOLO layer (GluonCV's 128 x 128, or more
        for stride-4 maps of 512-pixel inputs).
    ctx, backbone_kwargs
    **kwargs
        Other :class:`gluoncv.model_zoo.yolo.yolo3.YOLOV3` arguments.

    Returns
    -------
    gluoncv.model_zoo.yolo.yolo3.YOLOV3
    """
    import mxnet as mx
    import_gluoncv()
    from gluoncv.model_zoo.yolo.yolo3 import YOLOV3
    from .models.features import FeatureInfo, check_out_indices, trunk_blocks
    ctx = mx.cpu() if ctx is None else ctx
    net = backbone(model, pretrained, norm, num_devices, ctx=ctx, **(backbone_kwargs or {}))
    if out_indices is None:
        red = net.feature_info.reduction()
        candidates = [c for c in ((2, 3, 4), (1, 2, 3), (0, 2, 3))
                      if red[c[1]] == 2 * red[c[0]] and red[c[2]] == 2 * red[c[1]]]
        if not candidates:
            raise ValueError("yolov3: no three blocks of this network have strides that double "
                             "(strides %s); pass out_indices" % (red,))
        out_indices = candidates[0]
    indices = check_out_indices(out_indices)
    if len(indices) != 3:
        raise ValueError("yolov3: out_indices must name 3 blocks (one per YOLO layer), got %r"
                         % (tuple(out_indices),))
    info = FeatureInfo(net, indices)
    strides = _strided(info, indices, "yolov3")
    starts = (0,) + tuple(i + 1 for i in indices[:-1])
    stages = [trunk_blocks(net, a, b) for a, b in zip(starts, indices)]
    if channels is None:
        channels = _scaled((512, 256, 128), net)
    if anchors is None:
        anchors = [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119],
                   [116, 90, 156, 198, 373, 326]]
    if alloc_size is None:
        side = max(128, int(math.ceil(512 / float(strides[0]))))
        alloc_size = (side, side)
    norm_layer, norm_kwargs = _norm_args(norm, num_devices)
    det = YOLOV3(stages, list(channels), anchors, strides, list(classes), alloc_size=alloc_size,
                 norm_layer=norm_layer, norm_kwargs=norm_kwargs, **kwargs)
    return _attach(det, net, ctx)


def _deconv_base(net, filters, kernels, norm_layer, norm_kwargs):
    """GluonCV's ``DeconvResnet`` with the resattn trunk as its ``base_network``."""
    import_gluoncv()
    from gluoncv.model_zoo.center_net.deconv_resnet import DeconvResnet
    from mxnet.gluon import HybridBlock
    from .models.features import trunk_blocks

    class ResAttnDeconv(DeconvResnet):
        """GluonCV's ``DeconvResnet`` (its deconvolution layers and forward) on a resattn trunk."""

        def __init__(self):
            # DeconvResnet.__init__ builds a GluonCV ResNet: only its base is replaced here.
            HybridBlock.__init__(self)
            self._norm_layer = norm_layer
            self._norm_kwargs = norm_kwargs or {}
            self._use_dcnv2 = False
            self.base_network = trunk_blocks(net, 0, 4)
            with self.name_scope():
                self.deconv = self._make_deconv_layer(filters, kernels)

    return ResAttnDeconv()


def center_net(model, classes, pretrained=False, norm="batch", num_devices=1,
               deconv_filters=None, head_conv_channel=None, topk=100, ctx=None,
               backbone_kwargs=None, **kwargs):
    """GluonCV's CenterNet on a Residual Attention Network (Zhou et al. 2019, objects as points).

    As GluonCV's ``center_net_resnet*_v1b_*``: its ``base_network`` is
    GluonCV's ``DeconvResnet`` (stride-2 deconvolutions with bilinear
    initialisation) over the resattn blocks to the head without its pooling,
    with as many deconvolutions as take the map to stride 4 (three for the
    ImageNet models, none for the CIFAR ones, already at stride 4); GluonCV's
    heatmap, size and offset heads follow. Train it with
    ``gluoncv.model_zoo.center_net.target_generator.CenterNetTargetGenerator``,
    ``gluoncv.loss.HeatmapFocalLoss`` and ``gluoncv.loss.MaskedL1Loss``.

    Parameters
    ----------
    model, pretrained, norm, num_devices
        The backbone (:func:`backbone`).
    classes : sequence of str
    deconv_filters : sequence of int, optional
        Widths of the deconvolutions; default GluonCV's (256, 128, 64) scaled by
        the backbone's final width / 2048, as many as needed.
    head_conv_channel : int, optional
        Width of each head's 3x3 convolution; default 64 scaled likewise.
    topk : int
    ctx, backbone_kwargs
    **kwargs
        Other :class:`gluoncv.model_zoo.center_net.CenterNet` arguments.

    Returns
    -------
    gluoncv.model_zoo.center_net.CenterNet
    """
    import mxnet as mx
    import_gluoncv()
    from gluoncv.model_zoo.center_net.center_net import CenterNet
    ctx = mx.cpu() if ctx is None else ctx
    net = backbone(model, pretrained, norm, num_devices, ctx=ctx, **(backbone_kwargs or {}))
    stride = net.feature_info.reduction(4)
    count = 0
    while stride > 4:
        stride //= 2
        count += 1
    if deconv_filters is None:
        deconv_filters = _scaled((256, 128, 64), net, 16)[:count]
    deconv_filters = tuple(deconv_filters)
    if len(deconv_filters) != count:
        raise ValueError("center_net: the head's stride %d needs %d deconvolutions to reach "
                         "stride 4, got deconv_filters=%r"
                         % (net.feature_info.reduction(4), count, deconv_filters))
    norm_layer, norm_kwargs = _norm_args(norm, num_devices)
    base = _deconv_base(net, deconv_filters, (4,) * count, norm_layer, norm_kwargs)
    heads = collections.OrderedDict([
        ("heatmap", {"num_output": len(classes), "bias": -2.19}),
        ("wh", {"num_output": 2}),
        ("reg", {"num_output": 2})])
    if head_conv_channel is None:
        head_conv_channel = _scaled((64,), net, 16)[0]
    det = CenterNet(base, heads, list(classes), head_conv_channel=head_conv_channel, scale=4.0,
                    topk=topk, **kwargs)
    return _attach(det, net, ctx)


# ----------------------------------------------------------------------------- segmentation
def _seg_classes():
    """GluonCV's FCN, PSPNet and DeepLabV3, each with a resattn backbone in ``base_forward``."""
    import_gluoncv()
    from gluoncv.model_zoo.deeplabv3 import DeepLabV3, _ASPP, _DeepLabHead
    from gluoncv.model_zoo.fcn import FCN, _FCNHead
    from gluoncv.model_zoo.pspnet import PSPNet, _PSPHead, _PyramidPooling
    from mxnet.gluon import HybridBlock, nn
    from ._compat import set_child
    from .models.features import ResidualAttentionFeatures

    class _Backbone:
        """SegBaseModel's state, with ``base_forward`` giving the resattn (c3, c4) maps.

        ``SegBaseModel.__init__`` builds a dilated GluonCV ResNet; here the resattn network
        (already dilated) takes its place, and everything else is GluonCV's: the model's
        forward, ``predict`` and ``evaluate``, its head (``_make_head``, built for the
        backbone's widths) and the auxiliary ``_FCNHead`` on c3, both at ``lr_mult`` 10.
        """

        def __init__(self, net, nclass, aux=True, ctx=None, base_size=520, crop_size=480,
                     norm_layer=nn.BatchNorm, norm_kwargs=None):
            HybridBlock.__init__(self)
            self.aux = aux
            self.nclass = nclass
            with self.name_scope():
                self.backbone = ResidualAttentionFeatures(net, (3, 4))
            height, width = (crop_size, crop_size) if isinstance(crop_size, int) else crop_size
            self._up_kwargs = {"height": height, "width": width}
            self.base_size = base_size
            self.crop_size = crop_size
            # fh x fw: c4's map at crop_size, to which the pooling branches upsample.
            (_, c3, _, _), (_, c4, fh, fw) = self.backbone.feature_info.shapes((height, width))
            with self.name_scope():
                self.head = self._make_head(nclass, c4, fh, fw, norm_layer, norm_kwargs)
                heads = [self.head]
                if self.aux:
                    self.auxlayer = _FCNHead(c3, nclass, norm_layer=norm_layer,
                                             norm_kwargs=norm_kwargs)
                    heads.append(self.auxlayer)
            for block in heads:
                block.initialize(ctx=ctx)
                block.collect_params().setattr("lr_mult", 10)

        def base_forward(self, x):
            """The third attention stage's and the head's maps: GluonCV's ``c3``, ``c4``."""
            c3, c4 = self.backbone(x)
            return c3, c4

    class ResAttnFCN(_Backbone, FCN):
        """GluonCV's :class:`FCN` with a resattn backbone (``base_forward``)."""

        @staticmethod
        def _make_head(nclass, c4, fh, fw, norm_layer, norm_kwargs):
            return _FCNHead(c4, nclass, norm_layer=norm_layer, norm_kwargs=norm_kwargs)

    class ResAttnPSPNet(_Backbone, PSPNet):
        """GluonCV's :class:`PSPNet` with a resattn backbone (``base_forward``)."""

        @staticmethod
        def _make_head(nclass, c4, fh, fw, norm_layer, norm_kwargs):
            head = _PSPHead(nclass, norm_layer=norm_layer, norm_kwargs=norm_kwargs,
                            feature_map_height=fh, feature_map_width=fw)
            # _PSPHead assumes a 2048-channel map: its pyramid pooling and first
            # convolution are rebuilt for the backbone's c4 channels.
            head.psp = _PyramidPooling(c4, height=fh, width=fw, norm_layer=norm_layer,
                                       norm_kwargs=norm_kwargs)
            with head.block.name_scope():
                set_child(head.block, "0", nn.Conv2D(in_channels=2 * c4, channels=512,
                                                     kernel_size=3, padding=1, use_bias=False))
            return head

    class ResAttnDeepLabV3(_Backbone, DeepLabV3):
        """GluonCV's :class:`DeepLabV3` with a resattn backbone (``base_forward``)."""

        @staticmethod
        def _make_head(nclass, c4, fh, fw, norm_layer, norm_kwargs):
            head = _DeepLabHead(nclass, norm_layer=norm_layer, norm_kwargs=norm_kwargs,
                                height=fh, width=fw)
            # _DeepLabHead's ASPP assumes a 2048-channel map: rebuilt for c4 channels.
            with head.name_scope():
                head.aspp = _ASPP(c4, [12, 24, 36], norm_layer=norm_layer,
                                  norm_kwargs=norm_kwargs, height=fh, width=fw)
            return head

    return {"fcn": ResAttnFCN, "psp": ResAttnPSPNet, "deeplab": ResAttnDeepLabV3}


_SEG = {}


def _segmentation(kind, model, nclass, aux, pretrained, norm, num_devices, output_stride,
                  crop_size, base_size, ctx, backbone_kwargs):
    import mxnet as mx
    if not _SEG:
        _SEG.update(_seg_classes())
    from .models.features import dilate, output_strides
    ctx = mx.cpu() if ctx is None else ctx
    net = backbone(model, pretrained, norm, num_devices, ctx=ctx, **(backbone_kwargs or {}))
    if output_stride is None:
        # The stem never dilates, so its stride (4 or 1) is always <= 8.
        output_stride = max(s for s in output_strides(net) if s <= 8)
    dilate(net, output_stride)
    norm_layer, norm_kwargs = _norm_args(norm, num_devices)
    seg = _SEG[kind](net, nclass, aux=aux, ctx=ctx, base_size=base_size, crop_size=crop_size,
                     norm_layer=norm_layer, norm_kwargs=norm_kwargs)
    return _attach(seg, net, ctx)


_SEG_DOC = """

    Parameters
    ----------
    model, pretrained, norm, num_devices
        The backbone (:func:`backbone`).
    nclass : int
        Classes of the segmentation, background included.
    aux : bool
        GluonCV's auxiliary FCN head on ``c3`` (its loss weighted 0.2 by
        ``gluoncv.loss.MixSoftmaxCrossEntropyLoss(aux=True)``).
    output_stride : int, optional
        Total stride of ``c3`` and ``c4``: default 8 (the dilated network
        segmentation expects; :func:`resattn.models.features.dilate`) where
        the network reaches it, else its own (4 for the CIFAR models, which
        never downsample in the stem).
    crop_size : int or (int, int)
        Training input size; GluonCV's pooling branches upsample to the map of
        this size, so train at it (``predict`` takes any size).
    base_size : int
    ctx, backbone_kwargs
"""


def fcn(model, nclass, aux=True, pretrained=False, norm="batch", num_devices=1,
        output_stride=None, crop_size=480, base_size=520, ctx=None, backbone_kwargs=None):
    """GluonCV's FCN (Long et al. 2015) on a dilated Residual Attention Network.

    A subclass of GluonCV's ``FCN``: its forward, ``predict`` and heads
    (``_FCNHead`` on the head's map ``c4``, the auxiliary one on the third
    attention stage's ``c3``), with the resattn network in place of the
    dilated ResNet through ``SegBaseModel.base_forward``. Train with
    ``gluoncv.loss.MixSoftmaxCrossEntropyLoss``.
    """
    return _segmentation("fcn", model, nclass, aux, pretrained, norm, num_devices,
                         output_stride, crop_size, base_size, ctx, backbone_kwargs)


def pspnet(model, nclass, aux=True, pretrained=False, norm="batch", num_devices=1,
           output_stride=None, crop_size=480, base_size=520, ctx=None, backbone_kwargs=None):
    """GluonCV's PSPNet (Zhao et al. 2017) on a dilated Residual Attention Network.

    A subclass of GluonCV's ``PSPNet`` (its forward, ``predict``, pyramid
    pooling head and auxiliary head), with the resattn network through
    ``base_forward``; the pyramid pooling is built for the backbone's ``c4``
    width. Train with ``gluoncv.loss.MixSoftmaxCrossEntropyLoss``.
    """
    return _segmentation("psp", model, nclass, aux, pretrained, norm, num_devices,
                         output_stride, crop_size, base_size, ctx, backbone_kwargs)


def deeplabv3(model, nclass, aux=True, pretrained=False, norm="batch", num_devices=1,
              output_stride=None, crop_size=480, base_size=520, ctx=None,
              backbone_kwargs=None):
    """GluonCV's DeepLabV3 (Chen et al. 2017) on a dilated Residual Attention Network.

    A subclass of GluonCV's ``DeepLabV3`` (its forward, ``predict``, ASPP head
    with rates 12, 24, 36 and auxiliary head), with the resattn network
    through ``base_forward``; the ASPP is built for the backbone's ``c4``
    width. Train with ``gluoncv.loss.MixSoftmaxCrossEntropyLoss``.
    """
    return _segmentation("deeplab", model, nclass, aux, pretrained, norm, num_devices,
                         output_stride, crop_size, base_size, ctx, backbone_kwargs)


for _f in (fcn, pspnet, deeplabv3):
    _f.__doc__ += _SEG_DOC
del _f
