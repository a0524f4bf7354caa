"""``resattn launch``: run a command as the workers of an MXNet parameter-server job."""
import argparse
import sys

from ..training.launch import LAUNCHERS, MAX_PROCESSES
from ._base import command, worker_exits_on_failure

#: Kept here for ``resattn.cli_dist.worker_exits_on_failure`` (resattn 0.1's path).
__all__ = ["worker_exits_on_failure"]


def _launch_args(p):
    p.add_argument("-n", "--num-workers", type=int, required=True,
                   help="worker processes (each runs the command); with the scheduler and "
                        "the servers at most %d processes, fewer where ulimit -n or -u "
                        "allows less" % MAX_PROCESSES)
    p.add_argument("-s", "--num-servers", type=int, default=1, help="server processes (1)")
    p.add_argument("--launcher", choices=LAUNCHERS, default="local",
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


@command("launch", "run a training command as N workers of a distributed job (MXNet kvstore)",
         _launch_args)
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

