"""``resattn export`` and ``resattn quantize``: deployment (see :mod:`resattn.deploy`)."""
import contextlib
import errno
import importlib
import os

from ..deploy.choices import CALIB_MODES, EXPORT_FORMATS
from ._base import (add_model_args, check_choice, command, data_kwargs, load_trained,
                    size_type, weights_data_kwargs)

#: ``EXPORT_FORMATS`` stays importable from here (``resattn.cli_deploy`` of resattn 0.1).
__all__ = ["EXPORT_FORMATS"]


def _trained_model_args(p):
    add_model_args(p, trained=True, classes="classifier size (default: read from the weights)")


def _check_classes(args):
    if args.classes is not None and args.classes < 1:
        raise ValueError("--classes must be an integer >= 1, got %d" % args.classes)


def _check_outputs(paths):
    """Refuse output files that cannot be written (before any work): a directory in the
    way, or a regular file where a directory of the path should be."""
    from ..io import WriteError, non_directory_ancestor
    for path in paths:
        ancestor = non_directory_ancestor(path)
        if ancestor is not None:
            raise WriteError(errno.ENOTDIR, "%s is a file, not a directory" % ancestor, path)
        if os.path.isdir(path):
            raise WriteError(errno.EISDIR, "it is a directory", path)


@contextlib.contextmanager
def _writing(out):
    """Turn a failure to write ``out`` (a read-only or full disk, ...) into one line that
    names the file and the reason (:class:`resattn.io.WriteError`)."""
    from ..io import write_error
    try:
        yield
    except (OSError, RuntimeError) as err:
        clear = write_error(getattr(err, "filename2", None) or out, err)
        if clear is None or clear is err:
            raise
        raise clear from err


def _symbol_files(prefix):
    return [prefix + "-symbol.json", prefix + "-0000.params"]


def _export_args(p):
    _trained_model_args(p)
    p.add_argument("--format", required=True, help="symbol (MXNet JSON + params) or onnx")
    p.add_argument("-o", "--out", required=True,
                   help="symbol: prefix of PREFIX-symbol.json/-0000.params; onnx: the .onnx file")
    p.add_argument("--input-size", type=size_type, default=None,
                   help="N or HxW traced for shapes (default: the model's); the exported "
                        "graph accepts other sizes")
    p.add_argument("--static", action="store_true",
                   help="onnx: fix batch 1 and --input-size instead of dynamic shapes")
    p.add_argument("--no-check", action="store_true",
                   help="onnx: skip the comparison with MXNet in ONNX Runtime")


@command("export", "export weights as an MXNet symbol (JSON + params) or an ONNX file",
         _export_args)
def _export(args):
    from .. import deploy
    check_choice("--format", args.format, EXPORT_FORMATS)
    _check_classes(args)
    _check_outputs(_symbol_files(args.out) if args.format == "symbol" else [args.out])
    net, model, _ = load_trained(args, classes=args.classes)
    size = args.input_size or net.pretrained_cfg.input_size
    if args.format == "symbol":
        with _writing(args.out):
            sym_path, params_path = deploy.export_symbol(net, args.out, size)
        print("wrote %s and %s (load with resattn.deploy.load_symbol(%r))"
              % (sym_path, params_path, args.out))
        return 0
    with _writing(args.out):
        deploy.export_onnx(net, args.out, size, dynamic=not args.static)
    print("wrote %s (%s shapes)" % (args.out, "static" if args.static else "dynamic"))
    if not args.no_check:
        try:
            importlib.import_module("onnxruntime")
        except ImportError:
            print("not checked: onnxruntime is not installed")
            return 0
        base = size if isinstance(size, tuple) else (size, size)
        sizes = [base] if args.static else [base, (base[0] + 8, max(base[1] - 8, 8))]
        diffs = deploy.check_onnx(args.out, net, sizes, batch_size=1 if args.static else 2)
        print("checked in ONNX Runtime against MXNet: %s" % ", ".join(
            "%s rel. diff %.1e" % ("x".join(map(str, s)), d) for s, d in diffs.items()))
    return 0


def _quantize_args(p):
    _trained_model_args(p)
    p.add_argument("--calib-dataset", required=True,
                   help="dataset whose training split calibrates (see `resattn train --help`)")
    p.add_argument("--calib-batches", type=int, default=5, help="calibration batches (5)")
    p.add_argument("--calib-mode", default="naive", help="naive (default), entropy or none")
    p.add_argument("--batch-size", type=int, default=32, help="calibration/eval batch (32)")
    p.add_argument("--data-root", default=None, help="where CIFAR is stored")
    p.add_argument("-o", "--out", required=True,
                   help="prefix of the INT8 model: PREFIX-symbol.json and PREFIX-0000.params")
    p.add_argument("--eval", action="store_true",
                   help="also report top-1 of float32 and INT8 on the dataset's test split")
    p.add_argument("--no-amx", action="store_true",
                   help="do not enable Intel AMX (used by default where the CPU has it)")


@command("quantize", "INT8 post-training quantization for CPU, calibrated on a few batches",
         _quantize_args)
def _quantize(args):
    import numpy as np
    from .. import deploy
    from ..data import dataset_info, get_data_loader
    from ..training import evaluate
    check_choice("--calib-mode", args.calib_mode, CALIB_MODES)
    if args.calib_batches < 1:
        raise ValueError("--calib-batches must be >= 1, got %d" % args.calib_batches)
    if args.batch_size < 1:
        raise ValueError("--batch-size must be >= 1, got %d" % args.batch_size)
    _check_classes(args)
    _check_outputs(_symbol_files(args.out))
    amx = False if args.no_amx else deploy.enable_amx()  # before any operator runs
    net, model, _ = load_trained(args, classes=args.classes)
    # Calibrate (and evaluate) on what the weights expect, not the dataset's statistics.
    data_kw = dict(data_kwargs(args), **weights_data_kwargs(net))
    info = dataset_info(args.calib_dataset)
    # Calibrate on training images without augmentation, in a fixed shuffled order.
    np.random.seed(0)
    calib = get_data_loader(args.calib_dataset, True, args.batch_size, augment=False,
                            shuffle=True, last_batch="keep", **data_kw)
    # deploy.quantize takes the first --calib-batches batches, or all there are.
    try:
        available = len(calib)
    except TypeError:
        available = None
    used = args.calib_batches if available is None else min(args.calib_batches, available)
    qnet = deploy.quantize(net, calib, args.calib_batches, calib_mode=args.calib_mode)
    with _writing(args.out):
        sym_path, params_path = deploy.export_symbol(qnet, args.out, _image_size(calib))
    print("wrote %s and %s (INT8, %s calibration on %d batch%s of %d%s; AMX %s)"
          % (sym_path, params_path, args.calib_mode, used, "" if used == 1 else "es",
             args.batch_size, ", all the %s training split has (%s images), not the %d "
             "asked for" % (args.calib_dataset, _images(calib), args.calib_batches)
             if used < args.calib_batches else "",
             "on" if amx else "off"))
    if args.eval:
        val = get_data_loader(args.calib_dataset, False, args.batch_size, **data_kw)
        net.hybridize(static_alloc=True)
        fp32 = evaluate(net, val, classes=info["classes"])["top1"]
        int8 = evaluate(qnet, val, classes=info["classes"])["top1"]
        print("%s on %s test split: top1 float32 %.4f, int8 %.4f (drop %.2f points)"
              % (model, args.calib_dataset, fp32, int8, 100 * (fp32 - int8)))
    return 0


def _images(loader):
    try:
        return "%d" % len(loader._dataset)
    except (AttributeError, TypeError):
        return "?"


def _image_size(loader):
    for batch in loader:
        return tuple(batch[0].shape[2:])
    raise ValueError("calibration dataset is empty")

