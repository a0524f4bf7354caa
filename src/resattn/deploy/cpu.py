"""CPU fast paths: oneDNN fusion, INT8 quantization, BF16, and Intel AMX."""
import ctypes
import os
import platform
import sys
import warnings

import mxnet as mx
import numpy as np

from .._threads import cpu_isa
from .choices import CALIB_MODES, QUANTIZED_DTYPES
from .export import _ctx, _input_shape, _trace

__all__ = ["optimize", "quantize", "to_bfloat16", "enable_amx", "fusion_backend"]



def fusion_backend():
    """Name of the oneDNN subgraph backend of this MXNet build ('MKLDNN' in 1.x, 'ONEDNN' in 2.x)."""
    features = mx.runtime.Features()
    for name in ("ONEDNN", "MKLDNN"):
        if name in features and features.is_enabled(name):
            return name
    raise ValueError("this MXNet build has no oneDNN (MKLDNN/ONEDNN feature is off); graph "
                     "fusion and INT8 need the standard CPU wheel, e.g. mxnet==1.9.1")


#: The ``/proc/cpuinfo`` flags :func:`enable_amx` needs (tiles, INT8 and BF16 on them).
_AMX_FLAGS = {"amx_tile", "amx_int8", "amx_bf16"}


def _cpu_flags():
    """The instruction-set flags of :data:`resattn._threads.ISA_FLAGS` this CPU has."""
    return set(cpu_isa())


#: Set by :func:`enable_amx` when it made AMX available to this process.
_AMX_STATE = {"enabled": False}


def _bf16_without_amx():
    """Why BF16 will be slow in this process, or None where it runs on Intel AMX."""
    if _AMX_STATE["enabled"]:
        return None
    flags = _cpu_flags()
    if _AMX_FLAGS <= flags:
        return ("this CPU has Intel AMX, but it is not enabled in this process: call "
                "resattn.deploy.enable_amx() before any network runs (AMX made BF16 2x faster "
                "on the test machine)")
    have = "AVX-512 BF16 but no Intel AMX" if "avx512_bf16" in flags else \
        "neither Intel AMX nor AVX-512 BF16 (oneDNN emulates bfloat16)"
    return ("this CPU has %s: BF16 inference is likely slower than float32 here (0.77x "
            "float32 with AMX kept off, docs/performance.md); deploy.optimize (float32) or "
            "deploy.quantize (INT8, AVX-512 VNNI where the CPU has it) are faster" % have)


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
    if not _AMX_FLAGS <= _cpu_flags():
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
    _AMX_STATE["enabled"] = True
    return True



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

    BF16 is fast only on Intel AMX (call :func:`enable_amx` first). Elsewhere
    (AVX-512 BF16 without AMX, e.g. AMD Zen 4/5, or no BF16 instructions at
    all) the conversions cost more than the dot products gain, and this warns
    with a ``RuntimeWarning`` that names what the CPU has and the faster paths.

    Returns
    -------
    mxnet.gluon.SymbolBlock
    """
    from mxnet.contrib import amp
    slow = _bf16_without_amx()
    if slow is not None:
        warnings.warn("to_bfloat16: " + slow, RuntimeWarning, stacklevel=2)
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

