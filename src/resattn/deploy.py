"""Deployment: MXNet symbol and ONNX export, oneDNN fusion, INT8 and BF16 inference on CPU.

::

    net = resattn.get_model('attention92_cifar', pretrained='model.params')
    export_symbol(net, 'out/att92', 32)     # out/att92-symbol.json, out/att92-0000.params
    export_onnx(net, 'out/att92.onnx', 32)  # dynamic batch, height and width
    fast = optimize(net)                    # conv + BN + ReLU (+ sum) fused by oneDNN
    int8 = quantize(net, calib_loader)      # post-training INT8, calibrated on 5 batches
    bf16 = to_bfloat16(net)                 # BF16 through MXNet AMP

Call :func:`enable_amx` first, before any network runs, on CPUs with Intel
AMX. Measured speeds are in ``docs/performance.md``, accuracy drops in
``docs/deployment.md``.
"""
import ctypes
import os
import platform
import sys
import tempfile
import warnings

import mxnet as mx
import numpy as np

from . import blocks
from .io import atomic_write

__all__ = ["export_symbol", "load_symbol", "export_onnx", "check_onnx", "register_onnx_converters",
           "optimize", "quantize", "to_bfloat16", "enable_amx", "fusion_backend", "CALIB_MODES",
           "QUANTIZED_DTYPES"]

#: Calibration modes of :func:`quantize`: min/max of the layer outputs ('naive'),
#: KL-divergence thresholds ('entropy'), or none (ranges found at run time).
CALIB_MODES = ("naive", "entropy", "none")
#: 'auto' picks uint8 after ReLU and int8 elsewhere.
QUANTIZED_DTYPES = ("auto", "int8", "uint8")
_ONNX_HINT = "pip install onnx==1.15.0 onnxruntime==1.19.2 (versions that work with mxnet 1.9.1)"


def fusion_backend():
    """Name of the oneDNN subgraph backend of this MXNet build ('MKLDNN' in 1.x, 'ONEDNN' in 2.x)."""
    features = mx.runtime.Features()
    for name in ("ONEDNN", "MKLDNN"):
        if name in features and features.is_enabled(name):
            return name
    raise ValueError("this MXNet build has no oneDNN (MKLDNN/ONEDNN feature is off); graph "
                     "fusion and INT8 need the standard CPU wheel, e.g. mxnet==1.9.1")


def _cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def enable_amx():
    """Let oneDNN run INT8 and BF16 on Intel AMX tiles (Sapphire Rapids and later).

    MXNet 1.9's oneDNN (2.4) uses AMX only if ``DNNL_MAX_CPU_ISA`` allows it
    when its first primitive is created, and the process has asked Linux for
    the tile state (``arch_prctl``, Linux 5.16+); this does both and creates
    that first primitive. Call it before running any network: once oneDNN has
    run, its instruction set is fixed and this changes nothing. AMX made INT8
    inference 1.3x and BF16 2.2x faster on the test machine
    (``docs/performance.md``); float32 is unaffected.

    Returns
    -------
    bool
        True if AMX was made available; False, with nothing changed, where the
        CPU, the OS or an explicit ``DNNL_MAX_CPU_ISA`` setting rules it out.
    """
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
        return False
    if not {"amx_tile", "amx_int8", "amx_bf16"} <= _cpu_flags():
        return False
    isa = os.environ.get("DNNL_MAX_CPU_ISA", "").upper()
    if isa not in ("", "ALL") and "AMX" not in isa:
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    arch_prctl, req_xcomp_perm, xtiledata = 158, 0x1023, 18
    if libc.syscall(arch_prctl, req_xcomp_perm, xtiledata) != 0:
        return False
    # Only after the kernel granted the tiles: AMX code without them dies on SIGILL.
    # oneDNN reads the variable when it creates its first primitive, so create one
    # now, then restore the environment: a child process (e.g. a spawned data
    # loader) must not inherit the setting without the permission, which exec drops.
    saved = os.environ.get("DNNL_MAX_CPU_ISA")
    os.environ["DNNL_MAX_CPU_ISA"] = isa if "AMX" in isa else "AVX512_CORE_AMX"
    try:
        data = mx.nd.ones((1, 16, 2, 2))
        mx.nd.Convolution(data, mx.nd.ones((16, 16, 1, 1)), kernel=(1, 1), num_filter=16,
                          no_bias=True).wait_to_read()
    finally:
        if saved is None:
            del os.environ["DNNL_MAX_CPU_ISA"]
        else:
            os.environ["DNNL_MAX_CPU_ISA"] = saved
    return True


def _input_shape(input_size, batch_size=1):
    if isinstance(input_size, (int, np.integer)) and not isinstance(input_size, bool):
        size = (int(input_size), int(input_size))
    elif isinstance(input_size, (tuple, list)) and len(input_size) == 2:
        size = tuple(int(s) for s in input_size)
    else:
        raise ValueError("input_size must be an int N or a pair (H, W), got %r" % (input_size,))
    if min(size) < 1 or batch_size < 1:
        raise ValueError("input_size and batch_size must be >= 1, got input_size=%r, "
                         "batch_size=%r" % (input_size, batch_size))
    return (int(batch_size), 3) + size


def _ctx(ctx):
    return mx.cpu() if ctx is None else ctx


def _trace(net, shape, ctx):
    """One hybridized forward pass: finishes deferred initialisation and caches the graph."""
    net.hybridize()
    try:
        return net(mx.nd.zeros(shape, ctx=ctx))
    except RuntimeError as err:
        if "not been initialized" in str(err) or "not initialized" in str(err):
            raise ValueError("%s has uninitialised parameters; load weights (or call "
                             "initialize()) before exporting" % type(net).__name__) from None
        raise


def _replace_files(tmp_prefix, prefix, suffixes):
    paths = []
    for suffix in suffixes:
        os.replace(tmp_prefix + suffix, prefix + suffix)
        paths.append(prefix + suffix)
    return paths


# ----------------------------------------------------------------------------- MXNet symbol
def export_symbol(net, prefix, input_size=32, ctx=None):
    """Write ``prefix-symbol.json`` and ``prefix-0000.params`` with ``HybridBlock.export``.

    The graph is size-agnostic; ``input_size`` (N or (H, W)) is only traced once.
    Both files are written to a temporary name first and then renamed.

    Returns
    -------
    (str, str)
        Paths of the symbol and the parameter file; reload with :func:`load_symbol`.
    """
    prefix = os.fspath(prefix)
    ctx = _ctx(ctx)
    _trace(net, _input_shape(input_size), ctx)
    directory = os.path.dirname(os.path.abspath(prefix))
    os.makedirs(directory, exist_ok=True)
    tmp_dir = tempfile.mkdtemp(prefix=".export.", dir=directory)
    try:
        tmp_prefix = os.path.join(tmp_dir, "model")
        net.export(tmp_prefix, epoch=0)
        return tuple(_replace_files(tmp_prefix, prefix, ("-symbol.json", "-0000.params")))
    finally:
        for name in os.listdir(tmp_dir):
            os.remove(os.path.join(tmp_dir, name))
        os.rmdir(tmp_dir)


def load_symbol(prefix, ctx=None):
    """Load ``prefix-symbol.json`` + ``prefix-0000.params`` as a hybridized ``SymbolBlock``.

    Works for files from :func:`export_symbol` and for quantized or BF16
    models saved by ``resattn quantize`` / ``SymbolBlock.export``.
    """
    prefix = os.fspath(prefix)
    sym_path, params_path = prefix + "-symbol.json", prefix + "-0000.params"
    for path in (sym_path, params_path):
        if not os.path.isfile(path):
            raise ValueError("%s: no such file (expected %s-symbol.json and %s-0000.params)"
                             % (path, prefix, prefix))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Cannot decide type")
        block = mx.gluon.SymbolBlock.imports(sym_path, ["data"], params_path, ctx=_ctx(ctx))
    block.hybridize(static_alloc=True)
    return block


# ----------------------------------------------------------------------------- ONNX
def _import_onnx():
    try:
        import onnx
        import mxnet.onnx  # noqa: F401  (registers MXNet's converters)
    except ImportError as err:
        raise ImportError("ONNX export needs the onnx package: %s (%s)" % (_ONNX_HINT, err)) \
            from err
    return onnx


def _convert_bilinear_resize(original):
    def convert(node, **kwargs):
        """``contrib.BilinearResize2D``; 'like' mode becomes a Resize to the runtime shape."""
        from onnx import TensorProto
        from onnx.helper import make_node, make_tensor
        from mxnet.onnx.mx2onnx._op_translations._op_translations_opset12 import get_inputs
        name, inputs, attrs = get_inputs(node, kwargs)
        if attrs.get("mode", "size") != "like":
            return original(node, **kwargs)
        if str(attrs.get("align_corners", "True")).lower() not in ("true", "1"):
            raise NotImplementedError("%s: BilinearResize2D 'like' without align_corners is not "
                                      "supported" % name)
        init = kwargs["initializer"]
        for suffix, values in (("_0", [0]), ("_2", [2]), ("_4", [4])):
            init.append(make_tensor(name + suffix, TensorProto.INT64, [1], values))
        # sizes = shape(x)[0:2] ++ shape(like)[2:4]: height and width stay dynamic.
        return [
            make_node("Shape", [inputs[0]], [name + "_x_shape"]),
            make_node("Slice", [name + "_x_shape", name + "_0", name + "_2"], [name + "_nc"]),
            make_node("Shape", [inputs[1]], [name + "_like_shape"]),
            make_node("Slice", [name + "_like_shape", name + "_2", name + "_4"], [name + "_hw"]),
            make_node("Concat", [name + "_nc", name + "_hw"], [name + "_sizes"], axis=0),
            make_node("Resize", [inputs[0], "", "", name + "_sizes"], [name], mode="linear",
                      coordinate_transformation_mode="align_corners", name=name),
        ]
    convert.resattn = True
    return convert


def register_onnx_converters():
    """Teach ``mxnet.onnx`` to export ``contrib.BilinearResize2D`` in 'like' mode.

    MXNet 1.9's converter accepts only 'size' mode; the one registered here
    emits ONNX ``Resize`` (linear, ``align_corners``) whose sizes come from
    ``Shape`` of the second input, and hands other modes to MXNet's own.
    Idempotent.
    """
    _import_onnx()
    from mxnet.onnx.mx2onnx._export_onnx import MXNetGraph
    op = "_contrib_BilinearResize2D"
    for version, table in list(MXNetGraph.registry_.items()):
        current = table.get(op)
        if current is not None and not getattr(current, "resattn", False):
            MXNetGraph.register(op, version)(_convert_bilinear_resize(current))


def _params_of(net, ctx):
    return {p.name: p.data(ctx) for p in net.collect_params().values()}


def export_onnx(net, path, input_size=32, dynamic=True, ctx=None):
    """Export ``net`` to ONNX through ``mxnet.onnx.export_model``.

    Parameters
    ----------
    net : HybridBlock
        An initialised network (e.g. from :func:`resattn.get_model`).
    path : str
        The ``.onnx`` file to write (atomically).
    input_size : int or (int, int)
        Size traced for shape inference.
    dynamic : bool
        Batch, height and width are symbolic in the ONNX graph (the soft
        masks resize to the runtime shape); False fixes them to batch 1 at
        ``input_size``.

    Returns
    -------
    str
        ``path``. Check it against MXNet with :func:`check_onnx`.
    """
    onnx = _import_onnx()
    register_onnx_converters()
    path = os.fspath(path)
    ctx = _ctx(ctx)
    shape = _input_shape(input_size)
    _trace(net, shape, ctx)
    with blocks._resize_operator():
        sym = net(mx.sym.var("data"))
    if isinstance(sym, (list, tuple)):
        sym = mx.sym.Group(list(sym))

    def write(tmp):
        mx.onnx.export_model(sym, _params_of(net, ctx), [shape], np.float32, tmp,
                             dynamic=dynamic,
                             dynamic_input_shapes=[(None, 3, None, None)] if dynamic else None)
        model = onnx.load(tmp)
        # MXNet lists every weight as a graph input too; as pure initializers
        # they are constants that ONNX Runtime can fold.
        weights = {t.name for t in model.graph.initializer}
        inputs = [i for i in model.graph.input if i.name not in weights]
        del model.graph.input[:]
        model.graph.input.extend(inputs)
        onnx.checker.check_model(model)
        onnx.save(model, tmp)

    atomic_write(path, write)
    return path


def check_onnx(path, net, input_sizes=(32, (40, 24)), batch_size=2, rtol=1e-4, ctx=None,
               seed=0):
    """Run an ONNX file in ONNX Runtime and compare it with ``net`` in MXNet.

    Parameters
    ----------
    input_sizes : sequence of int or (int, int)
        Sizes to test from the one file (two differing sizes test dynamic H, W).
    rtol : float
        Largest allowed ``max|onnx - mxnet| / max|mxnet|``.

    Returns
    -------
    dict
        Input shape -> relative difference. A ValueError names any size above ``rtol``.
    """
    try:
        import onnxruntime
    except ImportError as err:
        raise ImportError("check_onnx needs onnxruntime: %s (%s)" % (_ONNX_HINT, err)) from err
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(os.fspath(path), options,
                                           providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    rng = np.random.RandomState(seed)
    ctx = _ctx(ctx)
    diffs, bad = {}, []
    for size in input_sizes:
        shape = _input_shape(size, batch_size)
        x = rng.standard_normal(shape).astype(np.float32)
        ref = net(mx.nd.array(x, ctx=ctx)).asnumpy()
        got = session.run(None, {name: x})[0]
        if got.shape != ref.shape:
            raise ValueError("%s at input %s: ONNX output shape %s, MXNet %s"
                             % (path, shape, got.shape, ref.shape))
        rel = float(np.abs(got - ref).max() / max(np.abs(ref).max(), 1e-12))
        diffs[shape] = rel
        if rel > rtol:
            bad.append("%s: %.3g" % ("x".join(map(str, shape)), rel))
    if bad:
        raise ValueError("%s differs from MXNet by more than rtol=%g at %s"
                         % (path, rtol, ", ".join(bad)))
    return diffs


# ----------------------------------------------------------------------------- CPU fast paths
def optimize(net, input_size=32, batch_size=1, ctx=None):
    """Fuse the graph for CPU inference with oneDNN (``optimize_for``) and return ``net``.

    Convolution + BatchNorm + ReLU (+ the residual sum) become one operator;
    BatchNorm statistics are folded into the convolution weights inside the
    fused operator, so ``net``'s parameters are unchanged. Inference only: do
    not train the returned network. Memory is planned for ``batch_size`` x
    ``input_size`` (static shapes); other sizes work but re-plan on change.
    """
    ctx = _ctx(ctx)
    _trace(net, _input_shape(input_size, batch_size), ctx)
    net.optimize_for(mx.nd.zeros(_input_shape(input_size, batch_size), ctx=ctx),
                     backend=fusion_backend(), static_alloc=True, static_shape=True)
    return net


def _first(batch):
    while isinstance(batch, (list, tuple)):
        if not batch:
            raise ValueError("calib_data yielded an empty batch")
        batch = batch[0]
    if isinstance(batch, np.ndarray):
        batch = mx.nd.array(batch)
    if not isinstance(batch, mx.nd.NDArray) or batch.ndim != 4:
        raise ValueError("calib_data must yield (N, C, H, W) arrays or (data, label) pairs, "
                         "got %r" % (type(batch).__name__,))
    return batch.as_in_context(mx.cpu())


def quantize(net, calib_data, num_calib_batches=5, calib_mode="naive", quantized_dtype="auto",
             exclude_layers=None, ctx=None):
    """Post-training INT8 quantization for CPU (oneDNN, VNNI where the CPU has it).

    Parameters
    ----------
    net : HybridBlock
        A trained float32 network.
    calib_data : iterable
        Batches of images, or ``(data, label)`` pairs as a DataLoader yields,
        preprocessed like the evaluation data.
    num_calib_batches : int
        Batches taken from ``calib_data`` to calibrate activation ranges.
    calib_mode : {'naive', 'entropy', 'none'}
        See :data:`CALIB_MODES`; 'naive' was the most accurate on the demo model.
    quantized_dtype : {'auto', 'int8', 'uint8'}
    exclude_layers : list of str, optional
        Symbol names of layers to keep in float32.

    Returns
    -------
    mxnet.gluon.SymbolBlock
        The quantized, fused network (hybridized); save it with ``export``.

    Notes
    -----
    The three ``(1 + M) * T`` products stay in float32: MXNet 1.9's quantized
    ``elemwise_mul`` accepts only int8 inputs and breaks under 'auto'.
    """
    from mxnet.contrib.quantization import quantize_net_v2
    if calib_mode not in CALIB_MODES:
        raise ValueError("calib_mode must be one of %s, got %r" % (", ".join(CALIB_MODES),
                                                                 calib_mode))
    if quantized_dtype not in QUANTIZED_DTYPES:
        raise ValueError("quantized_dtype must be one of %s, got %r"
                         % (", ".join(QUANTIZED_DTYPES), quantized_dtype))
    if isinstance(num_calib_batches, bool) or not isinstance(num_calib_batches, int) \
            or num_calib_batches < 1:
        raise ValueError("num_calib_batches must be an integer >= 1, got %r"
                         % (num_calib_batches,))
    ctx = _ctx(ctx)
    if ctx.device_type != "cpu":
        raise ValueError("quantize() targets CPU inference (oneDNN); got ctx=%s" % ctx)
    fusion_backend()
    batches = []
    for batch in calib_data:
        batches.append(_first(batch))
        if len(batches) == num_calib_batches:
            break
    if not batches:
        raise ValueError("calib_data yielded no batches")
    shapes = {b.shape[1:] for b in batches}
    if len(shapes) > 1:
        raise ValueError("calibration batches differ in image shape: %s" % sorted(shapes))
    data = mx.nd.concat(*batches, dim=0)
    calib_iter = mx.io.NDArrayIter(data, batch_size=batches[0].shape[0],
                                   last_batch_handle="pad")
    _trace(net, (1,) + tuple(data.shape[1:]), ctx)
    # MXNet logs one line per sigmoid (no INT8 kernel; they stay float32).
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Cannot decide type")
        qnet = quantize_net_v2(net, quantized_dtype=quantized_dtype, quantize_mode="full",
                               quantize_granularity="channel-wise",
                               exclude_layers=list(exclude_layers or []),
                               exclude_operators=["elemwise_mul"],
                               calib_data=calib_iter if calib_mode != "none" else None,
                               data_shapes=calib_iter.provide_data, calib_mode=calib_mode,
                               num_calib_examples=data.shape[0], ctx=ctx)
    qnet.hybridize(static_alloc=True, static_shape=True)
    return qnet


def to_bfloat16(net, input_size=32, ctx=None, fuse=True):
    """BF16 inference through MXNet AMP (``amp.convert_hybrid_block``) on CPU.

    Convolutions, fully connected layers and the element-wise work between
    them run in bfloat16 where MXNet's AMP lists allow it; the output is
    cast back to float32. ``fuse`` also applies :func:`optimize`'s oneDNN fusion.

    Returns
    -------
    mxnet.gluon.SymbolBlock
    """
    from mxnet.contrib import amp
    ctx = _ctx(ctx)
    shape = _input_shape(input_size)
    _trace(net, shape, ctx)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Cannot decide type")
        block = amp.convert_hybrid_block(net, target_dtype="bfloat16", ctx=ctx)
    if fuse:
        block.optimize_for(mx.nd.zeros(shape, ctx=ctx), backend=fusion_backend(),
                           static_alloc=True)
    else:
        block.hybridize(static_alloc=True)
    return block
