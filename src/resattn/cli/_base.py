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

from ..hub import DownloadError
from ..io import parse_size
from ..models.choices import ATTENTION_TYPES, LEARNING_TYPES, VARIANTS
from ..training.config import NonFiniteLossError

__all__ = ["COMMANDS", "COMMAND_MODULES", "USER_ERRORS", "command", "size_type",
           "add_model_args", "add_data_args", "add_gpus_arg", "add_params_arg", "check_choice",
           "model_kwargs", "data_kwargs", "saved_config", "load_trained", "exit_status",
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


def check_choice(option, value, choices):
    """Raise ValueError ``--OPTION 'VALUE': expected one of ...`` unless ``value in choices``.

    For options whose help lists the choices itself, checked when the command runs.

    Parameters
    ----------
    option : str
        The flag, e.g. ``'--format'``.
    value : str
    choices : tuple of str
    """
    if value not in choices:
        raise ValueError("%s %r: expected one of %s" % (option, value, ", ".join(choices)))


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
    """The ``config.json`` that ``resattn train`` wrote beside ``params_path``.

    Parameters
    ----------
    params_path : str

    Returns
    -------
    dict
        Empty when there is no ``config.json``.
    """
    import json
    path = os.path.join(os.path.dirname(os.path.abspath(params_path)), "config.json")
    if os.path.isfile(path):
        with open(path) as f:
            return json.load(f)
    return {}


def _weights_file(args):
    """``(path, weights config or None)`` of ``--params`` or ``--pretrained``."""
    from ..io import read_weights_config
    if getattr(args, "pretrained", None):
        from ..models.zoo import fetch_weights
        path = fetch_weights(args.pretrained)
    else:
        path = args.params
        if not os.path.isfile(path):
            raise ValueError("--params %s: no such file" % path)
    return path, read_weights_config(path)


def _check_flags(args, model, kwargs, config):
    """Refuse flags that contradict the weights' config (unless --override-config)."""
    if config is None or getattr(args, "override_config", False):
        return
    clash = []
    if args.model and args.model != config["model"]:
        clash.append("--model %s (the weights are %s)" % (args.model, config["model"]))
    for key, value in kwargs.items():
        if key in config["arch"] and config["arch"][key] != value:
            clash.append("--%s %s (the weights need %s)" % (key.replace("_", "-"), value,
                                                           config["arch"][key]))
    if clash:
        raise ValueError("%s contradict%s the weights' config %s; leave %s out, or add "
                         "--override-config to use %s anyway"
                         % (", ".join(clash), "s" if len(clash) == 1 else "",
                            config.get("_path", "file"), "it" if len(clash) == 1 else "them",
                            "it" if len(clash) == 1 else "them"))


def load_trained(args, classes=None, ctx=None):
    """The network of ``--params`` (or ``--pretrained``), built as its config says.

    The weights' config (``FILE.json`` beside the file, written by resattn
    with every ``.params``; see :func:`resattn.io.write_weights_config`) gives
    the model, its architecture arguments and the preprocessing; without one,
    ``--model`` or the run's ``config.json`` does. Flags that contradict the
    config are refused unless ``--override-config``. The parameters are loaded
    with every name and shape checked.

    Parameters
    ----------
    args : argparse.Namespace
        Of :func:`add_model_args` with ``trained=True``.
    classes : int, optional
        Classifier size where neither the config nor config.json says; else
        the one stored in the file.
    ctx : mxnet.Context, optional

    Returns
    -------
    (net, model name, saved config dict)
        The saved dict is the run's ``config.json`` (empty without one), with
        ``'weights'``: the weights' config or None, and ``'preprocessing'``:
        ``input_size``, ``mean``, ``std`` (for images in [0, 1]) and
        ``class_names`` to apply.
    """
    from .. import get_model, model_config
    from ..io import assign_parameters, config_path, read_params
    from ..models.weights import normalization
    path, config = _weights_file(args)
    saved = saved_config(path)
    flags = model_kwargs(args)
    if config is not None:
        config["_path"] = config_path(path)
        _check_flags(args, args.model, flags, config)
        model = args.model if (args.model and args.override_config) else config["model"]
        kwargs = dict(config["arch"], **flags)
    else:
        model = args.model or saved.get("model")
        if not model:
            raise ValueError("--model is required (%s has no config %s and no config.json "
                             "beside it)" % (path, config_path(path)))
        kwargs = model_kwargs(args, saved)
    arrays = read_params(path)  # once: for the classifier size and the load
    weight = arrays.get("output.weight")
    if "classes" not in kwargs:
        classes = saved.get("classes") or (weight is not None and weight.shape[0]) or classes
        if classes:
            kwargs["classes"] = int(classes)
    net = get_model(model, **kwargs)
    assign_parameters(net, arrays, ctx=ctx, source=path)
    pre = (config or {}).get("preprocessing")
    if pre:
        mean, std = normalization(pre)
        prep = {"input_size": pre.get("input_size"), "mean": mean, "std": std}
    else:  # mean and std None: the dataset's own normalisation
        prep = {"input_size": model_config(model)["input_size"], "mean": None, "std": None}
    prep["class_names"] = (config or {}).get("class_names")
    saved = dict(saved, weights=config, preprocessing=prep, params_path=path)
    return net, model, saved


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
