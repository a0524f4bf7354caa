"""Parameter and multiply-accumulate counts from the network's symbolic graph.

Nothing is computed on data: the graph is traced once with a symbol, shapes
come from MXNet's shape inference, and each convolution contributes
``output elements x (input channels / groups) x kernel area`` multiply-
accumulates, each fully connected layer ``inputs x outputs``. Normalisation,
activations, poolings, resizes and additions are not counted, as in the
paper's FLOPs column.
"""
import json
from collections import OrderedDict, namedtuple

import mxnet as mx
import numpy as np

from .._compat import structured_params
from ..io import input_shape

__all__ = ["Layer", "Profile", "profile"]

#: One parameterised layer: structural name, operator, output shape, params, MACs.
Layer = namedtuple("Layer", "name op output_shape params macs")


class Profile(namedtuple("Profile", "input_shape layers params macs")):
    """Result of :func:`profile`: the layers and the totals.

    ``params`` counts trainable parameters (BatchNorm running statistics are
    excluded); ``macs`` is for one image.
    """

    def grouped(self, depth):
        """Layers summed by the first ``depth`` components of their names."""
        groups = OrderedDict()
        for layer in self.layers:
            key = ".".join(layer.name.split(".")[:depth])
            prev = groups.get(key)
            if prev is None:
                groups[key] = Layer(key, layer.op, layer.output_shape, layer.params, layer.macs)
            else:
                groups[key] = Layer(key, "group", layer.output_shape, prev.params + layer.params,
                                    prev.macs + layer.macs)
        return list(groups.values())

    def table(self, depth=None):
        """A printable table of the layers (optionally grouped by name depth)."""
        rows = self.layers if depth is None else self.grouped(depth)
        width = max([len(r.name) for r in rows] + [5])
        lines = ["%-*s  %-16s  %-20s  %12s  %15s" % (width, "layer", "op", "output", "params",
                                                     "MACs")]
        for r in rows:
            lines.append("%-*s  %-16s  %-20s  %12s  %15s" % (
                width, r.name, r.op, "x".join(map(str, r.output_shape[1:])),
                "{:,}".format(r.params), "{:,}".format(r.macs)))
        lines.append("total params {:,} ({:.2f} M); multiply-accumulates {:,} ({:.3f} G) at "
                     "input {}".format(self.params, self.params / 1e6, self.macs, self.macs / 1e9,
                                       "x".join(map(str, self.input_shape[1:]))))
        return "\n".join(lines)


def profile(net, input_size):
    """Count parameters and multiply-accumulates of a HybridBlock at one input size.

    Parameters
    ----------
    net : mxnet.gluon.HybridBlock
        Any hybridizable network; it need not be initialised.
    input_size : int or tuple
        Side of a square RGB input, ``(H, W)`` or ``(C, H, W)``.

    Returns
    -------
    Profile
    """
    shape = input_shape(input_size, allow_channels=True)
    sym = net(mx.sym.var("data"))
    if isinstance(sym, (list, tuple)):
        sym = sym[0]
    internals = sym.get_internals()
    arg_shapes, out_shapes, aux_shapes = internals.infer_shape(data=shape)
    args = dict(zip(internals.list_arguments(), arg_shapes))
    outputs = dict(zip(internals.list_outputs(), out_shapes))
    structural = {p.name: key for key, p in structured_params(net).items()}
    trainable = {p.name for p in net.collect_params().values() if p.grad_req != "null"}

    graph = json.loads(sym.tojson())
    nodes = graph["nodes"]
    layers = []
    for node in nodes:
        op = node["op"]
        if op not in ("Convolution", "FullyConnected", "BatchNorm"):
            continue
        inputs = [nodes[i[0]]["name"] for i in node["inputs"]]
        weight_name = inputs[1]
        out_shape = outputs[node["name"] + "_output"]
        params = sum(int(np.prod(args[n])) for n in inputs[1:] if n in trainable)
        if op == "Convolution":
            w = args[weight_name]
            macs = int(np.prod(out_shape[1:])) * int(np.prod(w[1:]))
        elif op == "FullyConnected":
            w = args[weight_name]
            macs = int(w[0] * w[1])
        else:
            macs = 0
        name = structural.get(weight_name, weight_name).rsplit(".", 1)[0]
        layers.append(Layer(name, op, tuple(out_shape), params, macs))
    total = sum(int(np.prod(args[n])) for n in args if n in trainable)
    return Profile(shape, layers, total, sum(l.macs for l in layers))
