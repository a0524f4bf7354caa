"""Keep MXNet 1.9.1's oneDNN away from a 1x1-convolution crash (SIGFPE) at some large sizes.

The bug
-------
MXNet 1.9.1 ships oneDNN 2.4.4. Where oneDNN may use ``avx512_core`` code
(CPUs with AVX-512, unless ``DNNL_MAX_CPU_ISA`` caps it lower; with
``DNNL_MAX_CPU_ISA=AVX2`` the crash is gone), it first tries its
``brgconv_1x1:avx512_core`` implementation for every 1x1 convolution without
padding in inference (``forward_inference``: training-mode forward passes and
backward passes, which oneDNN plans differently, were not seen to crash).
While choosing its blocking it estimates the work per thread in 32-bit ints,
``dim_od = OH * nb_os * G * nb_oc`` with
``nb_os = ceil(OH*OW / os_block)`` (``est_eff_1x1`` in
``brgemm_convolution_utils.cpp``) and divides by it. When that product wraps
around to exactly 0 mod 2**32 the division kills the process with SIGFPE
(exit 136, no message), while the primitive is *created*, before any data is
touched. ``os_block = 1`` is always among the candidates, so for a stride-1
1x1 convolution (``OH = H``, ``OW = W``) with ``O`` output channels and ``G``
groups the condition is::

    2 * v2(H) + v2(W) + max_b v2(G * ceil((O/G) / b)) >= 32

with ``v2(n)`` the exponent of 2 in ``n`` and ``b`` the output-channel blocks
oneDNN tries: 16*k for k = min(ceil((O/G)/16), 4) down to 1, 64 only if
``16*ceil((O/G)/16)`` is a multiple of 64, 48 only if ``(O/G) / (48*ceil((O/G)/48))
>= 0.95`` (the last term is 0 when ``H*W < O/G``: oneDNN then loops in another
order). The batch size, input channels, bias, thread count and data values do
not matter. 2048x2048 (11+11+11 = 33), 2048x1024 (32), 4096x1024 (34) and
2048x3072 (32) crash with one output channel; 3072x2048 (10+10+11 = 31),
2047x2048 and 2896x2896 do not; 1024x1024 crashes from 64 output channels on
(``nb_oc`` = 4 with 16-channel blocks: 10+20+2 = 32). Other ``os_block`` values
only matter for layers with 2**32 output elements or more, and a convolution
with a stride in H goes another way (``v2(OH) + max v2(ceil(OW/b)) + v2(G*nb_oc)
>= 32`` over the width blocks ``b``), which needs as many; neither fits in
memory. 3x3 and 7x7 convolutions take a path that needs as many too.

The workaround
--------------
:class:`Conv2D` (resattn's 1x1 convolutions) checks the condition on its
input in imperative calls (one product compared with 2**32 at ordinary
sizes, a few more integer operations above) and, where it holds, runs the
convolution in two pieces split along H (all rows but the last, then the last
row): a 1x1 convolution is pointwise, so the concatenation is the same
convolution, and an odd height takes ``2 * v2(H)`` out of the sum. Hybridized
graphs are size-agnostic and cannot branch on shapes, so
:func:`graph_would_crash` checks a hybridized network's graph for the input
shape of a call (shape inference on its cached graph, once per input shape,
and only when a bound says a crash is possible at all) and :func:`safe_call`
runs such a call imperatively, the convolutions splitting themselves.
"""
import mxnet as mx
from mxnet.gluon import nn

from . import _compat

__all__ = ["Conv2D", "conv1x1_crashes", "graph_would_crash", "safe_call"]

_WRAP = 1 << 32


def _v2(n):
    """Exponent of 2 in the positive integer ``n``."""
    return (n & -n).bit_length() - 1


def _div_up(a, b):
    return -(-a // b)


def _oc_blocks(oc, spatial):
    """Output-channel blocks oneDNN 2.4's ``brgconv_1x1`` tries for ``oc`` channels per group."""
    for k in range(min(_div_up(oc, 16), 4), 0, -1):
        block = 16 * k
        if block == 64 and not (_div_up(oc, 16) * 16 % 64 == 0 and spatial >= 64):
            continue
        if block == 48 and oc / (48.0 * _div_up(oc, 48)) < 0.95:
            continue
        yield block


def conv1x1_crashes(shape, channels, stride=1, groups=1):
    """Whether MXNet 1.9.1's oneDNN dies (SIGFPE) creating this 1x1 convolution.

    ``shape`` is the input ``(N, C, H, W)``; ``channels`` the output channels,
    ``stride`` an int or a pair, ``groups`` the groups. The answer holds for
    float32 and bfloat16 inference on AVX-512 CPUs (see the module docstring);
    on other machines the convolution does not crash, and splitting it where
    this says True costs little and changes nothing but float rounding.
    """
    _, _, h, w = (int(s) for s in shape)
    sh, sw = (stride, stride) if isinstance(stride, int) else (int(s) for s in stride)
    oh, ow = (h - 1) // sh + 1, (w - 1) // sw + 1
    ocg = max(1, channels // groups)
    d_max = groups * _div_up(ocg, 16)
    # dim_od <= OH * OH*OW * d_max: below 2**32 it cannot wrap to 0 (every layer of a
    # network at ordinary sizes stops here).
    if (oh * oh * ow if sh == 1 else oh * ow) * d_max < _WRAP:
        return False
    if h * w < ocg:  # loop order ngcdhw: no channel-block factor
        d_v2 = 0
    else:
        d_v2 = max(_v2(groups * _div_up(ocg, b)) for b in _oc_blocks(ocg, oh * ow))
    if sh == 1:
        return 2 * _v2(oh) + _v2(ow) + d_v2 >= 32
    # Stride in H: the spatial blocks are blocks of OW, every ceil(OW / ns) is tried.
    seen = set()
    for ns in range(1, ow + 1):
        block = _div_up(ow, ns)
        if block in seen:
            continue
        seen.add(block)
        if _v2(oh) + _v2(_div_up(ow, block)) + d_v2 >= 32:
            return True
        if block == 1:
            break
    return False


def _pieces(shape, channels, stride, groups):
    """Output row and column ranges that each convolve without the crash."""
    _, _, h, w = shape
    sh, sw = stride
    oh, ow = (h - 1) // sh + 1, (w - 1) // sw + 1

    def split(n):
        # An odd count (and a single one) has no factor 2 left to multiply.
        return [(0, n)] if n % 2 else [(0, n - 1), (n - 1, n)]

    def safe(rows, cols):
        return not conv1x1_crashes((1, 1, (rows[1] - rows[0] - 1) * sh + 1,
                                    (cols[1] - cols[0] - 1) * sw + 1), channels, (sh, sw), groups)

    rows, cols = split(oh), [(0, ow)]
    if not all(safe(r, c) for r in rows for c in cols):
        cols = split(ow)
    pieces = [(r, c) for r in rows for c in cols]
    if not all(safe(r, c) for r, c in pieces):  # pragma: no cover - needs > 2**32 elements
        raise RuntimeError("no split of a 1x1 convolution of input %s avoids the oneDNN crash"
                           % (shape,))
    return pieces


def _split_conv(conv, x, shape, channels, stride, groups):
    """``conv(x)`` of a 1x1 convolution, as pieces along H (and W) that oneDNN survives."""
    sh, sw = stride
    rows_out = []
    last_rows = None
    for (r0, r1), (c0, c1) in _pieces(shape, channels, stride, groups):
        if (r0, r1) != last_rows:
            rows_out.append([])
            last_rows = (r0, r1)
        part = mx.nd.slice(x, begin=(None, None, r0 * sh, c0 * sw),
                           end=(None, None, (r1 - 1) * sh + 1, (c1 - 1) * sw + 1))
        rows_out[-1].append(conv(part))
    rows = [r[0] if len(r) == 1 else mx.nd.concat(*r, dim=3) for r in rows_out]
    return rows[0] if len(rows) == 1 else mx.nd.concat(*rows, dim=2)


class Conv2D(nn.Conv2D):
    """``gluon.nn.Conv2D`` that sidesteps MXNet 1.9.1's oneDNN 1x1-convolution crash.

    Same arguments, parameters, names and graph as ``nn.Conv2D``. In an
    imperative call on the CPU, a 1x1 convolution without padding whose input
    meets :func:`conv1x1_crashes` runs as two pieces along H (concatenated,
    the same result to float rounding); all other calls, and every symbolic
    (hybridized) trace, are ``nn.Conv2D``'s own. Hybridized networks stay safe
    through :func:`safe_call`.
    """

    def hybrid_forward(self, F, x, weight, bias=None):
        if F is mx.nd:
            kw = _compat.conv_kwargs(self)
            if tuple(kw["kernel"]) == (1, 1) and not any(kw["pad"]) \
                    and kw.get("layout", "NCHW") == "NCHW" and x.context.device_type == "cpu":
                shape = x.shape
                stride = tuple(kw["stride"])
                if conv1x1_crashes(shape, kw["num_filter"], stride, kw["num_group"]):
                    base = super().hybrid_forward
                    return _split_conv(lambda part: base(F, part, weight, bias), x, shape,
                                       kw["num_filter"], stride, kw["num_group"])
        return super().hybrid_forward(F, x, weight, bias)


# ----------------------------------------------------------------------------- graphs
_CACHE = "_onednn_cache"


def _cache(block):
    """What this module knows of ``block``'s cached graph; reset when the graph changes."""
    graph = _compat.cached_graph(block)
    cache = block.__dict__.get(_CACHE)
    if cache is None or cache["graph"] is not graph:
        cache = {"graph": graph, "bound": None, "sites": None, "verdicts": {}}
        # A plain attribute, not Block.__setattr__ (which registers children and params).
        object.__setattr__(block, _CACHE, cache)
    return cache


def _channel_bound(block):
    """Largest ``G * ceil((O/G)/16)`` of the 1x1 convolutions under ``block``."""
    cache = _cache(block)
    if cache["bound"] is None:
        bound = 0
        for child in _compat.iter_blocks(block):
            kw = _compat.conv_kwargs(child) if isinstance(child, nn.Conv2D) else None
            if kw is not None and tuple(kw["kernel"]) == (1, 1):
                groups = kw["num_group"]
                bound = max(bound, groups * _div_up(max(1, kw["num_filter"] // groups), 16))
        cache["bound"] = bound
    return cache["bound"]


def _ints(text, default):
    values = tuple(int(v) for v in str(text).strip("()[]").split(",") if v.strip())
    return values or default


def _conv_sites(block, x):
    """``(outputs, [(channels, stride, groups)])`` of the graph's 1x1 convolutions without padding.

    The graph is the block's cached graph (:func:`resattn._compat.trace_graph` traces
    and caches it if need be, as the first hybridized call would).
    """
    import json

    _, out = _compat.trace_graph(block, x)
    cache = _cache(block)
    if cache["sites"] is None:
        internals = out.get_internals()
        names = set(internals.list_outputs())
        outputs, params = [], []
        for node in json.loads(out.tojson())["nodes"]:
            attrs = node.get("attrs", {})
            if node["op"] != "Convolution" or _ints(attrs.get("kernel"), ()) != (1, 1) \
                    or any(_ints(attrs.get("pad"), (0, 0))):
                continue
            name = node["name"] + "_output"
            if name in names:
                outputs.append(internals[name])
                params.append((int(attrs["num_filter"]), _ints(attrs.get("stride"), (1, 1)),
                               int(attrs.get("num_group", 1))))
        cache["sites"] = (mx.sym.Group(outputs) if outputs else None, params)
    return cache["sites"]


def graph_would_crash(block, x):
    """Whether running hybridized ``block`` on ``x`` meets the crash in some 1x1 convolution.

    Cheap for ordinary inputs: a bound on every layer (a 1x1 convolution of
    ResidualAttentionNet, or of a wrapper around one, never sees a map larger
    than the input) rules it out with one product. Above the bound, shape
    inference on the cached graph decides, once per input shape.
    """
    if x.context.device_type != "cpu":
        return False
    shape = tuple(x.shape)
    _, _, h, w = shape
    if h * h * w * _channel_bound(block) < _WRAP:
        return False
    group, params = _conv_sites(block, x)
    verdicts = _cache(block)["verdicts"]
    if shape not in verdicts:
        crash = False
        if group is not None:
            _, out_shapes, _ = group.infer_shape_partial(data=shape)
            for out_shape, (channels, stride, groups) in zip(out_shapes, params):
                if not out_shape or 0 in out_shape:
                    continue
                n, _, oh, ow = out_shape
                in_shape = (n, 1, (oh - 1) * stride[0] + 1, (ow - 1) * stride[1] + 1)
                if conv1x1_crashes(in_shape, channels, stride, groups):
                    crash = True
                    break
        if len(verdicts) >= 64:
            verdicts.clear()
        verdicts[shape] = crash
    return verdicts[shape]


def safe_call(block, forward, x, *args):
    """``forward(x, *args)`` of a hybridized block, imperatively if its graph would crash.

    ``forward`` is the block's ``HybridBlock.forward`` (bound). Where
    :func:`graph_would_crash` says so, the call runs with every hybridized
    descendant switched to imperative (graphs and flags kept), so each
    :class:`Conv2D` splits itself; the cached graph is built all the same,
    for ``export`` and for the next call. Other calls go straight to ``forward``.

    Only calls that reach the block's own ``forward`` are covered: a
    hybridized *wrapper* whose graph contains the block (``masks.MaskNet``)
    runs its own cached graph: call ``safe_call(wrapper, wrapper.forward, x)``
    instead of ``wrapper(x)`` there.
    """
    if not (_compat.is_hybridized(block) and isinstance(x, mx.nd.NDArray)
            and graph_would_crash(block, x)):
        return forward(x, *args)
    with _compat.imperative(block):
        out = forward(x, *args)
    if not _compat.has_cached_graph(block):
        # What the first hybridized call would have built: ``export`` needs it,
        # and the next ordinary call uses it.
        _compat.build_cached_op(block, x, *args)
    return out
