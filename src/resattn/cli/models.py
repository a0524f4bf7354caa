"""``resattn list`` and ``resattn info``: the zoo's models, their parameters and MACs."""
from ._base import command, size_type


def _list_args(p):
    p.add_argument("--input-size", type=size_type, default=None,
                   help="count MACs at this size instead of each model's own")


@command("list", "list the models with parameters and multiply-accumulates", _list_args)
def _list(args):
    from .. import get_model, get_model_list, model_config, profile
    header = "%-26s %-8s %-8s %5s %10s %9s %11s %11s %10s" % (
        "model", "stem", "variant", "input", "params(M)", "paper(M)", "prototxt(M)", "MACs(G)",
        "paper(G)")
    print(header)
    print("-" * len(header))
    for name in get_model_list():
        cfg = model_config(name)
        input_size = args.input_size or cfg["input_size"]
        prof = profile(get_model(name), input_size)
        paper_p = "%.1f" % cfg["paper_params"] if "paper_params" in cfg else "-"
        paper_m = "%.1f" % cfg["paper_macs"] if "paper_macs" in cfg else "-"
        proto_p = "%.2f" % cfg["prototxt_params"] if "prototxt_params" in cfg else "-"
        print("%-26s %-8s %-8s %5s %10.2f %9s %11s %11.3f %10s" % (
            name, "cifar" if cfg["input_size"] == 32 else "imagenet", cfg["variant"],
            "x".join(map(str, prof.input_shape[2:])) if not isinstance(input_size, int)
            else input_size, prof.params / 1e6, paper_p, proto_p, prof.macs / 1e9, paper_m))
    print("paper(M), paper(G): the paper's Tables 4, 5 and 7; prototxt(M): the authors' Caffe "
          "deploy files (fwang91/residual-attention-network, imagenet_model/)")
    return 0


def _info_args(p):
    p.add_argument("name", help="model name (see `resattn list`)")
    p.add_argument("--input-size", type=size_type, default=None, help="N or HxW (default: model's)")
    p.add_argument("--depth", type=int, default=None,
                   help="group layers by the first DEPTH parts of their names")
    p.add_argument("--classes", type=int, default=None, help="classifier size")


@command("info", "layer-by-layer summary, parameters and multiply-accumulates of a model",
         _info_args)
def _info(args):
    from .. import get_model, model_config, profile
    cfg = model_config(args.name)
    kwargs = {} if args.classes is None else {"classes": args.classes}
    net = get_model(args.name, **kwargs)
    if args.depth is not None and args.depth < 1:
        raise ValueError("--depth must be >= 1, got %d" % args.depth)
    prof = profile(net, args.input_size or cfg["input_size"])
    variant = "%s variant, " % cfg["variant"] if cfg["variant"] else ""
    print("%s: %sinput %s, mean %s, std %s" % (
        args.name, variant, cfg["input_size"], cfg["mean"], cfg["std"]))
    if cfg.get("published"):
        print("published: %s" % cfg["published"])
    print(prof.table(args.depth))
    return 0
