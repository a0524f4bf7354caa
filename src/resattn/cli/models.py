"""``resattn list`` and ``resattn info``: the zoo's models, their parameters and MACs."""
from ._base import command, size_type


def _list_args(p):
    p.add_argument("patterns", nargs="*", metavar="PATTERN",
                   help="only models matching a shell-style pattern ('*cifar*', "
                        "'attention5?'); a bare word matches anywhere in the name")
    p.add_argument("--input-size", type=size_type, default=None,
                   help="count MACs at this size instead of each model's own")
    p.add_argument("--pretrained", action="store_true",
                   help="list the published weights instead: tag, model, preprocessing, "
                        "claimed accuracy, source")


def _patterns(args):
    """``resattn list cifar`` means ``*cifar*``, as a search box does."""
    return [p if any(c in p for c in "*?[") else "*%s*" % p for p in args.patterns]


def _list_weights(args):
    from ..models import list_models, list_weights
    models = set(list_models(_patterns(args))) if args.patterns else None
    header = "%-13s %-18s %-8s %5s %-26s %8s  %s" % (
        "tag", "model", "source", "input", "normalisation (mean/std)", "top-1 %", "file")
    print(header)
    print("-" * len(header))
    for w in list_weights():
        if models is not None and w.model not in models:
            continue
        norm = "none" if tuple(w.std) == (1.0, 1.0, 1.0) and not any(w.mean) else \
            "ImageNet" if tuple(w.mean) == (0.485, 0.456, 0.406) else "%s/%s" % (w.mean, w.std)
        print("%-13s %-18s %-8s %5d %-26s %8.2f  %s" % (
            w.tag + ("*" if w.default else ""), w.model, w.source, w.input_size,
            "pixels/%g, %s" % (w.scale, norm), w.accuracy, w.url))
    print("* the default of pretrained=True. Top-1 on CIFAR-10 as claimed by the authors "
          "(best test-set checkpoint, one 32x32 view); check one with `resattn eval "
          "--pretrained TAG --dataset cifar10`. Files are verified by git blob id and "
          "cached in $RESATTN_HOME (default ~/.resattn).")
    return 0


@command("list", "list the models with parameters and multiply-accumulates", _list_args)
def _list(args):
    if args.pretrained:
        return _list_weights(args)
    from .. import get_model, list_models, model_config, profile
    names = list_models(_patterns(args))
    if not names:
        raise ValueError("no model matches %s; `resattn list` shows them all"
                         % ", ".join(args.patterns))
    header = "%-26s %-8s %-8s %5s %10s %9s %11s %11s %10s" % (
        "model", "stem", "variant", "input", "params(M)", "paper(M)", "prototxt(M)", "MACs(G)",
        "paper(G)")
    print(header)
    print("-" * len(header))
    for name in names:
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
