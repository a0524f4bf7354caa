"""The ``resattn`` command line: a thin layer over the Python API.

Every subcommand is a ``(add_arguments, run)`` pair registered in
:data:`COMMANDS`. Bad input ends with a one-line error and exit status 2.
"""
import argparse
import os
import sys

__all__ = ["main", "build_parser", "COMMANDS"]

COMMANDS = {}


def command(name, help):
    """Register ``run(args)`` as subcommand ``name``; ``run.arguments`` adds its options."""
    def wrap(run):
        COMMANDS[name] = (help, run)
        return run
    return wrap


def _size(text):
    try:
        parts = [int(p) for p in text.lower().replace(",", "x").split("x")]
    except ValueError:
        raise argparse.ArgumentTypeError("input size must be N or HxW, got %r" % text) from None
    if len(parts) not in (1, 2) or min(parts) < 1:
        raise argparse.ArgumentTypeError("input size must be N or HxW with N >= 1, got %r" % text)
    return parts[0] if len(parts) == 1 else tuple(parts)


# ----------------------------------------------------------------------------- list / info
def _list_args(p):
    p.add_argument("--input-size", type=_size, default=None,
                   help="count MACs at this size instead of each model's own")


@command("list", "list the models with parameters and multiply-accumulates")
def _list(args):
    from .. import get_model, get_model_list, model_config, profile
    header = "%-26s %-8s %-8s %5s %10s %9s %11s %10s" % (
        "model", "stem", "variant", "input", "params(M)", "paper(M)", "MACs(G)", "paper(G)")
    print(header)
    print("-" * len(header))
    for name in get_model_list():
        cfg = model_config(name)
        size = args.input_size or cfg["input_size"]
        prof = profile(get_model(name), size)
        paper_p = "%.1f" % cfg["paper_params"] if "paper_params" in cfg else "-"
        paper_m = "%.1f" % cfg["paper_macs"] if "paper_macs" in cfg else "-"
        print("%-26s %-8s %-8s %5s %10.2f %9s %11.3f %10s" % (
            name, "cifar" if cfg["input_size"] == 32 else "imagenet", cfg["variant"],
            "x".join(map(str, prof.input_shape[2:])) if not isinstance(size, int) else size,
            prof.params / 1e6, paper_p, prof.macs / 1e9, paper_m))
    return 0


_list.arguments = _list_args


def _info_args(p):
    p.add_argument("name", help="model name (see `resattn list`)")
    p.add_argument("--input-size", type=_size, default=None, help="N or HxW (default: model's)")
    p.add_argument("--depth", type=int, default=None,
                   help="group layers by the first DEPTH parts of their names")
    p.add_argument("--classes", type=int, default=None, help="classifier size")


@command("info", "layer-by-layer summary, parameters and multiply-accumulates of a model")
def _info(args):
    from .. import get_model, model_config, profile
    cfg = model_config(args.name)
    kwargs = {} if args.classes is None else {"classes": args.classes}
    net = get_model(args.name, **kwargs)
    if args.depth is not None and args.depth < 1:
        raise ValueError("--depth must be >= 1, got %d" % args.depth)
    prof = profile(net, args.input_size or cfg["input_size"])
    print("%s: %s variant, input %s, mean %s, std %s" % (
        args.name, cfg["variant"], cfg["input_size"], cfg["mean"], cfg["std"]))
    if cfg.get("published"):
        print("published: %s" % cfg["published"])
    print(prof.table(args.depth))
    return 0


_info.arguments = _info_args


# ----------------------------------------------------------------------------- convert
def _convert_args(p):
    p.add_argument("--model", required=True, help="resattn model to load into")
    p.add_argument("--source", required=True, choices=("gluoncv", "pytorch", "seed", "resattn"),
                   help="format of the input file")
    p.add_argument("--variant", choices=("official", "gluoncv"), default=None,
                   help="mask wiring of the resattn model (default: the model's)")
    p.add_argument("--classes", type=int, default=None, help="classes of the file")
    p.add_argument("weights", help="foreign weight file")
    p.add_argument("-o", "--out", required=True, help="resattn .params file to write")


@command("convert", "convert GluonCV, PyTorch-reference or seed weights to a resattn file")
def _convert(args):
    from ..models.convert import convert_file
    kwargs = {k: v for k, v in (("variant", args.variant), ("classes", args.classes))
              if v is not None}
    convert_file(args.model, args.weights, args.source, args.out, **kwargs)
    print("wrote %s (%s weights from %s, source %s)" % (args.out, args.model, args.weights,
                                                        args.source))
    return 0


_convert.arguments = _convert_args


# ----------------------------------------------------------------------------- train / eval
def _model_args(p, model_required=True):
    p.add_argument("--model", required=model_required, help="zoo model (see `resattn list`)")
    p.add_argument("--width-mult", type=float, default=None,
                   help="scale every width (quick experiments); default 1")
    p.add_argument("--variant", choices=("official", "gluoncv"), default=None)
    p.add_argument("--attention", choices=("mixed", "channel", "spatial", "none"), default=None,
                   help="mask activation; none: plain residual network of the same depth")
    p.add_argument("--learning", choices=("arl", "nal"), default=None)
    p.add_argument("--dataset", required=True,
                   help="cifar10, cifar100, digits, cluttered-digits, imagefolder:PATH, rec:PATH")
    p.add_argument("--data-root", default=None, help="where CIFAR is stored/downloaded")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--num-workers", type=int, default=0,
                   help="data loading processes (0: in the main process)")
    p.add_argument("--subset", type=int, default=None, help="use only the first N images")
    p.add_argument("--gpus", default="", help="comma-separated GPU ids; CPU when empty")


def _model_kwargs(args, saved=None):
    """Model settings from the command line, falling back to a run's config.json."""
    kwargs = dict((saved or {}).get("model_kwargs", {}))
    for key in ("width_mult", "variant", "attention", "learning"):
        value = getattr(args, key, None)
        if value is not None:
            kwargs[key] = value
    return kwargs


def _train_args(p):
    _model_args(p)
    p.add_argument("--config", default=None,
                   help="JSON file of settings (keys as in config.json); flags override it")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.params")
    p.add_argument("--overwrite", action="store_true",
                   help="start afresh even if OUT already holds a run")
    p.add_argument("--finetune", default=None, metavar="PARAMS",
                   help="start from this resattn .params file (a classifier of another size is "
                        "replaced by a new one)")
    p.add_argument("--lr", type=float, default=None, help="base learning rate (0.1 x batch/64)")
    p.add_argument("--optimizer", choices=("nag", "sgd", "adam"), default=None)
    p.add_argument("--momentum", type=float, default=None)
    p.add_argument("--wd", type=float, default=None)
    p.add_argument("--no-wd", dest="no_wd", action="store_true", default=None,
                   help="no weight decay on biases and BatchNorm (default)")
    p.add_argument("--wd-all", dest="no_wd", action="store_false",
                   help="weight decay on every parameter")
    p.add_argument("--lr-mode", choices=("cosine", "step", "linear", "poly", "constant"),
                   default=None)
    p.add_argument("--warmup-epochs", type=int, default=None)
    p.add_argument("--lr-steps", default=None, help="epochs of step decay, e.g. 80,120")
    p.add_argument("--lr-decay", type=float, default=None)
    p.add_argument("--mixup-alpha", type=float, default=None, help="0 switches mixup off")
    p.add_argument("--mixup-off-epochs", type=int, default=None)
    p.add_argument("--label-smoothing", type=float, default=None)
    p.add_argument("--cutout", type=int, default=None, help="cutout square side (0: off)")
    p.add_argument("--init", choices=("msraprelu", "xavier"), default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--dtype", choices=("float32", "float16"), default=None)
    p.add_argument("--nonfinite", choices=("stop", "skip"), default=None,
                   help="on a NaN/inf loss: stop (default) or skip the batch")
    p.add_argument("--kvstore", default=None, choices=_KVSTORES,
                   help="gradient aggregation (default device); dist_* under `resattn launch`, "
                        "with --batch-size per worker (docs/distributed.md)")
    p.add_argument("--syncbn", action="store_true",
                   help="SyncBatchNorm: batch statistics over all --gpus of a worker")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


#: As :data:`resattn.train.KVSTORES`, here so that building the parser imports no MXNet.
_KVSTORES = ("local", "device", "dist_sync", "dist_device_sync", "dist_async")


_TRAIN_DEFAULTS = {"epochs": 220, "batch_size": 64, "cutout": 0}


def _train_settings(args):
    import dataclasses
    import json
    from ..training import TrainConfig
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    settings = {}
    if args.config:
        try:
            with open(args.config) as f:
                loaded = json.load(f)
        except (OSError, ValueError) as err:
            raise ValueError("--config %s: %s" % (args.config, err)) from None
        if not isinstance(loaded, dict):
            raise ValueError("--config %s must hold a JSON object" % args.config)
        unknown = sorted(set(loaded) - fields - {"cutout", "model_kwargs"})
        if unknown:
            raise ValueError("--config %s: unknown keys %s; known: %s"
                             % (args.config, ", ".join(unknown), ", ".join(sorted(fields))))
        settings.update(loaded)
    for key in fields | {"cutout"}:
        value = getattr(args, key, None)
        if value is not None:
            settings[key] = value
    if isinstance(settings.get("lr_steps"), str):
        try:
            settings["lr_steps"] = tuple(int(s) for s in settings["lr_steps"].split(",") if s)
        except ValueError:
            raise ValueError("--lr-steps must be comma-separated epochs, got %r"
                             % settings["lr_steps"]) from None
    cutout = settings.pop("cutout", 0)
    settings.pop("model_kwargs", None)
    for key, value in _TRAIN_DEFAULTS.items():
        if key != "cutout":
            settings.setdefault(key, value)
    return TrainConfig(**settings), cutout


def _load_for_finetuning(net, path, ctx):
    """Load ``path`` into ``net``; a classifier of another shape is left to be initialised."""
    import mxnet as mx
    from ..io import load_parameters
    if not os.path.isfile(path):
        raise ValueError("--finetune %s: no such file" % path)
    try:
        saved = mx.nd.load(path)
    except mx.base.MXNetError:
        saved = {}  # load_parameters below reports the unreadable file
    ignore = [name for name, param in net.output._collect_params_with_prefix("output").items()
              if name in saved and tuple(saved[name].shape) != param.shape]
    load_parameters(net, path, ctx=ctx[0], ignore=ignore)
    if ignore:
        print("--finetune: new classifier (%s) for %d classes; the rest from %s"
              % (", ".join(ignore), net.classes, path))


@command("train", "train a zoo model (CIFAR recipe by default) and write metrics and checkpoints")
def _train(args):
    import mxnet as mx
    from .. import get_model
    from ..data import dataset_info, get_data_loader
    from ..training import create_kvstore, fit, get_context
    cfg, cutout = _train_settings(args)
    if cfg.kvstore not in _KVSTORES:  # from --config
        raise ValueError("kvstore must be one of %s, got %r" % (", ".join(_KVSTORES),
                                                                cfg.kvstore))
    ctx = get_context(args.gpus)
    info = dataset_info(args.dataset)
    model_kwargs = _model_kwargs(args)
    norm_kwargs = {}
    if args.syncbn:
        norm_kwargs = dict(norm_layer=mx.gluon.contrib.nn.SyncBatchNorm,
                           norm_kwargs={"num_devices": len(ctx)})
    net = get_model(args.model, classes=info["classes"], **model_kwargs, **norm_kwargs)
    if args.finetune:
        _load_for_finetuning(net, args.finetune, ctx)
    # Each worker trains on its strided shard; synchronous workers also validate on one and
    # fit sums the counts, asynchronous ones (not in step) each validate on everything.
    kv, rank, parts = cfg.kvstore, 0, 1
    if cfg.kvstore.startswith("dist"):
        from .launch import worker_exits_on_failure
        kv = create_kvstore(cfg.kvstore)
        rank, parts = kv.rank, kv.num_workers

    def job():
        val_parts = parts if "async" not in cfg.kvstore else 1
        data_kw = dict(num_workers=args.num_workers, subset=args.subset)
        if args.data_root:
            data_kw["root"] = args.data_root
        train_data = get_data_loader(args.dataset, True, cfg.batch_size, cutout=cutout,
                                     seed=cfg.seed, num_parts=parts, part_index=rank, **data_kw)
        val_data = get_data_loader(args.dataset, False, cfg.batch_size, seed=cfg.seed,
                                   num_parts=val_parts, part_index=rank if val_parts > 1 else 0,
                                   **data_kw)
        if parts > 1:
            print("%s: worker rank %d of %d, %d batches of %d per epoch from its shard (global "
                  "batch %d)" % (cfg.kvstore, rank, parts, len(train_data), cfg.batch_size,
                                 cfg.batch_size * parts), flush=True)
        extra = {"model": args.model, "dataset": args.dataset, "cutout": cutout,
                 "model_kwargs": model_kwargs, "subset": args.subset,
                 "num_workers": args.num_workers, "data_root": args.data_root,
                 "syncbn": args.syncbn}
        history = fit(net, train_data, val_data, args.out, config=cfg, ctx=ctx,
                      classes=info["classes"], resume=args.resume, overwrite=args.overwrite,
                      reinit=not args.finetune,
                      progress=not args.no_progress, kvstore=kv, rank=rank,
                      extra_config=extra)
        if history and rank == 0:
            best = max(history, key=lambda r: r["val_top1"])
            print("best val_top1 %.4f at epoch %d; outputs in %s (best.params, last.params, "
                  "metrics.jsonl, curves.png)" % (best["val_top1"], best["epoch"], args.out))
        return 0

    if isinstance(kv, str):
        return job()
    with worker_exits_on_failure("train"):
        return job()


_train.arguments = _train_args


def _eval_args(p):
    _model_args(p, model_required=False)
    p.add_argument("--params", required=True, help="resattn .params file")


def _saved_config(params_path):
    import json
    path = os.path.join(os.path.dirname(os.path.abspath(params_path)), "config.json")
    if os.path.isfile(path):
        with open(path) as f:
            return json.load(f)
    return {}


def load_trained(args, classes=None, ctx=None):
    """The network of ``args.params``, built from ``--model`` or the run's config.json.

    Flags (``--width-mult``, ``--variant``, ...) override the saved model
    settings. The classifier size is ``classes``, else config.json's, else
    the one stored in the file. The parameters are loaded with every name and
    shape checked.

    Returns
    -------
    (net, model name, saved config dict)
    """
    from .. import get_model
    from ..io import load_parameters
    if not os.path.isfile(args.params):
        raise ValueError("--params %s: no such file" % args.params)
    saved = _saved_config(args.params)
    model = args.model or saved.get("model")
    if not model:
        raise ValueError("--model is required (no config.json beside %s)" % args.params)
    kwargs = _model_kwargs(args, saved)
    classes = classes or saved.get("classes") or _file_classes(args.params)
    if classes:
        kwargs["classes"] = classes
    net = get_model(model, **kwargs)
    load_parameters(net, args.params, ctx=ctx)
    return net, model, saved


def _file_classes(path):
    """The classifier size stored in a parameter file, or None when it has no ``output``."""
    import mxnet as mx
    try:
        arrays = mx.nd.load(path)
    except mx.base.MXNetError as err:
        raise ValueError("cannot read %s as an MXNet parameter file: %s"
                         % (path, str(err).strip().splitlines()[0])) from None
    for key in ("output.weight", "arg:output.weight"):
        if isinstance(arrays, dict) and key in arrays:
            return int(arrays[key].shape[0])
    return None


@command("eval", "evaluate a .params file: top-1, top-5 and loss")
def _eval(args):
    from ..data import dataset_info, get_data_loader
    from ..training import evaluate, get_context
    ctx = get_context(args.gpus)
    info = dataset_info(args.dataset)
    net, model, saved = load_trained(args, classes=info["classes"], ctx=ctx[0])
    net.hybridize(static_alloc=True)
    data_kw = dict(num_workers=args.num_workers, subset=args.subset)
    if args.data_root:
        data_kw["root"] = args.data_root
    data = get_data_loader(args.dataset, False, args.batch_size or 128,
                           seed=saved.get("seed", 0), **data_kw)
    res = evaluate(net, data, ctx, info["classes"])
    print("%s on %s (%d images): top1 %.4f top5 %.4f loss %.4f" % (
        model, args.dataset, res["samples"], res["top1"], res["top5"], res["loss"]))
    print("top1 %.4f" % res["top1"])
    return 0


_eval.arguments = _eval_args


# ----------------------------------------------------------------------------- entry point
class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, as argparse does, without the usage dump
        self.exit(2, "%s: error: %s (see `%s --help`)\n" % (self.prog, message, self.prog))


#: Modules that register further subcommands with :func:`command` when imported.
COMMAND_MODULES = ("resattn.cli.masks", "resattn.cli.launch", "resattn.cli.deploy")


def build_parser():
    """The argument parser with every registered subcommand."""
    import importlib
    from .. import __version__
    for module in COMMAND_MODULES:
        importlib.import_module(module)
    parser = _Parser(prog="resattn", description="Residual Attention Networks for MXNet Gluon")
    parser.add_argument("--version", action="version", version="resattn " + __version__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, (help_text, run) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        run.arguments(p)
        p.set_defaults(run=run)
    return parser


def main(argv=None):
    """Run the command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    try:
        return args.run(args) or 0
    except (ValueError, FileNotFoundError, ImportError) as err:
        sys.stderr.write("resattn %s: error: %s\n" % (args.command, str(err).splitlines()[0]
                                                      if str(err) else type(err).__name__))
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("resattn %s: interrupted\n" % args.command)
        return 130


if __name__ == "__main__":  # pragma: no cover
    # `python -m resattn.cli`: run the imported module, whose COMMANDS also hold the
    # subcommands that COMMAND_MODULES register (they import resattn.cli, not __main__).
    from resattn.cli import main as _main
    sys.exit(_main())
