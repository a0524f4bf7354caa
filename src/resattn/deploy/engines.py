"""Run an exported ONNX file in ONNX Runtime or OpenVINO on CPU, without MXNet.

:func:`resattn.deploy.export_onnx` writes the file; :func:`load_onnx` gives
one function that runs it in either engine, so a serving script (or
``benchmarks/bench_throughput.py``) can swap engines with one argument::

    run = load_onnx('att92.onnx', 'openvino', threads=2)
    logits = run(images)            # float32 NCHW, any batch and size the file allows

This module imports neither MXNet nor an engine until :func:`load_onnx` is
called, and then only the engine asked for.
"""
import os

import numpy as np

from .choices import ONNX_ENGINES, ONNX_PRECISIONS

__all__ = ["load_onnx", "OnnxModel"]

_HINT = {
    "onnxruntime": "pip install onnxruntime==1.19.2",
    "openvino": "pip install openvino==2026.4.1",
}
_EXTRA = ("or pip install 'resattn[deploy]' (onnx, onnxruntime and openvino at versions that "
          "work beside mxnet 1.9.1 and numpy<1.24)")


class OnnxModel:
    """An ONNX file loaded into one engine: call it on a batch of images.

    Made by :func:`load_onnx`. ``engine``, ``threads`` and ``precision`` say
    what runs (``precision`` as the engine reports it: ``'f32'`` or
    ``'bf16'``; ``threads`` None where the engine chose).
    """

    def __init__(self, path, engine, run, threads, precision):
        self.path, self.engine, self._run = path, engine, run
        self.threads, self.precision = threads, precision

    def __call__(self, images):
        """The file's first output for ``images`` (converted to a float32 array)."""
        return self._run(np.ascontiguousarray(images, dtype=np.float32))

    def __repr__(self):
        return "OnnxModel(%r, engine=%r, threads=%s, precision=%r)" % (
            self.path, self.engine, self.threads, self.precision)


def _import(engine):
    import importlib
    try:
        return importlib.import_module(engine)
    except ImportError as err:
        raise ImportError("load_onnx(engine=%r) needs the %s package: %s, %s (import failed "
                          "with: %s)" % (engine, engine, _HINT[engine], _EXTRA, err)) from err


def _single_input(path, names):
    if len(names) != 1:
        raise ValueError("%s has %d inputs (%s); load_onnx runs files with one input, as "
                         "resattn.deploy.export_onnx writes them" % (path, len(names),
                                                                     ", ".join(names)))
    return names[0]


def _onnxruntime(path, threads, precision):
    ort = _import("onnxruntime")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads is not None:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    name = _single_input(path, [i.name for i in session.get_inputs()])

    def run(images):
        return session.run(None, {name: images})[0]
    return run, threads, "f32"  # a float32 graph runs in float32 on ONNX Runtime's CPU provider


def _openvino(path, threads, precision):
    ov = _import("openvino")
    core = ov.Core()
    model = core.read_model(path)
    _single_input(path, [i.get_any_name() for i in model.inputs])
    config = {}
    if threads is not None:
        config["INFERENCE_NUM_THREADS"] = threads
    if precision == "f32":
        config["INFERENCE_PRECISION_HINT"] = "f32"
    compiled = core.compile_model(model, "CPU", config)
    request = compiled.create_infer_request()
    output = compiled.output(0)

    def run(images):
        return request.infer([images])[output]
    used = compiled.get_property("INFERENCE_PRECISION_HINT")  # an ov.Type: 'f32', 'bf16', ...
    return run, int(compiled.get_property("INFERENCE_NUM_THREADS")) or threads, \
        getattr(used, "get_type_name", lambda: str(used))()


def load_onnx(path, engine="onnxruntime", threads=None, precision="f32"):
    """Load an ONNX file into ONNX Runtime or OpenVINO (CPU) and return it as a function.

    Parameters
    ----------
    path : str
        An ONNX file, e.g. from :func:`resattn.deploy.export_onnx` (one input;
        dynamic batch, height and width are kept).
    engine : {'onnxruntime', 'openvino'}
        Where to run it (:data:`resattn.deploy.ONNX_ENGINES`).
    threads : int, optional
        Size of the engine's CPU thread pool (ONNX Runtime's
        ``intra_op_num_threads``, OpenVINO's ``INFERENCE_NUM_THREADS``). None
        leaves the engine's default; neither engine reads ``OMP_NUM_THREADS``.
    precision : {'f32', 'auto'}
        'f32' computes in float32 in both engines. 'auto' leaves it to the
        engine: OpenVINO then computes in bfloat16 on CPUs with AVX-512 BF16 or
        AMX (about 1e-2 relative difference from float32 for resattn's networks).

    Returns
    -------
    OnnxModel
        ``model(images)`` runs a float32 NCHW batch and returns the first
        output as a NumPy array; ``model.precision`` and ``model.threads``
        say what the engine chose.

    Raises
    ------
    ValueError
        For an unknown ``engine`` or ``precision``, a ``threads`` below 1, a
        missing file, or a file with more than one input.
    ImportError
        Where the engine is not installed, naming the package to install.
    """
    if engine not in ONNX_ENGINES:
        raise ValueError("engine must be one of %s, got %r" % (", ".join(map(repr, ONNX_ENGINES)),
                                                              engine))
    if precision not in ONNX_PRECISIONS:
        raise ValueError("precision must be one of %s, got %r"
                         % (", ".join(map(repr, ONNX_PRECISIONS)), precision))
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)
                                or threads < 1):
        raise ValueError("threads must be a positive int or None (the engine's default), got "
                         "%r" % (threads,))
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError("no ONNX file at %s (write one with resattn.deploy.export_onnx or "
                         "`resattn export --format onnx`)" % path)
    loader = _onnxruntime if engine == "onnxruntime" else _openvino
    run, used_threads, used_precision = loader(path, threads, precision)
    return OnnxModel(path, engine, run, used_threads, used_precision)
