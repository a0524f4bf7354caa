"""An independent reading of the authors' Caffe deploy files, for tests only.

(AttentionNeXt-92-deploy.prototxt's classifier reads ``ave_pool_gather``, a
blob no layer makes, a leftover of a multi-GPU gather layer: Caffe itself
would refuse the file. :class:`CaffeNet` names such a blob; pass
``rename={'ave_pool_gather': 'ave_pool'}`` to read it as meant.)

Two parts, neither of which uses resattn or MXNet:

- :func:`parse_prototxt`: a parser of the protobuf text format the deploy
  files are written in (messages, scalar fields, repeated fields, comments);
- :class:`CaffeNet`: a NumPy interpreter of the layer types they use, with the
  semantics of the Caffe fork they were written for (``../shared/ref/caffe/README.md``):
  Pooling with Caffe's ceil rule and a clipped last window, ``Interp`` as a bilinear
  resize to the second bottom's size with aligned corners, and the frozen ``BN``
  layer ``slope * (x - mean) * inv_std + bias`` with no eps.

The blobs of each layer are numbered as in Caffe: Convolution ``[weight]`` (and
``bias`` where ``bias_term``), InnerProduct ``[weight (out, in), bias]``, BN
``[slope, bias, mean, inv_std]``, each of shape ``(1, C, 1, 1)``.
"""
import os
import re

import numpy as np

REF_DIR = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "shared", "ref",
                                        "caffe"))

_TOKEN = re.compile(r'\s*(?:#[^\n]*\n?)*\s*("(?:[^"\\]|\\.)*"|[{}:]|[^\s{}:"#]+)')


def _tokens(text):
    pos = 0
    text = text.rstrip() + "\n"
    while True:
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            rest = text[pos:].strip()
            if rest and not rest.startswith("#"):
                raise ValueError("prototxt: cannot read %r" % rest[:40])
            return
        pos = match.end()
        yield match.group(1)


def _scalar(token):
    if token.startswith('"'):
        return token[1:-1]
    for kind in (int, float):
        try:
            return kind(token)
        except ValueError:
            pass
    if token in ("true", "false"):
        return token == "true"
    return token  # an enum name such as MAX


def _message(tokens, closing):
    out = {}
    for token in tokens:
        if token == "}":
            if not closing:
                raise ValueError("prototxt: unbalanced '}'")
            return out
        key = token
        nxt = next(tokens)
        if nxt == ":":
            nxt = next(tokens)
            value = _message(tokens, True) if nxt == "{" else _scalar(nxt)
        elif nxt == "{":
            value = _message(tokens, True)
        else:
            raise ValueError("prototxt: expected ':' or '{' after %r, got %r" % (key, nxt))
        out.setdefault(key, []).append(value)
    if closing:
        raise ValueError("prototxt: missing '}'")
    return out


def parse_prototxt(text):
    """The text format as a dict: field name -> list of values (a message is a dict)."""
    return _message(iter(_tokens(text)), False)


def _one(msg, key, default=None):
    values = msg.get(key)
    if not values:
        return default
    if len(values) != 1:
        raise ValueError("field %r repeated" % key)
    return values[0]


class Layer:
    def __init__(self, msg):
        self.name = _one(msg, "name")
        self.type = _one(msg, "type")
        self.bottoms = list(msg.get("bottom", []))
        self.tops = list(msg.get("top", []))
        self.msg = msg

    def param(self, group, key, default=None):
        return _one(_one(self.msg, group, {}), key, default)


def _conv_out(size, kernel, stride, pad):
    return (size + 2 * pad - kernel) // stride + 1


def _pool_out(size, kernel, stride, pad):
    out = -(-(size + 2 * pad - kernel) // stride) + 1  # ceil
    if pad and (out - 1) * stride >= size + pad:
        out -= 1  # Caffe: the last window must start inside the (padded) image
    return out


def conv2d(x, weight, bias, stride, pad, group):
    n, c, h, w = x.shape
    out_c, in_per_group, kh, kw = weight.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oh, ow = _conv_out(h, kh, stride, pad), _conv_out(w, kw, stride, pad)
    # im2col: (n, c, kh, kw, oh, ow)
    cols = np.empty((n, c, kh, kw, oh, ow), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            cols[:, :, i, j] = xp[:, :, i:i + stride * oh:stride, j:j + stride * ow:stride]
    cols = cols.reshape(n, group, in_per_group * kh * kw, oh * ow)
    wg = weight.reshape(group, out_c // group, in_per_group * kh * kw)
    out = np.einsum("gok,ngkp->ngop", wg, cols, optimize=True).reshape(n, out_c, oh, ow)
    if bias is not None:
        out = out + bias.reshape(1, -1, 1, 1)
    return out


def max_pool(x, kernel, stride, pad):
    n, c, h, w = x.shape
    oh, ow = _pool_out(h, kernel, stride, pad), _pool_out(w, kernel, stride, pad)
    out = np.full((n, c, oh, ow), -np.inf, dtype=x.dtype)
    for i in range(oh):
        top, bottom = max(i * stride - pad, 0), min(i * stride - pad + kernel, h)
        for j in range(ow):
            left, right = max(j * stride - pad, 0), min(j * stride - pad + kernel, w)
            out[:, :, i, j] = x[:, :, top:bottom, left:right].max(axis=(2, 3))
    return out


def _interp_matrix(src, dst):
    """(dst, src) weights of a 1-D linear resize with aligned corners."""
    pos = np.arange(dst) * ((src - 1) / (dst - 1) if dst > 1 else 0.0)
    lo = np.minimum(np.floor(pos).astype(int), src - 1)
    hi = np.minimum(lo + 1, src - 1)
    frac = pos - lo
    mat = np.zeros((dst, src))
    mat[np.arange(dst), lo] += 1 - frac
    mat[np.arange(dst), hi] += frac
    return mat


def interp(x, height, width):
    mh = _interp_matrix(x.shape[2], height)
    mw = _interp_matrix(x.shape[3], width)
    return np.einsum("hi,ncij,wj->nchw", mh, x, mw, optimize=True).astype(x.dtype)


class CaffeNet:
    """A deploy prototxt, run in NumPy.

    Parameters
    ----------
    text : str
        The prototxt.
    """

    def __init__(self, text, rename=None):
        msg = parse_prototxt(text)
        self.name = _one(msg, "name")
        self.input = _one(msg, "input")
        self.input_dim = tuple(msg.get("input_dim", []))
        self.layers = [Layer(m) for m in msg.get("layer", [])]
        rename = dict(rename or {})
        made = {self.input}
        for layer in self.layers:
            layer.bottoms = [rename.get(b, b) for b in layer.bottoms]
            unknown = [b for b in layer.bottoms if b not in made]
            if unknown:
                raise ValueError("%s: layer %r reads blob %r that no earlier layer makes"
                                 % (self.name, layer.name, unknown[0]))
            made.update(layer.tops)

    @classmethod
    def from_file(cls, path, rename=None):
        with open(path) as f:
            return cls(f.read(), rename)

    def blob_shapes(self, input_shape=None):
        """``{layer name: [blob shapes]}`` for every layer with learnable blobs."""
        shapes = {}
        channels = {self.input: (input_shape or self.input_dim)[1]}
        for layer in self.layers:
            c = channels[layer.bottoms[0]]
            if layer.type == "Convolution":
                out = layer.param("convolution_param", "num_output")
                k = layer.param("convolution_param", "kernel_size")
                group = layer.param("convolution_param", "group", 1)
                blobs = [(out, c // group, k, k)]
                if layer.param("convolution_param", "bias_term", True):
                    blobs.append((out,))
                shapes[layer.name] = blobs
                c = out
            elif layer.type == "BN":
                shapes[layer.name] = [(1, c, 1, 1)] * 4
            elif layer.type == "InnerProduct":
                out = layer.param("inner_product_param", "num_output")
                shapes[layer.name] = [(out, c), (out,)]
                c = out
            for top in layer.tops:
                channels[top] = c
        return shapes

    def num_params(self, input_shape=None):
        """Learnable parameters, as Caffe counts them (BN: slope and bias only)."""
        total = 0
        for name, blobs in self.blob_shapes(input_shape).items():
            if len(blobs) == 4:  # BN: mean and inv_std are statistics
                blobs = blobs[:2]
            total += sum(int(np.prod(s)) for s in blobs)
        return total

    def random_blobs(self, rng, input_shape=None):
        """Random weights (He-scaled) and non-trivial BN statistics for every layer."""
        blobs = {}
        for name, shapes in self.blob_shapes(input_shape).items():
            if len(shapes) == 4:
                c = shapes[0]
                blobs[name] = [rng.uniform(0.8, 1.2, c), rng.normal(0, 0.1, c),
                               rng.normal(0, 0.1, c), rng.uniform(0.7, 1.4, c)]
            else:
                w = shapes[0]
                fan_in = int(np.prod(w[1:]))
                blobs[name] = [rng.normal(0, np.sqrt(2.0 / fan_in), w)]
                if len(shapes) > 1:
                    blobs[name].append(rng.normal(0, 0.1, shapes[1]))
            blobs[name] = [b.astype(np.float64) for b in blobs[name]]
        return blobs

    def calibrate(self, data, blobs, rng):
        """Set each BN layer's mean and inv_std near the statistics of what reaches it on
        ``data`` (times a random factor in [0.8, 1.25], plus a random shift), as a trained
        network's would be: activations stay near unit scale and the masks' sigmoids
        away from saturation, so that every layer's effect shows in the output."""
        self.forward(data, blobs, calibrate=rng)

    def forward(self, data, blobs, keep=(), calibrate=None):
        """Run the network on ``data`` (N, C, H, W); returns ``{top: array}`` of ``keep``
        and the last top (``'output'``, before any Softmax)."""
        values = {self.input: np.asarray(data, dtype=np.float64)}
        kept = {}
        last = None
        for layer in self.layers:
            ins = [values[b] for b in layer.bottoms]
            x = ins[0]
            kind = layer.type
            if kind == "Convolution":
                p = lambda key, d=None: layer.param("convolution_param", key, d)  # noqa: E731
                b = blobs[layer.name]
                y = conv2d(x, b[0], b[1] if len(b) > 1 else None, p("stride", 1), p("pad", 0),
                           p("group", 1))
            elif kind == "BN":
                if calibrate is not None:
                    c = x.shape[1]
                    mean = x.mean(axis=(0, 2, 3)) + calibrate.normal(0, 0.1, c) * x.std()
                    std = x.std(axis=(0, 2, 3)) * calibrate.uniform(0.8, 1.25, c) + 1e-3
                    blobs[layer.name][2] = mean.reshape(1, c, 1, 1)
                    blobs[layer.name][3] = (1 / std).reshape(1, c, 1, 1)
                slope, bias, mean, inv_std = blobs[layer.name]
                y = slope * (x - mean) * inv_std + bias
            elif kind == "ReLU":
                y = np.maximum(x, 0)
            elif kind == "Sigmoid":
                y = 1 / (1 + np.exp(-x))
            elif kind == "Pooling":
                p = lambda key, d=None: layer.param("pooling_param", key, d)  # noqa: E731
                if p("pool") == "MAX":
                    y = max_pool(x, p("kernel_size"), p("stride", 1), p("pad", 0))
                elif p("pool") == "AVE":
                    # The deploy files' final pooling: a 7x7 average without padding.
                    k, s = p("kernel_size"), p("stride", 1)
                    if (x.shape[2] != k or x.shape[3] != k or s != 1) and calibrate is None:
                        raise ValueError("%s: AVE pooling of a %s map with kernel %d: only the "
                                         "global case is interpreted" % (layer.name,
                                                                         x.shape[2:], k))
                    y = x.mean(axis=(2, 3), keepdims=True)
                else:
                    raise ValueError("%s: pool %r not interpreted" % (layer.name, p("pool")))
            elif kind == "Eltwise":
                op = layer.param("eltwise_param", "operation", "SUM")
                if op == "SUM":
                    y = sum(ins[1:], ins[0].copy())
                elif op == "PROD":
                    y = ins[0].copy()
                    for other in ins[1:]:
                        y = y * other
                else:
                    raise ValueError("%s: Eltwise %r not interpreted" % (layer.name, op))
            elif kind == "Interp":
                if len(ins) != 2:
                    raise ValueError("%s: Interp with %d bottoms" % (layer.name, len(ins)))
                y = interp(x, ins[1].shape[2], ins[1].shape[3])
            elif kind == "InnerProduct":
                w, bias = blobs[layer.name]
                y = x.reshape(x.shape[0], -1) @ w.T + bias
            elif kind == "Softmax":
                continue  # logits are compared, not probabilities
            else:
                raise ValueError("%s: layer type %r not interpreted" % (layer.name, kind))
            for top in layer.tops:
                values[top] = y
                if top in keep:
                    kept[top] = y
            last = y
        kept["output"] = last
        return kept
