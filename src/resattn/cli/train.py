"""``resattn train``: train a zoo model and write metrics and checkpoints (also as a worker
of a distributed job, under ``resattn launch``)."""
import argparse
import errno
import os

from ..training.config import (DTYPES, INITS, KVSTORES, LR_MODES, NONFINITE, OPTIMIZERS,
                               WARMUP_EPOCHS)
from ._base import (add_data_args, add_gpus_arg, add_model_args, command, data_kwargs,
                    model_kwargs, worker_exits_on_failure)


def _train_args(p):
    add_model_args(p)
    add_data_args(p)
    add_gpus_arg(p)
    # None: not given, so that --config can say (flags > --config > defaults).
    p.set_defaults(num_workers=None)
    p.add_argument("--config", default=None,
                   help="JSON file of settings, keys as in a run's config.json (which it may "
                        "be): the training settings, model_kwargs (width_mult, variant, "
                        "attention, learning, ...), cutout, subset, num_workers, data_root, "
                        "syncbn; what a run only records (base_lr, classes, ctx, workers, threads, "
                        "global_batch_size) is ignored, model and dataset come from the "
                        "flags. Precedence: flags > --config > defaults")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--image-size", type=int, default=None, metavar="N",
                   help="train and test at NxN pixels instead of the dataset's size (for "
                        "cluttered-digits: the canvas side); eval, predict and masks read it "
                        "from the checkpoint's config")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.params")
    p.add_argument("--overwrite", action="store_true",
                   help="start afresh even if OUT already holds a run")
    p.add_argument("--finetune", default=None, metavar="PARAMS|TAG",
                   help="start from this resattn .params file or published tag (`resattn list "
                        "--pretrained`); a classifier of another size is replaced by a new one, "
                        "and the new data is normalised and sized as the weights expect")
    p.add_argument("--dataset-stats", action="store_true",
                   help="with --finetune: normalise with the dataset's own mean and std, not "
                        "the weights'")
    p.add_argument("--lr", type=float, default=None, help="base learning rate (0.1 x batch/64)")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default=None)
    p.add_argument("--momentum", type=float, default=None)
    p.add_argument("--wd", type=float, default=None)
    p.add_argument("--no-wd", dest="no_wd", action="store_true", default=None,
                   help="no weight decay on biases and BatchNorm (default)")
    p.add_argument("--wd-all", dest="no_wd", action="store_false",
                   help="weight decay on every parameter")
    p.add_argument("--lr-mode", choices=LR_MODES, default=None)
    p.add_argument("--warmup-epochs", type=int, default=None,
                   help="linear warm-up epochs (default %d, or epochs - 1 for shorter runs)"
                        % WARMUP_EPOCHS)
    p.add_argument("--lr-steps", default=None, help="epochs of step decay, e.g. 80,120")
    p.add_argument("--lr-decay", type=float, default=None)
    p.add_argument("--mixup-alpha", type=float, default=None, help="0 switches mixup off")
    p.add_argument("--mixup-off-epochs", type=int, default=None)
    p.add_argument("--label-smoothing", type=float, default=None)
    p.add_argument("--cutout", type=int, default=None, help="cutout square side (0: off)")
    p.add_argument("--init", choices=INITS, default=None)
    p.add_argument("--zero-init-residual", action=argparse.BooleanOptionalAction, default=None,
                   help="start every residual unit as the identity, its branch's last layer "
                        "at zero (default: on; docs/attention.md measures why)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--data-seed", type=int, default=None,
                   help="seeds the data itself (cluttered-digits' generation, the noisy labels) "
                        "apart from the training seed; default: --seed")
    p.add_argument("--label-noise", type=float, default=0.0, metavar="P",
                   help="replace a fraction P in [0, 1) of the training labels by wrong ones, "
                        "at random (seeded by --data-seed); test labels stay true")
    p.add_argument("--dtype", choices=DTYPES, default=None)
    p.add_argument("--nonfinite", choices=NONFINITE, default=None,
                   help="on a NaN/inf loss: stop (default) or skip the batch")
    p.add_argument("--kvstore", default=None, choices=KVSTORES,
                   help="gradient aggregation (default device); dist_* under `resattn launch`, "
                        "with --batch-size per worker (docs/distributed.md)")
    p.add_argument("--syncbn", action="store_true", default=None,
                   help="SyncBatchNorm: batch statistics over all --gpus of a worker")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


#: Keys of a run's ``config.json`` that record the run rather than set it: ``--config``
#: accepts and ignores them (the base rate follows from lr and batch size, the classes
#: from the dataset, the devices from --gpus, the workers from the job).
INFORMATIONAL_KEYS = ("base_lr", "classes", "ctx", "workers", "global_batch_size", "threads")
#: Keys of ``config.json`` besides the :class:`~resattn.training.TrainConfig` fields that
#: ``--config`` applies (where the flag is not given); ``model`` and ``dataset`` are
#: required flags, so the file's are only compared with them.
RUN_KEYS = ("model", "dataset", "model_kwargs", "cutout", "subset", "num_workers",
            "data_root", "syncbn", "image_size")


def _read_config(path, known):
    import json
    try:
        with open(path) as f:
            loaded = json.load(f)
    except (OSError, ValueError) as err:
        raise ValueError("--config %s: %s" % (path, err)) from None
    if not isinstance(loaded, dict):
        raise ValueError("--config %s must hold a JSON object" % path)
    unknown = sorted(set(loaded) - known - set(RUN_KEYS) - set(INFORMATIONAL_KEYS))
    if unknown:
        raise ValueError("--config %s: unknown keys %s; known: %s"
                         % (path, ", ".join(unknown),
                            ", ".join(sorted(known | set(RUN_KEYS) | set(INFORMATIONAL_KEYS)))))
    kwargs = loaded.get("model_kwargs", {})
    if kwargs is None:
        kwargs = loaded["model_kwargs"] = {}
    if not isinstance(kwargs, dict):
        raise ValueError("--config %s: model_kwargs must be a JSON object of get_model "
                         "arguments (e.g. {\"width_mult\": 0.25}), got %r" % (path, kwargs))
    if "classes" in kwargs:
        raise ValueError("--config %s: model_kwargs may not set classes: the classifier size "
                         "is the dataset's" % path)
    return loaded


def _run_settings(args, loaded):
    """Apply the run keys of a ``--config`` file to ``args`` where the flag was not given;
    returns the notes to print (what the file said that is not used)."""
    notes = []
    for key in ("model", "dataset"):
        if key in loaded and loaded[key] != getattr(args, key):
            notes.append("%s %r (--%s %s is used)" % (key, loaded[key], key, getattr(args, key)))
    kinds = {"subset": (int, "an integer"), "num_workers": (int, "an integer"),
             "image_size": (int, "an integer"),
             "data_root": (str, "a path"), "syncbn": (bool, "true or false")}
    for key, (kind, what) in kinds.items():
        value = loaded.get(key)
        if value is None:
            continue
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ValueError("--config %s: %s must be %s, got %r" % (args.config, key, what,
                                                                    value))
        if getattr(args, key) is None:
            setattr(args, key, value)
    ignored = [key for key in INFORMATIONAL_KEYS if key in loaded]
    if ignored:
        notes.append("%s (what the run it comes from recorded, not settings)"
                     % ", ".join(ignored))
    return notes


def _model_kwargs(args, loaded):
    """get_model arguments: the flags, then ``--config``'s model_kwargs."""
    return model_kwargs(args, {"model_kwargs": loaded.get("model_kwargs") or {}})


def _train_settings(args, loaded=None):
    """The :class:`~resattn.training.TrainConfig` of ``--config`` and the flags, cutout, and
    notes to print: flags > ``--config`` > defaults; a warm-up left to the default is cut
    to ``epochs - 1`` for runs too short for the recipe's 5 epochs."""
    import dataclasses
    from ..training import TrainConfig
    from ..training.config import default_warmup_epochs
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    if loaded is None:
        loaded = _read_config(args.config, fields) if args.config else {}
    settings = {k: v for k, v in loaded.items() if k in fields or k == "cutout"}
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
    notes = []
    if "warmup_epochs" not in settings:
        epochs = settings.get("epochs", TrainConfig.epochs)
        warmup = default_warmup_epochs(epochs)
        if warmup != WARMUP_EPOCHS:
            settings["warmup_epochs"] = warmup
            notes.append("warm-up: %d epoch%s, not the recipe's %d, which do not fit in "
                         "--epochs %d (--warmup-epochs sets it)"
                         % (warmup, "" if warmup == 1 else "s", WARMUP_EPOCHS, epochs))
    return TrainConfig(**settings), cutout, notes


def _check_image_size(size):
    """``--image-size``: an integer side from 8 to :data:`resattn.io.MAX_INPUT_SIDE`, or None."""
    from ..io import MAX_INPUT_SIDE
    if size is None:
        return
    if isinstance(size, bool) or not isinstance(size, int) or not 8 <= size <= MAX_INPUT_SIDE:
        raise ValueError("--image-size must be an integer from 8 to %d pixels, got %r"
                         % (MAX_INPUT_SIDE, size))


def _check_out(out):
    """Refuse an ``--out`` that cannot become a run directory, before anything is built."""
    from ..io import WriteError
    path = os.path.abspath(out)
    if os.path.exists(path) and not os.path.isdir(path):
        raise WriteError(errno.ENOTDIR, "it is a file, not a directory", out)
    existing = path
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise WriteError(errno.ENOTDIR, "%s is a file, not a directory" % existing, out)
    if not os.access(existing, os.W_OK | os.X_OK):
        try:
            readonly = os.statvfs(existing).f_flag & os.ST_RDONLY
        except (OSError, AttributeError):
            readonly = False
        code = errno.EROFS if readonly else errno.EACCES
        raise WriteError(code, "%s%s" % (os.strerror(code), "" if existing == path
                                         else " (%s)" % existing), out)


def _write_failure(err, out):
    """The one-line error for an OSError raised while the run wrote into ``out``, or None
    for an OSError about another file (reading data, ...)."""
    from ..io import write_error
    name = getattr(err, "filename", None)
    if name is None:
        return None
    root, name = os.path.abspath(out), os.path.abspath(os.fspath(name))
    if name == root or name.startswith(root + os.sep):
        return write_error(name, err)
    if root.startswith(name.rstrip(os.sep) + os.sep):  # creating a directory above --out
        return write_error(out, err)
    return None


def _thread_record():
    """``{"omp_num_threads", "why"}`` for config.json: what this run computes with."""
    from .. import _threads
    return {"omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "why": _threads.CHOICE[1]}


def _print_health(history, classes):
    """The run's verdict after its summary line: FAILED with the reasons, or nothing."""
    from ..training.callbacks import HEALTH_ADVICE, run_health
    problems = run_health(history, classes)
    if problems:
        print("FAILED: %s; %s" % ("; ".join(text for _, text in problems),
                                  HEALTH_ADVICE[problems[0][0]]), flush=True)
    else:
        warned = [r["epoch"] for r in history if r.get("warnings")]
        if warned:
            print("note: warnings at epoch%s %s (train.log has them); the last epoch is healthy"
                  % ("" if len(warned) == 1 else "s", ", ".join(map(str, warned))), flush=True)


def _run_preprocessing(dataset, size, mean, std):
    """The weight config's ``preprocessing`` of a run: what its evaluation images went
    through (the dataset's style: resized, or resized and centre-cropped as on ImageNet)."""
    from ..data import dataset_spec
    center = dataset_spec(dataset).style == "imagenet"
    return {"input_size": size, "scale": 255.0, "mean": list(mean), "std": list(std),
            "crop_mode": "center" if center else "squash", "crop_pct": 224 / 256,
            "interpolation": "bilinear"}


def _finetune_source(args, kwargs):
    """``(path, PretrainedCfg or None, kwargs)`` of ``--finetune``: a tag is fetched (downloaded,
    verified, converted once); the weights' architecture fills the arguments not given, and
    given ones that contradict it are refused."""
    from ..io import read_weights_config
    from ..models import list_weights, merge_arch, resolve_weights
    from ..models.pretrained import PretrainedCfg
    tags = [w.tag for w in list_weights()]
    if args.finetune not in tags and not os.path.isfile(args.finetune):
        raise ValueError("--finetune %s: no such file, nor a published weights tag (%s)"
                         % (args.finetune, ", ".join(tags)))
    path, _ = resolve_weights(args.finetune)
    config = read_weights_config(path)
    if config is None:
        return path, None, kwargs
    arch = {k: v for k, v in config["arch"].items() if k != "classes"}
    kwargs = merge_arch("the weights of --finetune %s" % args.finetune, arch, kwargs,
                        overridable=False)
    return path, PretrainedCfg.from_config(config, file=path), kwargs


def _load_for_finetuning(net, path, ctx):
    """Load ``path`` into ``net``; a classifier of another shape is left to be initialised."""
    from .._compat import structured_params
    from ..io import assign_parameters, read_params
    saved = read_params(path)
    ignore = [name for name, param in structured_params(net.output, "output").items()
              if name in saved and tuple(saved[name].shape) != param.shape]
    assign_parameters(net, saved, ctx=ctx[0], source=path, ignore=ignore)
    if ignore:
        print("--finetune: new classifier (%s) for %d classes; the rest from %s"
              % (", ".join(ignore), net.classes, path))


@command("train", "train a zoo model (CIFAR recipe by default) and write metrics and checkpoints",
         _train_args)
def _train(args):
    import dataclasses
    from ..training import TrainConfig
    from ..training.config import check_num_workers
    # Everything is checked before anything is built or written (--out is created by fit).
    loaded = {}
    if args.config:
        loaded = _read_config(args.config, {f.name for f in dataclasses.fields(TrainConfig)})
    notes = ["--config %s: ignored: %s" % (args.config, note)
             for note in _run_settings(args, loaded)]
    cfg, cutout, more = _train_settings(args, loaded)
    notes += more
    args.num_workers = check_num_workers(0 if args.num_workers is None else args.num_workers)
    _check_image_size(args.image_size)
    if not 0 <= args.label_noise < 1:  # also refuses nan
        raise ValueError("--label-noise must be a fraction in [0, 1), got %r" % args.label_noise)
    if args.data_seed is not None and args.data_seed < 0:
        raise ValueError("--data-seed must be >= 0, got %d" % args.data_seed)
    args.syncbn = bool(args.syncbn)
    if isinstance(cutout, bool) or not isinstance(cutout, int):
        raise ValueError("cutout must be an integer (0: off), got %r" % (cutout,))
    _check_out(args.out)
    import mxnet as mx
    from .. import get_model
    from ..data import dataset_info, get_data_loader
    from ..training import create_kvstore, fit, get_context
    ctx = get_context(args.gpus)
    info = dataset_info(args.dataset)
    kwargs = _model_kwargs(args, loaded)
    finetune = finetune_cfg = None
    if args.finetune:
        finetune, finetune_cfg, kwargs = _finetune_source(args, kwargs)
    if args.dataset_stats and finetune_cfg is None:
        raise ValueError("--dataset-stats applies to --finetune weights with a config")
    norm_kwargs = {}
    if args.syncbn:
        norm_kwargs = dict(norm_layer=mx.gluon.contrib.nn.SyncBatchNorm,
                           norm_kwargs={"num_devices": len(ctx)})
    net = get_model(args.model, classes=info["classes"], **kwargs, **norm_kwargs)
    if finetune:
        _load_for_finetuning(net, finetune, ctx)
    # Each worker trains on its strided shard; synchronous workers also validate on one and
    # fit sums the counts, asynchronous ones (not in step) each validate on everything.
    kv, rank, parts = cfg.kvstore, 0, 1
    if cfg.kvstore.startswith("dist"):
        kv = create_kvstore(cfg.kvstore)
        rank, parts = kv.rank, kv.num_workers

    def job():
        val_parts = parts if "async" not in cfg.kvstore else 1
        data_kw = data_kwargs(args)
        mean, std, size = info["mean"], info["std"], args.image_size or info["input_size"]
        if finetune_cfg is not None and not args.dataset_stats:
            # The new data as the weights expect it (their mean, std and size).
            mean, std = finetune_cfg.normalization()
            data_kw["normalize"] = (mean, std)
            if args.image_size is None and isinstance(finetune_cfg.input_size, int):
                size = finetune_cfg.input_size
            if rank == 0:
                print("--finetune: preprocessing of the weights: %s px, mean %s, std %s "
                      "(--dataset-stats for the dataset's own)"
                      % (size, tuple(round(m, 4) for m in mean),
                         tuple(round(v, 4) for v in std)), flush=True)
        if size != info["input_size"]:
            data_kw["image_size"] = size
        data_seed = cfg.seed if args.data_seed is None else args.data_seed
        train_data = get_data_loader(args.dataset, True, cfg.batch_size, cutout=cutout,
                                     seed=data_seed, num_parts=parts, part_index=rank,
                                     label_noise=args.label_noise, **data_kw)
        val_data = get_data_loader(args.dataset, False, cfg.batch_size, seed=data_seed,
                                   num_parts=val_parts, part_index=rank if val_parts > 1 else 0,
                                   **data_kw)
        if rank == 0:
            from .. import _threads
            print("threads: %s" % _threads.CHOICE[1], flush=True)
        if parts > 1:
            print("%s: worker rank %d of %d, %d batches of %d per epoch from its shard (global "
                  "batch %d)" % (cfg.kvstore, rank, parts, len(train_data), cfg.batch_size,
                                 cfg.batch_size * parts), flush=True)
        extra = {"model": args.model, "dataset": args.dataset, "cutout": cutout,
                 "model_kwargs": kwargs, "subset": args.subset,
                 "num_workers": args.num_workers, "data_root": args.data_root,
                 "syncbn": args.syncbn, "threads": _thread_record()}
        if args.image_size is not None:  # absent otherwise, as in 0.1's config.json
            extra["image_size"] = args.image_size
        if args.data_seed is not None:
            extra["data_seed"] = args.data_seed
        if args.label_noise:
            extra["label_noise"] = args.label_noise
        weights = {"model": args.model, "arch": dict(kwargs, classes=info["classes"]),
                   "preprocessing": _run_preprocessing(args.dataset, size, mean, std),
                   "class_names": info.get("class_names"),
                   "provenance": {"trained_by": "resattn train", "dataset": args.dataset,
                                  "seed": cfg.seed}}
        history = fit(net, train_data, val_data, args.out, config=cfg, ctx=ctx,
                      classes=info["classes"], resume=args.resume, overwrite=args.overwrite,
                      reinit=not args.finetune,
                      progress=not args.no_progress, kvstore=kv, rank=rank,
                      extra_config=extra, weights_config=weights)
        if history and rank == 0:
            best = max(history, key=lambda r: r["val_top1"])
            print("best val_top1 %.4f at epoch %d; outputs in %s (best.params, last.params, "
                  "metrics.jsonl, curves.png)" % (best["val_top1"], best["epoch"], args.out))
            _print_health(history, info["classes"])
        return 0

    def guarded():
        for note in notes:
            if rank == 0:
                print(note, flush=True)
        try:
            return job()
        except OSError as err:
            # fit has removed the temporaries of a checkpoint that failed halfway
            # (training.rundir.run_directory); here the error becomes one line.
            clear = _write_failure(err, args.out)
            if clear is None:
                raise
            if clear is not err:
                raise clear from err
            raise

    if isinstance(kv, str):
        return guarded()
    with worker_exits_on_failure("train"):
        return guarded()
