"""Files: atomic writes, parameter files read and checked in one place, sizes, digests.

Every reader of a ``.params`` file, every SHA-1, every report of mismatching
names and shapes and every parser of an ``N`` / ``HxW`` size in resattn is
here. Importing this module does not import MXNet (the command-line parser
uses :func:`parse_size`).
"""
import errno
import hashlib
import json
import os
import tempfile

from ._checks import first_line as _first_line

__all__ = ["atomic_write", "write_json", "sha1_file", "parse_size", "input_shape",
           "read_params", "mismatch_report", "save_parameters",
           "load_parameters", "assign_parameters", "config_path", "write_weights_config",
           "read_weights_config", "save_weights"]


class WriteError(OSError, ValueError):
    """An output file could not be written: ``filename`` is the file, ``strerror`` why.

    Raised by :func:`atomic_write` (and so by every writer of resattn's files)
    for a read-only or full disk, an output path that is a directory, a
    directory that is a regular file, ...; its message is one line,
    ``cannot write PATH: REASON``. It is an OSError (``errno``, ``strerror``,
    ``filename`` as the system gave them) and also a ValueError, so that the
    command line reports it as the user's to fix: one line, exit status 2.
    """

    def __str__(self):
        return "cannot write %s: %s" % (self.filename, self.strerror)


#: What MXNet's own file writes (dmlc-core ``FileStream``) say instead of an errno.
_MXNET_WRITE_FAILURES = ("FileStream.Write incomplete", "LocalFileSystem: Check failed")


def non_directory_ancestor(path):
    """The nearest existing ancestor of ``path`` that is not a directory, or None."""
    parent = os.path.dirname(os.path.abspath(path))
    while parent and not os.path.lexists(parent):
        up = os.path.dirname(parent)
        if up == parent:
            return None
        parent = up
    return parent if parent and not os.path.isdir(parent) else None


#: The old private name, until cli/deploy.py imports :func:`non_directory_ancestor`.


def _free_bytes(directory):
    try:
        st = os.statvfs(directory)
    except (OSError, AttributeError):
        return None
    blocks = st.f_bfree if hasattr(os, "geteuid") and os.geteuid() == 0 else st.f_bavail
    return blocks * st.f_frsize


def write_error(path, err):
    """The :class:`WriteError` for a failure ``err`` while writing ``path``, or None.

    ``err`` is an OSError, or an MXNet error from one of MXNet's own file
    writes (which carry no errno: a full disk is recognised by the free space
    left). None when ``err`` is neither, to be raised as it is.
    """
    path = os.fspath(path)
    if isinstance(err, WriteError):
        return err
    if isinstance(err, OSError):
        ancestor = non_directory_ancestor(path)
        if ancestor is not None and err.errno in (errno.ENOTDIR, errno.EEXIST, errno.ENOENT):
            return WriteError(errno.ENOTDIR, "%s is a file, not a directory" % ancestor, path)
        if err.errno == errno.EISDIR:
            return WriteError(errno.EISDIR, "it is a directory", path)
        return WriteError(err.errno, err.strerror or _first_line(err), path)
    if isinstance(err, RuntimeError) and any(m in str(err) for m in _MXNET_WRITE_FAILURES):
        free = _free_bytes(os.path.dirname(os.path.abspath(path)))
        if free is not None and free < (1 << 20):
            return WriteError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
        return WriteError(errno.EIO, "MXNet could not finish the file (%s; a full disk or "
                                     "quota?)" % _first_line(err).strip(), path)
    return None


def atomic_write(path, write):
    """Call ``write(tmp_path)`` and move the result over ``path`` in one rename.

    A crash or a full disk during ``write`` leaves ``path`` as it was; the
    temporary file lives in the same directory so the rename is atomic, and
    it is fsynced before the rename so that a power cut cannot leave an
    empty file behind the new name. On any failure the temporary file is
    removed.

    Raises
    ------
    WriteError
        (an OSError and a ValueError) naming ``path`` and the reason, when
        the file cannot be written: a read-only or full disk, ``path`` a
        directory, a directory of it a regular file, ... (also when MXNet's
        own writer, used by ``write``, fails).
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        if os.path.isdir(path):  # before the work of ``write``: the rename would fail
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp",
                                   dir=directory)
        os.close(fd)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual mode
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        # The reason first: a full disk is seen by its free space, before the temporary
        # file gives some back.
        clear = write_error(path, err) if isinstance(err, Exception) else None
        if tmp is not None:
            try:
                if os.path.lexists(tmp):
                    os.remove(tmp)
            except OSError:
                pass
        if clear is not None and clear is not err:
            raise clear from err
        raise
    return path


def write_json(path, obj):
    """``obj`` as indented, key-sorted JSON, written atomically."""
    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=True, default=str)
            f.write("\n")
    return atomic_write(path, write)


def sha1_file(path):
    """Hex SHA-1 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# ------------------------------------------------------------------ weight configs
#: ``format`` of a weight config; ``version`` grows when a key changes meaning.
WEIGHTS_FORMAT, WEIGHTS_VERSION = "resattn-weights", 1
_CONFIG_KEYS = ("model", "arch", "preprocessing", "class_names", "provenance")


def config_path(params_path):
    """Where the config of a weight file lives: beside it, ``<file>.json``."""
    return os.fspath(params_path) + ".json"


def write_weights_config(params_path, model, arch=None, preprocessing=None, class_names=None,
                         provenance=None):
    """Write the config that travels with ``params_path`` (atomically, after the file).

    Parameters
    ----------
    params_path : str
        The ``.params`` file, already written; its SHA-1 and size are recorded
        so that a later read knows the config still describes it.
    model : str
        Registered model name.
    arch : dict, optional
        Keyword arguments of :func:`resattn.get_model` the weights need
        (``variant``, ``classes``, ``width_mult``, ...).
    preprocessing : dict, optional
        ``input_size``, ``scale`` (pixels are divided by it), ``mean``, ``std``.
    class_names : sequence of str, optional
    provenance : dict, optional
        Where the weights come from (a tag, a URL and blob id, a training run).

    Returns
    -------
    str
        The config's path.
    """
    config = {"format": WEIGHTS_FORMAT, "version": WEIGHTS_VERSION, "model": model,
              "arch": dict(arch or {}), "preprocessing": dict(preprocessing or {}) or None,
              "class_names": list(class_names) if class_names is not None else None,
              "provenance": dict(provenance or {}),
              "sha1": sha1_file(params_path), "size": os.path.getsize(params_path)}
    return write_json(config_path(params_path), config)


def save_weights(net, path, model, **config):
    """``save_parameters`` and :func:`write_weights_config` in one call; returns ``path``."""
    save_parameters(net, path)
    write_weights_config(path, model, **config)
    return path


def read_weights_config(params_path, verify=True):
    """The config beside ``params_path``, or None when it has none.

    With ``verify``, a weight file whose bytes are not those the config was
    written for (corrupted, truncated, or replaced without its config) is a
    ValueError that names both files; so is a config that is not resattn's.
    """
    path = config_path(params_path)
    if not os.path.lexists(path):
        return None
    if not os.path.isfile(path):
        raise ValueError("the weight config %s is not a regular file; move it away to load %s "
                         "without one" % (path, params_path))
    try:
        with open(path) as f:
            config = json.load(f)
    except RecursionError:
        raise ValueError("cannot read the weight config %s: it nests too deeply to be a "
                         "weight config" % path) from None
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ValueError("cannot read the weight config %s: %s" % (path, _first_line(err))) \
            from None
    if not isinstance(config, dict) or config.get("format") != WEIGHTS_FORMAT:
        raise ValueError("%s is not a resattn weight config (no format %r); move it away to "
                         "load %s without one" % (path, WEIGHTS_FORMAT, params_path))
    from .models.pretrained import check_weights_config
    config = check_weights_config(config, path)  # every field, one line naming the bad one
    if verify and config.get("sha1"):
        size = os.path.getsize(params_path)
        if size != config.get("size", size) or sha1_file(params_path) != config["sha1"]:
            raise ValueError("%s does not match its config %s (SHA-1 %s expected): the file "
                             "is corrupted or was replaced; restore it, or delete the config "
                             "to load it as it is" % (params_path, path, config["sha1"]))
    for key in _CONFIG_KEYS:
        config.setdefault(key, None)
    return config


#: Largest input side (pixels) :func:`parse_size` and :func:`input_shape` accept. One
#: 3-channel float32 image of 8192x8192 is 768 MiB and the activations of a network are
#: tens of times more; beyond that no accelerator or workstation holds a forward pass.
MAX_INPUT_SIDE = 8192


def _check_sides(sides, shown):
    """ValueError unless every side is at most :data:`MAX_INPUT_SIDE`."""
    if max(sides) > MAX_INPUT_SIDE:
        h, w = (sides[0], sides[0]) if len(sides) == 1 else sides[-2:]
        need = 3 * h * w * 4
        cap = 3 * MAX_INPUT_SIDE * MAX_INPUT_SIDE * 4
        raise ValueError("input size %s is too large: at most %d pixels per side%s"
                         % (shown, MAX_INPUT_SIDE,
                            " (one 3-channel float32 image of %dx%d alone takes %s, the "
                            "network's activations tens of times more)" % (h, w, _bytes(need))
                            if need > cap else ""))


def _bytes(n):
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return ("%d %s" if unit == "bytes" else "%.3g %s") % (n, unit)
        n /= 1024.0


def parse_size(text):
    """``'32'`` -> 32, ``'45x37'`` (or ``'45,37'``) -> (45, 37); ValueError otherwise.

    Each side must be in ``[1, MAX_INPUT_SIDE]`` (:data:`MAX_INPUT_SIDE`, 8192).
    """
    try:
        parts = [int(p) for p in str(text).lower().replace(",", "x").split("x")]
    except ValueError:
        raise ValueError("input size must be N or HxW, got %r" % (text,)) from None
    if len(parts) not in (1, 2) or min(parts) < 1:
        raise ValueError("input size must be N or HxW with N >= 1, got %r" % (text,))
    _check_sides(parts, "x".join(map(str, parts)))
    return parts[0] if len(parts) == 1 else tuple(parts)


def _positive_int(value):
    import numbers
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1


def input_shape(size, batch_size=1, channels=3, allow_channels=False):
    """The NCHW shape of a batch for an input ``size``.

    Parameters
    ----------
    size : int, (H, W) or, with ``allow_channels``, (C, H, W)
        Side of a square input or its height and width, each at most
        :data:`MAX_INPUT_SIDE` (8192).
    batch_size, channels : int

    Returns
    -------
    tuple of 4 int
    """
    if _positive_int(size):
        dims = (size, size)
    else:  # a sequence: (H, W), or (C, H, W) where allowed; not (N,)
        dims = tuple(size) if isinstance(size, (tuple, list)) else ()
        if len(dims) not in ((2, 3) if allow_channels else (2,)):
            dims = None
    if dims is None or not all(_positive_int(d) for d in dims):
        raise ValueError("input_size must be an int N or a pair (H, W)%s of integers >= 1, got %r"
                         % (" or (C, H, W)" if allow_channels else "", size))
    if not _positive_int(batch_size):
        raise ValueError("batch_size must be an integer >= 1, got %r" % (batch_size,))
    dims = tuple(int(d) for d in dims)
    _check_sides(dims[-2:], "x".join(map(str, dims[-2:])))
    if len(dims) == 2:
        dims = (channels,) + dims
    return (int(batch_size),) + dims


def read_params(path, what="an MXNet parameter file"):
    """The named arrays of an MXNet ``.params`` file, ``arg:``/``aux:`` prefixes removed.

    Files written by ``save_parameters`` and by ``HybridBlock.export`` are
    read alike. A missing, truncated, corrupted or foreign file (whatever
    ``mx.nd.load`` raises on it), or one holding an unnamed list, is a
    ValueError that names it.
    """
    import mxnet as mx
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError("%s: no such file" % path)
    try:
        loaded = mx.nd.load(path)
    except Exception as err:  # noqa: B902 - MXNetError, or a name that is not UTF-8, or ...
        # A damaged file fails in many ways: MXNet's own checks (MXNetError), a parameter
        # name whose bytes are not UTF-8 (UnicodeDecodeError), a length field that asks
        # for absurd memory (MemoryError); each is named here with the file.
        raise ValueError("cannot read %s as %s (truncated, corrupted, or a PyTorch file?): %s"
                         % (path, what, "%s: %s" % (type(err).__name__, _first_line(err))
                            if not isinstance(err, mx.base.MXNetError)
                            else _first_line(err))) from None
    if not isinstance(loaded, dict):
        raise ValueError("%s holds an unnamed list of arrays, not named parameters" % path)
    return {k.split(":", 1)[1] if k.startswith(("arg:", "aux:")) else k: v
            for k, v in loaded.items()}


def shown(items, limit=20):
    """``'a, b, c, ... and 3 more'``: the first ``limit`` of ``items``, comma-joined."""
    return ", ".join(list(items[:limit]) + (["... and %d more" % (len(items) - limit)]
                                            if len(items) > limit else []))


#: The old private name, until models/convert.py imports :func:`shown`.


def mismatch_report(missing=(), unexpected=(), wrong=()):
    """``'2 missing: a, b; 1 wrong shape: c: ...'``, or '' when all three are empty."""
    return "; ".join("%d %s: %s" % (len(items), title, shown(list(items)))
                     for title, items in (("missing", missing), ("unexpected", unexpected),
                                          ("wrong shape", wrong)) if items)


def shape_compatible(expected, got):
    """Whether ``got`` fills ``expected``, where 0 in ``expected`` is a deferred dimension."""
    return len(expected) == len(got) and all(e in (0, g) for e, g in zip(expected, got))


def save_parameters(net, path):
    """``net.save_parameters(path)``, written atomically."""
    return atomic_write(path, net.save_parameters)


def assign_parameters(net, arrays, ctx=None, source="<dict>", ignore=()):
    """Check ``arrays`` against ``net``'s structural names, then assign them all.

    Every missing, unexpected or wrongly shaped entry is named in one
    ValueError before anything is assigned, so a failed load leaves the
    network untouched. Names in ``ignore`` are neither required nor loaded
    (e.g. ``('output.weight', 'output.bias')`` to fine-tune with a new classifier).
    """
    import mxnet as mx

    from ._compat import load_param_data, structured_params
    ctx = mx.cpu() if ctx is None else ctx
    ignore = set(ignore)
    params = {k: v for k, v in structured_params(net).items() if k not in ignore}
    arrays = {k: v for k, v in arrays.items() if k not in ignore}
    missing = sorted(set(params) - set(arrays))
    unexpected = sorted(set(arrays) - set(params))
    wrong = ["%s: expected %s, got %s" % (k, params[k].shape, tuple(arrays[k].shape))
             for k in sorted(set(params) & set(arrays))
             if not shape_compatible(params[k].shape, tuple(arrays[k].shape))]
    if missing or unexpected or wrong:
        # A network may know why a file does not fit it (an architecture that changed).
        hint = getattr(net, "load_hint", lambda names: None)(sorted(arrays))
        raise ValueError("cannot load %s into %s (%d parameters): %s%s"
                         % (source, type(net).__name__, len(params),
                            mismatch_report(missing, unexpected, wrong),
                            ". " + hint if hint else ""))
    for key, param in params.items():
        arr = arrays[key]
        if not isinstance(arr, mx.nd.NDArray):
            arr = mx.nd.array(arr, dtype=param.dtype)
        load_param_data(param, arr.astype(param.dtype, copy=False), ctx)


def load_parameters(net, path, ctx=None, ignore=()):
    """Load a Gluon ``.params`` file, checking every name and shape first.

    Accepts files written by ``save_parameters`` and by ``HybridBlock.export``
    (``arg:``/``aux:`` prefixes). Errors name the file and each mismatch;
    ``ignore`` is passed to :func:`assign_parameters`.
    """
    path = os.fspath(path)
    assign_parameters(net, read_params(path), ctx=ctx, source=path, ignore=ignore)
