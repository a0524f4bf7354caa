"""Saving and loading parameters: atomic writes, all-or-nothing loads."""
import os
import tempfile

import mxnet as mx

__all__ = ["atomic_write", "save_parameters", "load_parameters", "assign_parameters"]


def atomic_write(path, write):
    """Call ``write(tmp_path)`` and move the result over ``path`` in one rename.

    A crash or a full disk during ``write`` leaves ``path`` as it was; the
    temporary file lives in the same directory so the rename is atomic.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp",
                               dir=directory)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual mode
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def save_parameters(net, path):
    """``net.save_parameters(path)``, written atomically."""
    return atomic_write(path, net.save_parameters)


def _compatible(expected, got):
    return len(expected) == len(got) and all(e in (0, g) for e, g in zip(expected, got))


def assign_parameters(net, arrays, ctx=None, source="<dict>", ignore=()):
    """Check ``arrays`` against ``net``'s structural names, then assign them all.

    Every missing, unexpected or wrongly shaped entry is named in one
    ValueError before anything is assigned, so a failed load leaves the
    network untouched. Names in ``ignore`` are neither required nor loaded
    (e.g. ``('output.weight', 'output.bias')`` to fine-tune with a new classifier).
    """
    ctx = mx.cpu() if ctx is None else ctx
    ignore = set(ignore)
    params = {k: v for k, v in net._collect_params_with_prefix().items() if k not in ignore}
    arrays = {k: v for k, v in arrays.items() if k not in ignore}
    missing = sorted(set(params) - set(arrays))
    unexpected = sorted(set(arrays) - set(params))
    wrong = ["%s: expected %s, got %s" % (k, params[k].shape, tuple(arrays[k].shape))
             for k in sorted(set(params) & set(arrays))
             if not _compatible(params[k].shape, tuple(arrays[k].shape))]
    if missing or unexpected or wrong:
        parts = []
        for title, items in (("missing", missing), ("unexpected", unexpected),
                             ("wrong shape", wrong)):
            if items:
                shown = items[:20] + (["... and %d more" % (len(items) - 20)]
                                      if len(items) > 20 else [])
                parts.append("%d %s: %s" % (len(items), title, ", ".join(shown)))
        raise ValueError("cannot load %s into %s (%d parameters): %s"
                         % (source, type(net).__name__, len(params), "; ".join(parts)))
    for key, param in params.items():
        arr = arrays[key]
        if not isinstance(arr, mx.nd.NDArray):
            arr = mx.nd.array(arr, dtype=param.dtype)
        param._load_init(arr.astype(param.dtype, copy=False), ctx)


def load_parameters(net, path, ctx=None, ignore=()):
    """Load a Gluon ``.params`` file, checking every name and shape first.

    Accepts files written by ``save_parameters`` and by ``HybridBlock.export``
    (``arg:``/``aux:`` prefixes). Errors name the file and each mismatch;
    ``ignore`` is passed to :func:`assign_parameters`.
    """
    path = os.fspath(path)
    try:
        loaded = mx.nd.load(path)
    except mx.base.MXNetError as err:
        raise ValueError("cannot read %s as an MXNet parameter file (truncated or corrupted?): "
                         "%s" % (path, str(err).strip().splitlines()[0])) from None
    if not isinstance(loaded, dict):
        raise ValueError("%s holds an unnamed list of arrays, not named parameters" % path)
    arrays = {k.split(":", 1)[1] if k.startswith(("arg:", "aux:")) else k: v
              for k, v in loaded.items()}
    assign_parameters(net, arrays, ctx=ctx, source=path, ignore=ignore)
