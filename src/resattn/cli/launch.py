"""``resattn launch``: run a command as the workers of an MXNet parameter-server job."""
import argparse
import contextlib
import os
import sys
import traceback

from ._base import command


def _launch_args(p):
    p.add_argument("-n", "--num-workers", type=int, required=True,
                   help="worker processes (each runs the command)")
    p.add_argument("-s", "--num-servers", type=int, default=1, help="server processes (1)")
    p.add_argument("--launcher", choices=("local", "ssh"), default="local",
                   help="local: everything on 127.0.0.1; ssh: on the hosts of -H")
    p.add_argument("-H", "--hostfile", default=None,
                   help="for ssh: one host per line; servers and workers round-robin, "
                        "scheduler on the first")
    p.add_argument("--port", type=int, default=None,
                   help="scheduler port (local: a free one; ssh: 9091)")
    p.add_argument("-e", "--env", action="append", default=[], metavar="NAME=VALUE",
                   help="set a variable in every process (repeatable), e.g. DMLC_INTERFACE=eth1")
    p.add_argument("--timeout", type=float, default=None,
                   help="stop everything and fail after this many seconds")
    p.add_argument("--grace", type=float, default=10.0,
                   help="seconds between SIGTERM (or Ctrl-C's SIGINT) and SIGKILL (10)")
    p.add_argument("worker_command", metavar="COMMAND", nargs=argparse.REMAINDER,
                   help="after --: what each worker runs, e.g. resattn train ... "
                        "--kvstore dist_sync")


@command("launch", "run a training command as N workers of a distributed job (MXNet kvstore)")
def _launch(args):
    from ..training.launch import parse_hostfile, plan, run
    cmd = args.worker_command
    cmd = cmd[1:] if cmd[:1] == ["--"] else cmd
    for name, value in (("--timeout", args.timeout), ("--grace", args.grace)):
        if value is not None and not value > 0:
            raise ValueError("%s must be > 0 seconds, got %g" % (name, value))
    if args.hostfile and args.launcher != "ssh":
        raise ValueError("-H/--hostfile %s is only used with --launcher ssh (got --launcher %s)"
                         % (args.hostfile, args.launcher))
    hosts = parse_hostfile(args.hostfile) if args.hostfile else None
    env = {}
    for item in args.env:
        name, sep, value = item.partition("=")
        if not sep:
            raise ValueError("-e/--env takes NAME=VALUE, got %r" % item)
        env[name] = value
    tasks = plan(cmd, args.num_workers, args.num_servers, args.launcher, hosts, args.port,
                 env=env)
    status, problem = run(tasks, timeout=args.timeout, grace=args.grace)
    if status:
        sys.stderr.write("resattn launch: error: %s\n" % problem)
    return status


_launch.arguments = _launch_args


@contextlib.contextmanager
def worker_exits_on_failure(command):
    """In a worker of a distributed job, turn any failure into an immediate exit.

    At exit, MXNet's dist kvstore waits for every other node (ps-lite's
    finalize barrier) while they wait for this worker at their next push, so a
    worker that fails and exits normally hangs the job. Exiting at once, with
    the status and message :func:`resattn.cli.main` would give, lets
    ``resattn launch`` (or a cluster scheduler) see the failure and stop the rest.
    """
    try:
        yield
    except BaseException as err:  # noqa: B902 - every way out must skip the barrier
        if isinstance(err, SystemExit):
            code = err.code if isinstance(err.code, int) else 1
        elif isinstance(err, (ValueError, FileNotFoundError, ImportError)):
            sys.stderr.write("resattn %s: error: %s\n" % (
                command, str(err).splitlines()[0] if str(err) else type(err).__name__))
            code = 2
        elif isinstance(err, KeyboardInterrupt):
            sys.stderr.write("resattn %s: interrupted\n" % command)
            code = 130
        else:
            traceback.print_exc()
            code = 1
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
