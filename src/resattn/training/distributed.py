"""Distributed training: the kvstore, the workers of a job, and the optimizer of ``dist_async``."""
import os

import mxnet as mx
import numpy as np

from .._compat import settle_trainer
from .config import check_kvstore

__all__ = ["create_kvstore", "Workers", "make_optimizer"]


def create_kvstore(name):
    """``mx.kv.create(name)`` after checking the name and, for ``dist_*``, the environment.

    A ``dist_*`` kvstore connects to the scheduler named by the ``DMLC_*``
    variables that :mod:`resattn.training.launch` (or a cluster scheduler) sets; without
    them MXNet would fail obscurely or wait forever.
    """
    check_kvstore(name)
    if name.startswith("dist"):
        missing = [v for v in ("DMLC_ROLE", "DMLC_PS_ROOT_URI", "DMLC_PS_ROOT_PORT",
                               "DMLC_NUM_SERVER", "DMLC_NUM_WORKER") if v not in os.environ]
        if missing:
            raise ValueError("kvstore %r needs the environment of a distributed job (%s not set);"
                             " start it with `resattn launch -n WORKERS -s SERVERS -- resattn "
                             "train ...`" % (name, ", ".join(missing)))
        if os.environ["DMLC_ROLE"] != "worker":
            raise ValueError("kvstore %r: this process has DMLC_ROLE=%r; training runs in "
                             "workers (DMLC_ROLE=worker)" % (name, os.environ["DMLC_ROLE"]))
    return mx.kv.create(name)


#: First kvstore key of the sums below; the Trainer numbers parameters from 0.
_RESERVED_KEY = 1 << 24


class Workers:
    """The workers of a job as fit sees them: rank, count, and sums over all of them.

    With a synchronous dist kvstore the Trainer keeps ``update_on_kvstore=False``
    (each worker pulls the summed gradients and applies the optimizer itself),
    so the servers hold no optimizer: for every key they store the sum of one
    push per worker. Pushing an array under a reserved key and pulling it back
    is then an all-reduce, used for losses, sample counts, stop requests,
    validation counts and BatchNorm statistics. ``dist_async`` has no such
    sum (its servers apply the optimizer to whatever is pushed, and workers
    are not in step), so there each worker keeps its own numbers.
    """

    def __init__(self, kv):
        self.kv = kv
        self.dist = kv is not None and "dist" in kv.type
        self.sync = self.dist and "async" not in kv.type
        self.rank = kv.rank if self.dist else 0
        self.num_workers = kv.num_workers if self.dist else 1
        self._keys = {}

    def sum(self, name, values):
        """``values`` summed over the workers; every worker must call it alike.

        The servers add in float32 (float64 arrays come back rounded to it), so
        counts are exact up to 2**24 and everything else to about 1e-7.
        """
        values = np.asarray(values, dtype=np.float64)
        if not self.sync:
            return values
        local = mx.nd.array(values, dtype="float32")
        if name not in self._keys:  # collective: every worker meets the same names in order
            self._keys[name] = _RESERVED_KEY + len(self._keys)
            self.kv.init(self._keys[name], mx.nd.zeros_like(local))
        self.kv.push(self._keys[name], local)
        total = mx.nd.zeros_like(local)
        self.kv.pull(self._keys[name], out=total)
        return total.asnumpy().astype(np.float64)

    def settle(self, trainer):
        """Let the Trainer put the parameters on the servers now, and wait until it has.

        Gluon's Trainer does that at its first step, with one init-and-pull per
        parameter, and pushes the first gradients right after; nothing orders
        such a pull before the gradient push of the same key, and with
        ``update_on_kvstore=False`` a late pull is answered with the gradient
        sum instead of rank 0's weights. Seen here on loopback: one parameter of
        one worker replaced, in about 1 of 6 runs of 2 workers. Call this before
        the first step of every worker.
        """
        settle_trainer(trainer)
        mx.nd.waitall()

    def check_identical(self, net, epoch):
        """Raise if this worker's parameters differ from the mean over workers.

        Compares the sum of absolute values of each parameter, to the float32
        precision of :meth:`sum`: a parameter that missed its broadcast shows,
        rounding-level drift does not.
        """
        params = net.collect_params()
        own = np.array([np.abs(p.data().asnumpy()).sum(dtype=np.float64)
                        for p in params.values()])
        mean = self.sum("checksum", own) / self.num_workers
        bad = np.flatnonzero(np.abs(mean - own) > 1e-5 * np.abs(own) + 1e-6)
        if bad.size:
            name = list(params.keys())[bad[0]]
            raise RuntimeError("after epoch %d, parameter %s of worker rank %d differs from the "
                               "other workers' (sum |w| %r, mean over workers %r)"
                               % (epoch, name, self.rank, own[bad[0]], mean[bad[0]]))

    def average_statistics(self, net):
        """Replace every non-trained parameter (BatchNorm running mean and variance) by its
        mean over workers and devices, so that all workers hold identical parameters.

        As timm's ``distribute_bn`` (reduce='mean'): the average of per-shard
        statistics, which for the variance is not the variance of the union.
        """
        params = [p for p in net.collect_params().values() if p.grad_req == "null"]
        if not params:
            return
        copies = len(params[0].list_data())
        flat = np.concatenate([sum(d.asnumpy().astype(np.float64) for d in p.list_data()).ravel()
                               for p in params])
        flat = self.sum("statistics", flat) / (copies * self.num_workers)
        offset = 0
        for p in params:
            size = int(np.prod(p.shape))
            p.set_data(mx.nd.array(flat[offset:offset + size].reshape(p.shape), dtype=p.dtype))
            offset += size


def make_optimizer(cfg, net, opt_params, distributed_updates):
    """The optimizer by name, or, when the servers run it (``dist_async``), an object that
    carries each parameter's ``wd_mult`` by name: MXNet pickles the optimizer to
    the servers without the Parameters, which would lose ``no_wd``."""
    if not distributed_updates:
        return cfg.optimizer, opt_params
    names = {i: name for i, name in enumerate(net.collect_params().keys())}
    optimizer = mx.optimizer.create(cfg.optimizer, param_idx2name=names, **opt_params)
    optimizer.wd_mult = {name: p.wd_mult for name, p in net.collect_params().items()}
    return optimizer, None
