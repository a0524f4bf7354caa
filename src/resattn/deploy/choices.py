"""Choices of the deployment tools, importable without MXNet (the CLI takes its own from here)."""

__all__ = ["CALIB_MODES", "QUANTIZED_DTYPES", "EXPORT_FORMATS"]

#: Calibration modes of :func:`resattn.deploy.quantize`: min/max of the layer outputs
#: ('naive'), KL-divergence thresholds ('entropy'), or none (ranges found at run time).
CALIB_MODES = ("naive", "entropy", "none")
#: 'auto' picks uint8 after ReLU and int8 elsewhere.
QUANTIZED_DTYPES = ("auto", "int8", "uint8")
#: Formats of ``resattn export``: an MXNet symbol (JSON + params) or ONNX.
EXPORT_FORMATS = ("symbol", "onnx")
