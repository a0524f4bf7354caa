"""What the benchmark scripts share: the workloads and one timed step of an MXNet network.

Each script runs from this folder (``python benchmarks/NAME.py``), so
``import _common`` finds this file.
"""

#: The two workloads of ``bench_throughput.py`` and ``profile_ops.py`` (``--imagenet``):
#: resattn model, GluonCV model, input side, batch and classes.
WORKLOADS = {
    "cifar": dict(model="attention92_cifar", gluoncv="cifar_residualattentionnet92", size=32,
                  batch=32, classes=10),
    "imagenet": dict(model="attention56", gluoncv="residualattentionnet56", size=224, batch=8,
                     classes=1000),
}


def mxnet_step(net, x, y=None, wd=0.0):
    """A closure that runs one synchronised step of ``net`` on the batch ``x``.

    With labels ``y`` it is a training step (forward, cross-entropy, backward
    and an SGD update with momentum 0.9 and weight decay ``wd``); without,
    one inference batch.
    """
    import mxnet as mx
    from mxnet import autograd, gluon

    if y is None:
        def step():
            net(x).wait_to_read()
        return step
    trainer = gluon.Trainer(net.collect_params(), "sgd",
                            {"learning_rate": 0.01, "momentum": 0.9, "wd": wd})
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    batch = x.shape[0]

    def step():
        with autograd.record():
            loss = loss_fn(net(x), y)
        loss.backward()
        trainer.step(batch)
        mx.nd.waitall()
    return step


def describe_machine():
    """The line every benchmark prints first: CPU model, instruction sets, cores, threads."""
    import os
    from resattn._threads import describe_cpu
    return "machine: %s; OMP_NUM_THREADS=%s" % (describe_cpu(),
                                                os.environ.get("OMP_NUM_THREADS", "unset"))
