"""``resattn eval``: top-1, top-5 and loss of a trained ``.params`` file."""
from ._base import (add_data_args, add_gpus_arg, add_model_args, command, data_kwargs,
                    load_trained, weights_data_kwargs)


def _eval_args(p):
    add_model_args(p, trained=True)
    add_data_args(p)
    add_gpus_arg(p)


@command("eval", "evaluate a .params file: top-1, top-5 and loss", _eval_args)
def _eval(args):
    from ..training.config import check_num_workers
    check_num_workers(args.num_workers)
    if args.batch_size is not None and args.batch_size < 1:
        raise ValueError("--batch-size must be >= 1, got %d" % args.batch_size)
    from ..data import dataset_info, get_data_loader
    from ..training import evaluate, get_context
    ctx = get_context(args.gpus)
    info = dataset_info(args.dataset)
    net, model, saved = load_trained(args, classes=info["classes"], ctx=ctx[0])
    net.hybridize(static_alloc=True)
    cfg = net.pretrained_cfg
    data_kw = dict(data_kwargs(args), **weights_data_kwargs(net))
    data = get_data_loader(args.dataset, False, args.batch_size or 128,
                           seed=saved.get("data_seed", saved.get("seed", 0)), **data_kw)
    res = evaluate(net, data, ctx, info["classes"])
    print("%s on %s (%d images): top1 %.4f top5 %.4f loss %.4f" % (
        model, args.dataset, res["samples"], res["top1"], res["top5"], res["loss"]))
    if "normalize" in data_kw:
        mean, std = data_kw["normalize"]
        print("preprocessing from the weights' config: %s, mean %s, std %s" % (
            _size(cfg.input_size), _fmt(mean), _fmt(std)))
    claimed = cfg.provenance.get("claimed_top1")
    if claimed is not None:
        print("claimed by the weights' authors: top1 %.4f (%s)" % (
            claimed / 100, cfg.provenance.get("measured", "")))
    print("top1 %.4f" % res["top1"])
    return 0


def _size(size):
    h, w = (size, size) if isinstance(size, int) else size
    return "%dx%d" % (h, w)


def _fmt(values):
    return "(%s)" % ", ".join("%.4g" % v for v in values)
