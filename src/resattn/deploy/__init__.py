"""Deployment: MXNet symbol and ONNX export, oneDNN fusion, INT8 and BF16 inference on CPU.

::

    net = resattn.get_model('attention92_cifar', pretrained='model.params')
    export_symbol(net, 'out/att92', 32)     # out/att92-symbol.json, out/att92-0000.params
    export_onnx(net, 'out/att92.onnx', 32)  # dynamic batch, height and width
    fast = optimize(net)                    # conv + BN + ReLU (+ sum) fused by oneDNN
    int8 = quantize(net, calib_loader)      # post-training INT8, calibrated on 5 batches
    bf16 = to_bfloat16(net)                 # BF16 through MXNet AMP
    run = load_onnx('out/att92.onnx', 'openvino')  # the ONNX file in OpenVINO (or onnxruntime)

Call :func:`enable_amx` first, before any network runs, on CPUs with Intel
AMX. Measured speeds are in ``docs/performance.md``, accuracy drops in
``docs/deployment.md``.
"""
from .._lazy import attach as _attach

__getattr__, __dir__, __all__ = _attach(__name__, {
    ".choices": ["CALIB_MODES", "QUANTIZED_DTYPES", "EXPORT_FORMATS", "ONNX_ENGINES",
                 "ONNX_PRECISIONS"],
    ".cpu": ["optimize", "quantize", "to_bfloat16", "enable_amx", "fusion_backend"],
    ".engines": ["load_onnx", "OnnxModel"],
    ".export": ["export_symbol", "load_symbol", "export_onnx", "check_onnx",
                "register_onnx_converters"],
})
