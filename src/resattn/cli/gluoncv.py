"""``resattn gluoncv SCRIPT.py ARGS...``: run a GluonCV script with resattn's models."""
import argparse

from ._base import command


def _gluoncv_args(p):
    p.add_argument("script", help="a GluonCV script, e.g. scripts/classification/cifar/"
                                  "train_cifar10.py")
    p.add_argument("script_args", metavar="ARGS", nargs=argparse.REMAINDER,
                   help="its arguments, e.g. --model attention56_cifar --num-epochs 200")


@command("gluoncv", "run a GluonCV script, unedited, with resattn's models in GluonCV's zoo",
         _gluoncv_args)
def _gluoncv(args):
    from ..gluoncv import run_script
    script_args = args.script_args[1:] if args.script_args[:1] == ["--"] else args.script_args
    return run_script(args.script, script_args)
