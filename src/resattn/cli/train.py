"""``resattn train``: train a zoo model and write metrics and checkpoints (also as a worker
of a distributed job, under ``resattn launch``)."""
import os

from ..training.config import DTYPES, INITS, KVSTORES, LR_MODES, NONFINITE, OPTIMIZERS
from ._base import (add_data_args, add_gpus_arg, add_model_args, command, data_kwargs,
                    model_kwargs, worker_exits_on_failure)


def _train_args(p):
    add_model_args(p)
    add_data_args(p)
    add_gpus_arg(p)
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
    p.add_argument("--optimizer", choices=OPTIMIZERS, default=None)
    p.add_argument("--momentum", type=float, default=None)
    p.add_argument("--wd", type=float, default=None)
    p.add_argument("--no-wd", dest="no_wd", action="store_true", default=None,
                   help="no weight decay on biases and BatchNorm (default)")
    p.add_argument("--wd-all", dest="no_wd", action="store_false",
                   help="weight decay on every parameter")
    p.add_argument("--lr-mode", choices=LR_MODES, default=None)
    p.add_argument("--warmup-epochs", type=int, default=None)
    p.add_argument("--lr-steps", default=None, help="epochs of step decay, e.g. 80,120")
    p.add_argument("--lr-decay", type=float, default=None)
    p.add_argument("--mixup-alpha", type=float, default=None, help="0 switches mixup off")
    p.add_argument("--mixup-off-epochs", type=int, default=None)
    p.add_argument("--label-smoothing", type=float, default=None)
    p.add_argument("--cutout", type=int, default=None, help="cutout square side (0: off)")
    p.add_argument("--init", choices=INITS, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--dtype", choices=DTYPES, default=None)
    p.add_argument("--nonfinite", choices=NONFINITE, default=None,
                   help="on a NaN/inf loss: stop (default) or skip the batch")
    p.add_argument("--kvstore", default=None, choices=KVSTORES,
                   help="gradient aggregation (default device); dist_* under `resattn launch`, "
                        "with --batch-size per worker (docs/distributed.md)")
    p.add_argument("--syncbn", action="store_true",
                   help="SyncBatchNorm: batch statistics over all --gpus of a worker")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _read_config(path, known):
    import json
    try:
        with open(path) as f:
            loaded = json.load(f)
    except (OSError, ValueError) as err:
        raise ValueError("--config %s: %s" % (path, err)) from None
    if not isinstance(loaded, dict):
        raise ValueError("--config %s must hold a JSON object" % path)
    unknown = sorted(set(loaded) - known - {"cutout", "model_kwargs"})
    if unknown:
        raise ValueError("--config %s: unknown keys %s; known: %s"
                         % (path, ", ".join(unknown), ", ".join(sorted(known))))
    return loaded


def _train_settings(args):
    """The :class:`~resattn.training.TrainConfig` of ``--config`` and the flags, and cutout."""
    import dataclasses
    from ..training import TrainConfig
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    settings = _read_config(args.config, fields) if args.config else {}
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
    return TrainConfig(**settings), cutout


def _load_for_finetuning(net, path, ctx):
    """Load ``path`` into ``net``; a classifier of another shape is left to be initialised."""
    from .._compat import structured_params
    from ..io import assign_parameters, read_params
    if not os.path.isfile(path):
        raise ValueError("--finetune %s: no such file" % path)
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
    import mxnet as mx
    from .. import get_model
    from ..data import dataset_info, get_data_loader
    from ..training import create_kvstore, fit, get_context
    cfg, cutout = _train_settings(args)
    ctx = get_context(args.gpus)
    info = dataset_info(args.dataset)
    kwargs = model_kwargs(args)
    norm_kwargs = {}
    if args.syncbn:
        norm_kwargs = dict(norm_layer=mx.gluon.contrib.nn.SyncBatchNorm,
                           norm_kwargs={"num_devices": len(ctx)})
    net = get_model(args.model, classes=info["classes"], **kwargs, **norm_kwargs)
    if args.finetune:
        _load_for_finetuning(net, args.finetune, ctx)
    # Each worker trains on its strided shard; synchronous workers also validate on one and
    # fit sums the counts, asynchronous ones (not in step) each validate on everything.
    kv, rank, parts = cfg.kvstore, 0, 1
    if cfg.kvstore.startswith("dist"):
        kv = create_kvstore(cfg.kvstore)
        rank, parts = kv.rank, kv.num_workers

    def job():
        val_parts = parts if "async" not in cfg.kvstore else 1
        data_kw = data_kwargs(args)
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
                 "model_kwargs": kwargs, "subset": args.subset,
                 "num_workers": args.num_workers, "data_root": args.data_root,
                 "syncbn": args.syncbn}
        weights = {"model": args.model, "arch": dict(kwargs, classes=info["classes"]),
                   "preprocessing": {"input_size": info["input_size"],
                                     "scale": 255.0, "mean": list(info["mean"]),
                                     "std": list(info["std"])},
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
        return 0

    if isinstance(kv, str):
        return job()
    with worker_exits_on_failure("train"):
        return job()
