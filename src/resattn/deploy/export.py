"""Export for deployment: an MXNet symbol (JSON + params) and ONNX with dynamic shapes."""
import os
import tempfile
import warnings

import mxnet as mx
import numpy as np

from .._compat import onnx_get_inputs, onnx_graph
from ..io import atomic_write
from ..io import input_shape as _input_shape
from ..models import blocks

__all__ = ["export_symbol", "load_symbol", "export_onnx", "check_onnx", "register_onnx_converters"]

_ONNX_HINT = "pip install onnx==1.15.0 onnxruntime==1.19.2 (versions that work with mxnet 1.9.1)"


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
        name, inputs, attrs = onnx_get_inputs()(node, kwargs)
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
    MXNetGraph = onnx_graph()
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
    with blocks.resize_operator():
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


def _all_outputs(path, engine):
    """A function that runs an ONNX file in ``engine`` (float32) and returns all its outputs."""
    from .engines import _import
    if engine == "onnxruntime":
        ort = _import("onnxruntime")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda x: session.run(None, {name: x})
    ov = _import("openvino")
    core = ov.Core()
    compiled = core.compile_model(core.read_model(path), "CPU",
                                  {"INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()

    def run(x):
        results = request.infer([x])
        return [results[out] for out in compiled.outputs]
    return run


def check_onnx(path, net, input_sizes=(32, (40, 24)), batch_size=2, rtol=1e-4, ctx=None,
               seed=0, engine="onnxruntime"):
    """Run an ONNX file in ONNX Runtime (or OpenVINO) and compare it with ``net`` in MXNet.

    Parameters
    ----------
    input_sizes : sequence of int or (int, int)
        Sizes to test from the one file (two differing sizes test dynamic H, W).
    rtol : float
        Largest allowed ``max|onnx - mxnet| / max|mxnet|``.
    engine : {'onnxruntime', 'openvino'}
        The engine that runs the file, in float32 (see :func:`resattn.deploy.load_onnx`).

    Returns
    -------
    dict
        Input shape -> relative difference (the largest over the outputs of a
        network with several, such as a feature network's stage outputs). A
        ValueError names any size above ``rtol``.
    """
    from .engines import load_onnx
    model = load_onnx(path, engine)
    rng = np.random.RandomState(seed)
    ctx = _ctx(ctx)
    diffs, bad = {}, []
    run_all = None
    for size in input_sizes:
        shape = _input_shape(size, batch_size)
        x = rng.standard_normal(shape).astype(np.float32)
        ref = net(mx.nd.array(x, ctx=ctx))
        if isinstance(ref, (list, tuple)):
            refs = [r.asnumpy() for r in ref]
            if run_all is None:
                run_all = _all_outputs(path, engine)
            gots = run_all(x)
        else:
            refs, gots = [ref.asnumpy()], [model(x)]
        if len(gots) != len(refs) or any(g.shape != r.shape for g, r in zip(gots, refs)):
            raise ValueError("%s at input %s: %s output shapes %s, MXNet %s"
                             % (path, shape, engine, [g.shape for g in gots],
                                [r.shape for r in refs]))
        rel = max(float(np.abs(got - ref).max() / max(np.abs(ref).max(), 1e-12))
                  for got, ref in zip(gots, refs))
        diffs[shape] = rel
        if rel > rtol:
            bad.append("%s: %.3g" % ("x".join(map(str, shape)), rel))
    if bad:
        raise ValueError("%s differs from MXNet by more than rtol=%g in %s at %s"
                         % (path, rtol, engine, ", ".join(bad)))
    return diffs
