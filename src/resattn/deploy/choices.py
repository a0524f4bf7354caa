"""Choices of the deployment tools, importable without MXNet (the CLI takes its own from here)."""

__all__ = ["CALIB_MODES", "QUANTIZED_DTYPES", "EXPORT_FORMATS", "ONNX_ENGINES", "ONNX_PRECISIONS"]

#: Calibration modes of :func:`resattn.deploy.quantize`: min/max of the layer outputs
#: ('naive'), KL-divergence thresholds ('entropy'), or none (ranges found at run time).
CALIB_MODES = ("naive", "entropy", "none")
#: 'auto' picks uint8 after ReLU and int8 elsewhere.
QUANTIZED_DTYPES = ("auto", "int8", "uint8")
#: Formats of ``resattn export``: an MXNet symbol (JSON + params) or ONNX.
EXPORT_FORMATS = ("symbol", "onnx")
#: Engines :func:`resattn.deploy.load_onnx` runs an exported ONNX file in, on CPU.
ONNX_ENGINES = ("onnxruntime", "openvino")
#: 'f32' computes in float32 in every engine; 'auto' leaves the choice to the engine
#: (OpenVINO picks bfloat16 on CPUs with AVX-512 BF16 or AMX).
ONNX_PRECISIONS = ("f32", "auto")
