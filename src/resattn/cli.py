"""The ``resattn`` command line: a thin layer over the Python API.

Every subcommand is a ``(add_arguments, run)`` pair registered in
:data:`COMMANDS`. Bad input ends with a one-line error and exit status 2.
"""
import argparse
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
    from . import get_model, get_model_list, model_config, profile
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
    from . import get_model, model_config, profile
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
    from .convert import convert_file
    kwargs = {k: v for k, v in (("variant", args.variant), ("classes", args.classes))
              if v is not None}
    convert_file(args.model, args.weights, args.source, args.out, **kwargs)
    print("wrote %s (%s weights from %s, source %s)" % (args.out, args.model, args.weights,
                                                        args.source))
    return 0


_convert.arguments = _convert_args


# ----------------------------------------------------------------------------- entry point
class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, as argparse does, without the usage dump
        self.exit(2, "%s: error: %s (see `%s --help`)\n" % (self.prog, message, self.prog))


def build_parser():
    """The argument parser with every registered subcommand."""
    from . import __version__
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
    sys.exit(main())
