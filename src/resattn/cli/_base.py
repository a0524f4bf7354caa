"""What every ``resattn`` subcommand shares: registration, arguments, exit statuses, loading.

A subcommand is a module of :data:`COMMAND_MODULES` that imports only this
module and registers ``run(args)`` with :func:`command`; :func:`build_parser`
imports those modules by name. The library is imported inside each ``run``,
so building the parser (``resattn --help``) imports no MXNet: choices come
from the library's MXNet-free constants modules.

Bad input ends with a one-line error and exit status 2, Ctrl-C with 130
(:func:`exit_status`, for :func:`main` and :func:`worker_exits_on_failure` alike).
"""
import argparse
import contextlib
import importlib
import os
import sys
import traceback

from .._checks import check_choice
from ..hub import DownloadError
from ..io import parse_size
from ..models.choices import ATTENTION_TYPES, LEARNING_TYPES, VARIANTS
from ..training.config import NonFiniteLossError

__all__ = ["COMMANDS", "COMMAND_MODULES", "USER_ERRORS", "command", "size_type",
           "add_model_args", "add_data_args", "add_gpus_arg", "add_params_arg", "check_choice",
           "model_kwargs", "data_kwargs", "saved_config", "load_trained", "weights_data_kwargs",
           "exit_status",
           "worker_exits_on_failure", "build_parser", "main"]

#: ``{name: (help, run, add_arguments)}`` of the registered subcommands, in ``--help`` order.
COMMANDS = {}

#: Modules that register the subcommands with :func:`command` when imported, in that order.
COMMAND_MODULES = tuple("resattn.cli." + name for name in (
    "models", "convert", "train", "eval", "predict", "masks", "launch", "deploy", "gluoncv"))

#: Exceptions that are the user's to fix: one line ``resattn CMD: error: ...``, exit 2.
#: A diverged run (:class:`NonFiniteLossError`) is one too: its line says which checkpoint
#: is kept and what to try.
USER_ERRORS = (ValueError, FileNotFoundError, ImportError, DownloadError, NonFiniteLossError)


def command(name, help, arguments):
    """Register the decorated ``run(args)`` as subcommand ``name``.

    Parameters
    ----------
    name : str
        The subcommand, ``resattn NAME``.
    help : str
        One line for ``resattn --help``; also the subcommand's description.
    arguments : callable
        ``arguments(parser)`` adds the subcommand's options.

    Returns
    -------
    callable
        The decorator; it returns ``run`` unchanged.
    """
    def register(run):
        COMMANDS[name] = (help, run, arguments)
        return run
    return register


# ----------------------------------------------------------------------------- arguments
def size_type(text):
    """``argparse`` type of an ``N`` or ``HxW`` input size (:func:`resattn.io.parse_size`).

    Parameters
    ----------
    text : str

    Returns
    -------
    int or (int, int)
    """
    try:
        return parse_size(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def add_model_args(p, trained=False, classes=None):
    """``--model``, ``--width-mult``, ``--variant``, ``--attention``, ``--learning``.

    Parameters
    ----------
    p : argparse.ArgumentParser
    trained : bool
        The command loads a trained ``--params`` file (added here, see
        :func:`add_params_arg`): ``--model`` and the model settings default to
        the run's ``config.json`` (:func:`load_trained`). Otherwise ``--model``
        is required.
    classes : str, optional
        Also add ``--classes`` with this help.
    """
    if trained:
        p.add_argument("--model", default=None,
                       help="zoo model (default: the one in config.json beside --params)")
        add_params_arg(p)
        p.add_argument("--width-mult", type=float, default=None,
                       help="width multiplier the weights were trained with "
                            "(default: config.json's)")
    else:
        p.add_argument("--model", required=True, help="zoo model (see `resattn list`)")
        p.add_argument("--width-mult", type=float, default=None,
                       help="scale every width (quick experiments); default 1")
    p.add_argument("--variant", choices=VARIANTS, default=None)
    p.add_argument("--attention", choices=ATTENTION_TYPES + ("none",), default=None,
                   help="mask activation; none: plain residual network of the same depth")
    p.add_argument("--learning", choices=LEARNING_TYPES, default=None)
    if classes:
        p.add_argument("--classes", type=int, default=None, help=classes)


def add_params_arg(p):
    """``--params FILE`` or ``--pretrained TAG``: the weights a command reads, and
    ``--override-config``.

    Parameters
    ----------
    p : argparse.ArgumentParser
    """
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--params", help="resattn .params file (its config FILE.json, written "
                                        "beside it by resattn, says model and preprocessing)")
    group.add_argument("--pretrained", metavar="TAG",
                       help="published weights (see `resattn list --pretrained`), downloaded "
                            "and converted once into the cache ($RESATTN_HOME)")
    p.add_argument("--override-config", action="store_true",
                   help="let flags (--model, --width-mult, --variant, ...) override what the "
                        "weights' config says, instead of refusing them")


def add_data_args(p):
    """``--dataset``, ``--data-root``, ``--batch-size``, ``--num-workers``, ``--subset``.

    Parameters
    ----------
    p : argparse.ArgumentParser
    """
    from ..data.registry import DATASETS  # read when the parser is built: registered ones too
    p.add_argument("--dataset", required=True, help=", ".join(DATASETS))
    p.add_argument("--data-root", default=None, help="where CIFAR is stored/downloaded")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--num-workers", type=int, default=0,
                   help="data loading processes (0: in the main process)")
    p.add_argument("--subset", type=int, default=None, help="use only the first N images")


def add_gpus_arg(p):
    """``--gpus``, the devices of :func:`resattn.training.get_context`.

    Parameters
    ----------
    p : argparse.ArgumentParser
    """
    p.add_argument("--gpus", default="", help="comma-separated GPU ids; CPU when empty")


def model_kwargs(args, saved=None):
    """Model settings from the command line, falling back to a run's ``config.json``.

    Parameters
    ----------
    args : argparse.Namespace
        ``width_mult``, ``variant``, ``attention``, ``learning`` where given.
    saved : dict, optional
        The run's config (:func:`saved_config`); its ``model_kwargs`` are the fallback.

    Returns
    -------
    dict
        Keyword arguments of :func:`resattn.get_model`.
    """
    kwargs = dict((saved or {}).get("model_kwargs", {}))
    for key in ("width_mult", "variant", "attention", "learning"):
        value = getattr(args, key, None)
        if value is not None:
            kwargs[key] = value
    return kwargs


def data_kwargs(args):
    """Keyword arguments of :func:`resattn.data.get_data_loader` from :func:`add_data_args`'s.

    Parameters
    ----------
    args : argparse.Namespace

    Returns
    -------
    dict
        ``num_workers`` and ``subset`` where the command has them, ``root`` where given.
    """
    kwargs = {key: getattr(args, key) for key in ("num_workers", "subset") if hasattr(args, key)}
    if args.data_root:
        kwargs["root"] = args.data_root
    return kwargs


# ----------------------------------------------------------------------------- trained runs
def saved_config(params_path):
    """The ``config.json`` that ``resattn train`` wrote beside ``params_path`` ({} if none).

    Parameters
    ----------
    params_path : str

    Returns
    -------
    dict
    """
    from ..models import run_config
    return run_config(params_path)


def load_trained(args, classes=None, ctx=None):
    """The network of ``--params`` (or ``--pretrained``) through :func:`resattn.load_model`.

    The weights' config gives the model, its architecture and the
    preprocessing (``net.pretrained_cfg``); without one, ``--model`` or the
    run's ``config.json`` does. Flags that contradict the config are refused
    unless ``--override-config``.

    Parameters
    ----------
    args : argparse.Namespace
        Of :func:`add_model_args` with ``trained=True``.
    classes : int, optional
        Classifier size where nothing else says.
    ctx : mxnet.Context, optional

    Returns
    -------
    (net, model name, run config dict)
        The run's ``config.json`` (empty without one).
    """
    from ..models import load_model
    weights = getattr(args, "pretrained", None) or args.params
    if not getattr(args, "pretrained", None) and not os.path.isfile(weights):
        raise ValueError("--params %s: no such file" % weights)
    net = load_model(weights, model=args.model, ctx=ctx,
                     override=getattr(args, "override_config", False), classes=classes,
                     **model_kwargs(args))
    cfg = net.pretrained_cfg
    return net, cfg.model, saved_config(cfg.file)


def weights_data_kwargs(net):
    """``normalize`` and ``image_size`` of :func:`resattn.data.get_data_loader` from
    ``net.pretrained_cfg``: the weights' own preprocessing, not the dataset's statistics
    ({} where the weights say none and the dataset's own apply)."""
    cfg = net.pretrained_cfg
    if cfg.is_default:
        return {}
    return {"normalize": cfg.normalization(), "image_size": cfg.input_size}


# ----------------------------------------------------------------------------- exit statuses
def exit_status(err, command):
    """How ``resattn COMMAND`` ends on ``err``: its exit status and the line it writes.

    Parameters
    ----------
    err : BaseException
    command : str
        The subcommand, named in the line.

    Returns
    -------
    (int, str or None)
        :data:`USER_ERRORS`: 2 and ``resattn CMD: error: <first line>``;
        KeyboardInterrupt: 130 and ``resattn CMD: interrupted``;
        SystemExit: its status (Python's rules), with its message or '';
        anything else: 1 and None, for the traceback.
    """
    if isinstance(err, SystemExit):
        if err.code is None or isinstance(err.code, int):
            return int(err.code or 0), ""
        return 1, str(err.code)
    if isinstance(err, KeyboardInterrupt):
        return 130, "resattn %s: interrupted" % command
    if isinstance(err, USER_ERRORS):
        lines = str(err).strip().splitlines()
        return 2, "resattn %s: error: %s" % (command, lines[0] if lines else type(err).__name__)
    return 1, None


@contextlib.contextmanager
def worker_exits_on_failure(command):
    """In a worker of a distributed job, turn any failure into an immediate exit.

    At exit, MXNet's dist kvstore waits for every other node (ps-lite's
    finalize barrier) while they wait for this worker at their next push, so a
    worker that fails and exits normally hangs the job. Exiting at once, with
    the status and message :func:`main` would give (:func:`exit_status`), lets
    ``resattn launch`` (or a cluster scheduler) see the failure and stop the rest.

    Parameters
    ----------
    command : str
        The subcommand named in the error line, e.g. ``'train'``.
    """
    try:
        yield
    except BaseException as err:  # noqa: B902 - every way out must skip the barrier
        status, line = exit_status(err, command)
        if line is None:
            traceback.print_exc()
        elif line:
            sys.stderr.write(line + "\n")
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)


# ----------------------------------------------------------------------------- entry point
class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, as argparse does, without the usage dump
        self.exit(2, "%s: error: %s (see `%s --help`)\n" % (self.prog, message, self.prog))


def build_parser():
    """The argument parser with every subcommand of :data:`COMMAND_MODULES`.

    Returns
    -------
    argparse.ArgumentParser
    """
    from .. import __version__
    for module in COMMAND_MODULES:
        importlib.import_module(module)
    parser = _Parser(prog="resattn", description="Residual Attention Networks for MXNet Gluon")
    parser.add_argument("--version", action="version", version="resattn " + __version__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, (help_text, run, arguments) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        arguments(p)
        p.set_defaults(run=run)
    return parser


def main(argv=None):
    """Run the command line.

    Parameters
    ----------
    argv : list of str, optional
        Default ``sys.argv[1:]``.

    Returns
    -------
    int
        The exit status (:func:`exit_status`). Errors other than
        :data:`USER_ERRORS` and Ctrl-C propagate, as does SystemExit.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    try:
        return args.run(args) or 0
    except BaseException as err:  # noqa: B902 - exit_status decides
        status, line = exit_status(err, args.command)
        if line is None or isinstance(err, SystemExit):
            raise  # Python reports it as exit_status says: the traceback and 1, or the status
        sys.stderr.write(line + "\n")
        return status
