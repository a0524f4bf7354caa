"""``resattn convert``: GluonCV, PyTorch-reference or seed weights to a resattn file."""
from ..models.choices import SOURCES, VARIANTS
from ._base import command


def _convert_args(p):
    p.add_argument("--model", required=True, help="resattn model to load into")
    p.add_argument("--source", required=True, choices=SOURCES, help="format of the input file")
    p.add_argument("--variant", choices=VARIANTS, default=None,
                   help="mask wiring recorded with the weights (default: gluoncv, the "
                        "wiring of all three foreign implementations)")
    p.add_argument("--classes", type=int, default=None, help="classes of the file")
    p.add_argument("weights", help="foreign weight file")
    p.add_argument("-o", "--out", required=True, help="resattn .params file to write")


@command("convert", "convert GluonCV, PyTorch-reference or seed weights to a resattn file",
         _convert_args)
def _convert(args):
    from ..io import config_path, read_weights_config
    from ..models import convert_file
    kwargs = {k: v for k, v in (("variant", args.variant), ("classes", args.classes))
              if v is not None}
    config = read_weights_config(convert_file(args.model, args.weights, args.source, args.out,
                                              **kwargs))
    pre = config["preprocessing"]
    tag = config["provenance"].get("tag")
    print("wrote %s (%s weights from %s, source %s%s) and its config %s: preprocessing %dx%d, "
          "pixels / %g, mean %s, std %s" % (
              args.out, args.model, args.weights, args.source,
              ", published as %s" % tag if tag else "", config_path(args.out),
              pre["input_size"], pre["input_size"], pre["scale"], tuple(pre["mean"]),
              tuple(pre["std"])))
    return 0
