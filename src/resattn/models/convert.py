"""Load other implementations' weights into a :class:`ResidualAttentionNet`.

Three public implementations of the same networks store their parameters
under their own names; each resattn parameter's foreign name is derived from
the resattn network's own structure, so a file either matches the network
completely (names and shapes) or is refused with every mismatch named, and
nothing is loaded.

Sources
-------
``'gluoncv'``
    GluonCV 0.10 ``cifar_residualattentionnet56/92`` and
    ``residualattentionnet56/92/128/...``, saved with ``save_parameters``.
    The CIFAR models map onto ``attention56_cifar`` / ``attention92_cifar``;
    the ImageNet ones onto ``attention56`` ... ``attention236`` built with
    ``variant='gluoncv'`` (the parameters fit either variant, but only that
    wiring computes what GluonCV computes). GluonCV's modules end in a single
    post-processing unit whatever ``p``, so its ``p = 2`` networks
    (Attention-452) have no resattn counterpart and are refused.
``'pytorch'``
    A ``state_dict`` of ``ResidualAttentionModel_92_32input_update`` of the
    PyTorch reference (tengshaofeng/ResidualAttentionNetwork-pytorch, e.g. its
    ``model_92_sgd.pkl``), into ``attention92_cifar``. That file was written
    by ``torch.save(model.state_dict(), ...)`` of torch 0.3 / 0.4 under
    Python 2 from a ``.cuda()`` model (no ``DataParallel``): torch's legacy
    (pre-1.6, non-zip) serialization, byte-string keys, storages tagged
    ``'cuda:0'``, no ``num_batches_tracked`` before torch 0.4.1. It is read
    with ``torch.load(path, map_location='cpu', weights_only=True)`` (retried
    with ``encoding='latin1'`` should a Python 2 string not be UTF-8), which
    needs no GPU and runs no code from the file; a whole pickled model
    (``torch.save(model)``) is refused with the steps to turn it into a
    state_dict. Keys that all start with ``module.`` (``DataParallel``) lose
    that prefix. That model was trained on CIFAR-10 images scaled to [0, 1]
    *without* mean/std normalisation, not with the mean and std of
    ``model_config('attention92_cifar')``.
``'seed'``
    A ``save_parameters`` file of the Gluon implementation
    (PistonY/ResidualAttentionNetwork), into ``attention92_cifar``. Its code
    named the first attention module's mask in two ways (:data:`SEED_SCHEMES`),
    told apart by the names in the file (:func:`detect_scheme`):
    ``'6c48813'``, ``ResidualAttentionModel_92_32input_update`` (commits
    6c48813 to 6b390fb: ``test_iter198999_0.95410``, ``test_iter205999_0.95650``,
    ``test_iter233999_0.95680``, ``test_iter228999_0.96570``), and
    ``'8574060'``, ``ResidualAttentionModel_32input(additional_stage=True)``
    (0736f57 onwards: ``test_iter254999_0.96650``, ``test_iter124020_0.96980``,
    ``test_iter59475_0.97000``, ``test_epoch215_0.97140``), which computes
    the same network. (Its ``additional_stage=False``, Attention-56, loads
    into ``attention56_cifar``.) Every commit saved with ``save_parameters``
    (structural names); a file with both namings, or neither, is refused.
    The seed trained on images scaled to [0, 1] and normalised with the
    *ImageNet* mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225).
``'resattn'``
    A resattn ``.params`` file or dict: names are used as they are.

The three foreign implementations all wire their masks like resattn's
``variant='gluoncv'``, with sigmoid masks and attention residual learning.
"""
import collections
import os
import pickle
import pickletools
import re
import struct
import warnings
import zipfile
from collections.abc import Mapping

import numpy as np

from .._checks import first_line
from .._compat import structured_params
from .choices import SOURCES
from .blocks import AttentionModule, ResidualUnit, _PreActBottleneck
from ..io import (shown, assign_parameters, mismatch_report, read_params,
                  save_parameters, shape_compatible)

__all__ = ["SOURCES", "SEED_SCHEMES", "foreign_names", "detect_scheme", "load_params",
           "convert_file"]

#: Where weights can come from; see the module docstring.

_TORCH_HINT = ("loading PyTorch weights needs PyTorch, an optional dependency of resattn: "
               "pip install 'resattn[torch]'")
_DESCRIPTION = {"gluoncv": "GluonCV's residual attention networks",
                "pytorch": "the PyTorch reference (ResidualAttentionModel_92_32input_update)",
                "seed": "the Gluon implementation (ResidualAttentionModel_92_32input_update)"}

_Entry = collections.namedtuple("_Entry", "foreign foreign_shape shape")

#: The seed's two namings of its first attention module (two poolings), by the
#: commit that introduced each: scheme -> the model and the published files.
#: Its other modules have the same names in both.
SEED_SCHEMES = collections.OrderedDict([
    ("6c48813", "ResidualAttentionModel_92_32input_update of commits 6c48813 to 6b390fb "
                "(test_iter198999_0.95410, test_iter205999_0.95650, test_iter233999_0.95680, "
                "test_iter228999_0.96570)"),
    ("8574060", "ResidualAttentionModel_32input(additional_stage=True) of 0736f57 onwards "
                "(test_iter254999_0.96650, test_iter124020_0.96980, test_iter59475_0.97000, "
                "test_epoch215_0.97140)"),
])
# The first module's mask: first level, skip unit, bottom units, up unit, head.
_SEED_MASK = {
    "6c48813": ("down_residual_blocks1", "skip1_connection_residual_block", "middle_2r_blocks",
                "up_residual_blocks1", "conv1_1_blocks"),
    "8574060": ("softmax1_blocks", "skip1_connection_residual_block", "softmax2_blocks",
                "softmax3_blocks", "softmax4_blocks"),
}
_SEED_FIRST_MODULE = "attention_module1."


def check_source(source):
    if source not in SOURCES:
        raise ValueError("unknown source %r; valid sources: %s"
                         % (source, ", ".join(map(repr, SOURCES))))


class _Planner:
    """Walks a resattn network and records each parameter's foreign name and shape."""

    def __init__(self, source, scheme=None):
        self.source = source
        self.scheme = scheme
        self.entries = collections.OrderedDict()
        self.ignored = set()

    def _refuse(self, what):
        raise ValueError("this network has no counterpart in %s: %s"
                         % (_DESCRIPTION[self.source], what))

    def layer(self, rname, fname, layer, channels=None):
        """One Conv2D, Dense or normalisation layer; ``channels`` sizes a norm layer."""
        params = structured_params(layer)
        for key, param in params.items():
            shape = tuple(param.shape)
            if 0 in shape:
                # Norm layers infer their width; the structure knows it.
                shape = (channels,) if channels and len(shape) == 1 else shape
            fkey = key
            if self.source == "pytorch":
                fkey = {"gamma": "weight", "beta": "bias"}.get(key, key)
            self.entries["%s.%s" % (rname, key)] = _Entry("%s.%s" % (fname, fkey), shape, shape)
        if self.source == "pytorch" and "running_mean" in params:
            self.ignored.add(fname + ".num_batches_tracked")

    def unit(self, rname, fname, unit):
        if not isinstance(unit, ResidualUnit):
            self._refuse("%s is a %s; its units are plain bottleneck ResidualUnits"
                         % (rname, type(unit).__name__))
        self.layer(rname + ".bn1", fname + ".bn1", unit.bn1, unit.in_channels)
        self.layer(rname + ".conv1", fname + ".conv1", unit.conv1)
        self.layer(rname + ".bn2", fname + ".bn2", unit.bn2, unit.conv1.weight.shape[0])
        self.layer(rname + ".conv2", fname + ".conv2", unit.conv2)
        self.layer(rname + ".bn3", fname + ".bn3", unit.bn3, unit.conv2.weight.shape[0])
        self.layer(rname + ".conv3", fname + ".conv3", unit.conv3)
        if unit.has_projection:
            self.layer(rname + ".proj", fname + ".conv4", unit.proj)
        elif self.source == "pytorch":
            # The reference builds conv4 in every unit and uses it only to project.
            self.ignored.add(fname + ".conv4.weight")

    def units(self, rname, fname, seq):
        """A sequence of units stored as a foreign Sequential (``fname.0``, ``fname.1``, ...)."""
        for j, unit in enumerate(seq):
            self.unit("%s.%d" % (rname, j), "%s.%d" % (fname, j), unit)

    def single(self, rname, fname, seq, what):
        """A sequence of units stored as one foreign unit (no index)."""
        if len(seq) != 1:
            self._refuse("it stores %s as a single unit (%s), this network has %d"
                         % (what, fname.rsplit(".", 1)[-1], len(seq)))
        self.unit(rname + ".0", fname, seq[0])

    def mask_head(self, rname, fname, head, channels):
        for i in (0, 3):
            self.layer("%s.%d" % (rname, i), "%s.%d" % (fname, i), head[i], channels)
        for i in (2, 5):
            self.layer("%s.%d" % (rname, i), "%s.%d" % (fname, i), head[i])

    def module(self, rname, fname, module):
        if not isinstance(module, AttentionModule):
            self._refuse("%s is a %s, not an attention module" % (rname, type(module).__name__))
        if self.source == "gluoncv":
            self._gluoncv_module(rname, fname, module)
        else:
            self._reference_module(rname, fname, module)

    def _gluoncv_module(self, r, f, module):
        # softmax{k}_blocks number the mask's unit groups down, then up, then
        # the head; resattn's mask_up[level] runs from the bottom level upwards.
        if module.p != 1:
            self._refuse("its attention modules end in one post-processing unit (last_blocks) "
                         "whatever p (its Attention-452 has 2 before the branches, 1 after), "
                         "resattn's in p units; modules with p=%d have no GluonCV counterpart"
                         % module.p)
        levels = len(module.mask_down)
        self.units(r + ".pre", f + ".first_residual_blocks", module.pre)
        self.units(r + ".trunk", f + ".trunk_branches", module.trunk)
        for level in range(levels):
            self.units("%s.mask_down.%d" % (r, level), "%s.softmax%d_blocks" % (f, level + 1),
                       module.mask_down[level])
        for level in range(levels - 1):
            self.unit("%s.mask_skip.%d" % (r, level),
                      "%s.skip%d_connection_residual_block" % (f, level + 1),
                      module.mask_skip[level])
            self.units("%s.mask_up.%d" % (r, level),
                       "%s.softmax%d_blocks" % (f, 2 * levels - 1 - level), module.mask_up[level])
        self.mask_head(r + ".mask_head", "%s.softmax%d_blocks" % (f, 2 * levels),
                       module.mask_head, module.channels)
        self.single(r + ".post", f + ".last_blocks", module.post, "post-processing units")

    def _reference_module(self, r, f, module):
        # AttentionModule_stage1/2/3_cifar of the PyTorch reference and the
        # Gluon implementation: masks with 2, 1 and 0 poolings, p = r = 1.
        if module.num_pools > 2:
            self._refuse("its CIFAR attention modules have at most 2 poolings in the mask, %s "
                         "has %d" % (r, module.num_pools))
        if module.r != 1:
            self._refuse("its attention modules have r=1, %s has r=%d" % (r, module.r))
        self.single(r + ".pre", f + ".first_residual_blocks", module.pre,
                    "pre-processing units")
        self.units(r + ".trunk", f + ".trunk_branches", module.trunk)
        if module.num_pools == 2:
            first, skip, bottom, up, head = _SEED_MASK[
                self.scheme if self.source == "seed" else "6c48813"]
            self.single(r + ".mask_down.0", "%s.%s" % (f, first), module.mask_down[0],
                        "the first mask level")
            self.unit(r + ".mask_skip.0", "%s.%s" % (f, skip), module.mask_skip[0])
            self.units(r + ".mask_down.1", "%s.%s" % (f, bottom), module.mask_down[1])
            self.single(r + ".mask_up.0", "%s.%s" % (f, up), module.mask_up[0], "the up path")
        elif self.source == "pytorch":
            self.units(r + ".mask_down.0", f + ".middle_2r_blocks", module.mask_down[0])
            head = "conv1_1_blocks"
        else:
            self.units(r + ".mask_down.0", f + ".softmax1_blocks", module.mask_down[0])
            head = "softmax2_blocks"
        self.mask_head(r + ".mask_head", "%s.%s" % (f, head), module.mask_head, module.channels)
        self.single(r + ".post", f + ".last_blocks", module.post, "post-processing units")

    def network(self, net):
        stem, head = net.features[0], net.features[4]
        self.layer("features.0.0", "conv1.0", stem[0])
        self.layer("features.0.1", "conv1.1", stem[1], stem[0].weight.shape[0])
        for s in range(1, 4):
            stage = net.features[s]
            self.unit("features.%d.0" % s, "residual_block%d" % s, stage[0])
            for k in range(1, len(stage)):
                if self.source == "gluoncv":
                    fname = "attention_module%d.%d" % (s, k - 1)
                else:
                    fname = "attention_module%d%s" % (s, "" if k == 1 else "_%d" % k)
                self.module("features.%d.%d" % (s, k), fname, stage[k])
        units = [b for b in head if isinstance(b, _PreActBottleneck)]
        for j, unit in enumerate(units):
            self.unit("features.4.%d" % j, "residual_block%d" % (4 + j), unit)
        self.layer("features.4.%d" % len(units), "mpool2.0", head[len(units)], net.widths[3])
        self.layer("output", "fc", net.output)
        if self.source in ("gluoncv", "seed"):
            # Their classifier is a 1x1 convolution.
            entry = self.entries["output.weight"]
            self.entries["output.weight"] = entry._replace(
                foreign_shape=entry.shape + (1, 1))


def _check_scheme(source, scheme):
    if scheme is None:
        return "6c48813" if source == "seed" else None
    if source != "seed":
        raise ValueError("scheme applies to source='seed' only (%r has one naming), got %r"
                         % (source, scheme))
    if scheme not in SEED_SCHEMES:
        raise ValueError("unknown seed scheme %r; valid schemes: %s"
                         % (scheme, ", ".join(map(repr, SEED_SCHEMES))))
    return scheme


def _plan(net, source, scheme=None):
    """``(entries, ignored)``: resattn name -> _Entry, and foreign names that may be skipped."""
    check_source(source)
    scheme = _check_scheme(source, scheme)
    params = structured_params(net)
    if source == "resattn":
        entries = collections.OrderedDict(
            (k, _Entry(k, tuple(p.shape), tuple(p.shape))) for k, p in params.items())
        return entries, set()
    planner = _Planner(source, scheme)
    planner.network(net)
    left = sorted(set(params) - set(planner.entries))
    if left:  # pragma: no cover - a network with layers the walk does not know
        planner._refuse("no foreign name for %s" % ", ".join(left))
    return planner.entries, planner.ignored


def foreign_names(net, source, scheme=None):
    """The foreign name of each parameter of ``net``.

    Parameters
    ----------
    net : ResidualAttentionNet
    source : {'gluoncv', 'pytorch', 'seed', 'resattn'}
    scheme : {'6c48813', '8574060'}, optional
        For ``'seed'``: which of its namings (:data:`SEED_SCHEMES`); the
        first by default.

    Returns
    -------
    collections.OrderedDict
        resattn structural name (as in ``net.save_parameters``) -> the
        source's name, in ``net``'s parameter order.

    Examples
    --------
    >>> from resattn import get_model
    >>> names = foreign_names(get_model('attention92_cifar'), 'pytorch')
    >>> names['features.1.1.mask_up.0.0.bn1.gamma']
    'attention_module1.up_residual_blocks1.bn1.weight'
    """
    entries, _ = _plan(net, source, scheme)
    return collections.OrderedDict((k, e.foreign) for k, e in entries.items())


def _seed_hits(names):
    """scheme -> the names that only that seed naming has (the first module's mask)."""
    hits = {}
    for scheme, blocks in _SEED_MASK.items():
        own = tuple("%s%s." % (_SEED_FIRST_MODULE, b) for b in blocks
                    if all(b not in other for s, other in _SEED_MASK.items() if s != scheme))
        hits[scheme] = sorted(n for n in names if n.startswith(own))
    return hits


def _seed_expected():
    return "; or ".join(
        "%s{%s} (%s)" % (_SEED_FIRST_MODULE, ", ".join(
            b + (".0/1" if i == 2 else "") + ".*" for i, b in enumerate(blocks)),
            SEED_SCHEMES[scheme]) for scheme, blocks in _SEED_MASK.items())


def _foreign_hint(names):
    """Whose names these look like, when they are none of the seed's."""
    if any(n.startswith("attention_module1.0.") for n in names):
        return " They look like GluonCV's: use source='gluoncv'."
    if any(n.startswith(("features.", "output.")) for n in names):
        return " They look like resattn's own: use source='resattn'."
    if names and not any("." in n for n in names):
        return (" Its names have no dots: prefix names (Block.save_params or "
                "collect_params().save), which the seed's code never wrote (every commit "
                "saved with save_parameters); load them into the seed's own model and save "
                "them again with save_parameters.")
    return ""


def _seed_scheme(names, where):
    """The seed naming of ``names``; a ValueError when they have both, or neither."""
    names = list(names)
    hits = _seed_hits(names)
    found = [s for s in SEED_SCHEMES if hits[s]]
    if len(found) > 1:
        raise ValueError(
            "%s mixes the seed's two namings of its first attention module, which no file "
            "saved by either model has: %s" % (where, "; and ".join(
                "%d name%s of %s (%s)" % (len(hits[s]), "" if len(hits[s]) == 1 else "s",
                                          SEED_SCHEMES[s], shown(hits[s], 3))
                for s in found)))
    if not found:
        raise ValueError(
            "%s has neither of the seed's namings: none of its %d names is one of the first "
            "attention module's mask, expected %s.%s"
            % (where, len(names), _seed_expected(), _foreign_hint(names)))
    return found[0]


def detect_scheme(weights, source="seed"):
    """Which of ``source``'s naming schemes a weights file or dict uses.

    Parameters
    ----------
    weights : str, os.PathLike or dict
        As for :func:`load_params`.
    source : {'gluoncv', 'pytorch', 'seed', 'resattn'}

    Returns
    -------
    str or None
        For ``'seed'``, a key of :data:`SEED_SCHEMES`: ``'6c48813'``
        (``ResidualAttentionModel_92_32input_update``) or ``'8574060'``
        (``ResidualAttentionModel_32input``), told apart by the names of the
        first attention module's mask. None for the other sources, which
        have one naming each.

    Raises
    ------
    ValueError
        For an unreadable file, or seed names of both schemes or of neither
        (naming what was expected).
    """
    check_source(source)
    where, arrays = _read_weights(weights, source)
    if source != "seed":
        return None
    return _seed_scheme(arrays, where)


def _import_torch():
    try:
        import torch
    except ImportError as err:
        raise ImportError(_TORCH_HINT + " (import failed with: %s)" % err) from err
    return torch


_REFUSALS = ("GLOBAL", "persistent_load", "call reduce", "Can only", "new object")


def _unpickling_reason(err):
    """The weights-only unpickler's own words, out of torch's long wrapper message."""
    text = str(err)
    match = re.search(r"WeightsUnpickler error:\s*(.+)", text)
    if match:
        return match.group(1).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in lines:
        if any(word in line for word in _REFUSALS + ("Unsupported operand",)):
            return line
    return lines[-1] if lines else type(err).__name__


def _pickle_globals(path):
    """The ``module.name`` of every GLOBAL in a torch file's object pickle, read by
    ``pickletools`` (which only parses: nothing is imported or run)."""
    found = []

    def scan(f):
        for opcode, arg, _ in pickletools.genops(f):
            if opcode.name in ("GLOBAL", "INST") and isinstance(arg, str):
                found.append(arg.replace(" ", "."))

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                for name in archive.namelist():
                    if name.endswith("data.pkl"):
                        with archive.open(name) as f:
                            scan(f)
        else:
            with open(path, "rb") as f:
                for _ in range(3):  # magic number, protocol version, sys_info
                    for _ in pickletools.genops(f):
                        pass
                scan(f)
    except Exception:  # noqa: BLE001 - a best-effort look for a hint only
        pass
    return found


# Globals of a state_dict pickle itself: not the classes of a pickled model.
_STATE_DICT_GLOBALS = ("torch.", "collections.", "builtins.", "__builtin__.", "copy_reg.",
                       "copyreg.", "_codecs.")


def _whole_model_hint(path):
    """How to read a whole pickled ``nn.Module`` (its classes are in the pickle), or None."""
    classes = sorted(set(g for g in _pickle_globals(path) if g.startswith("torch.nn.modules.")
                         or not g.startswith(_STATE_DICT_GLOBALS)))
    if not any(c.startswith("torch.nn.modules.") for c in classes):
        return None
    own = [c for c in classes if not c.startswith("torch.")] or classes
    return ("it holds a whole pickled model (torch.save(model)), not a state_dict: %s. "
            "weights_only=True refuses to unpickle it, since that would import and run the "
            "model's code. If you trust the file: with the code of %s importable (for the "
            "PyTorch reference, run from its Residual-Attention-Network directory), "
            "torch.save(torch.load(%r, map_location='cpu', weights_only=False, "
            "encoding='latin1').state_dict(), 'state_dict.pkl') and load state_dict.pkl"
            % (shown(classes, 6), own[0], path))


def _torch_load(torch, path):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except UnicodeDecodeError:
        # A Python 2 byte string that is not UTF-8; latin-1 maps every byte.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*pickle_load_args")
            return torch.load(path, map_location="cpu", weights_only=True, encoding="latin1")


def _read_torch(path):
    torch = _import_torch()
    try:
        # weights_only: a pickle that would run code is refused, not executed.
        loaded = _torch_load(torch, path)
    except pickle.UnpicklingError as err:
        reason = _unpickling_reason(err)
        if not any(word in reason for word in _REFUSALS):
            raise ValueError("cannot read %s as a PyTorch state_dict (not a torch.save file, "
                             "or a corrupted one): %s" % (path, reason)) from None
        hint = _whole_model_hint(path)
        if hint:
            raise ValueError("cannot read %s as a PyTorch state_dict: %s (%s)"
                             % (path, hint, reason)) from None
        raise ValueError("cannot read %s as a PyTorch state_dict (weights_only=True refuses "
                         "pickles that hold anything but tensors): %s" % (path, reason)) from None
    except Exception as err:  # noqa: BLE001 - whatever a damaged file raises
        detail = first_line(err)
        if isinstance(err, (EOFError, IndexError, struct.error)):
            detail = "it ends too early (%s)" % (type(err).__name__ if detail == type(err).__name__
                                                 else "%s: %s" % (type(err).__name__, detail))
        elif detail != type(err).__name__:
            detail = "%s: %s" % (type(err).__name__, detail)
        raise ValueError("cannot read %s as a PyTorch state_dict (truncated, corrupted, or "
                         "not a torch.save file?): %s" % (path, detail)) from None
    if not isinstance(loaded, Mapping):
        raise ValueError("%s holds a %s, not a state_dict (name -> tensor)"
                         % (path, type(loaded).__name__))
    return dict(loaded)


def _read_file(path, source):
    if not os.path.isfile(path):
        raise ValueError("weights file %r: no such file" % path)
    if source == "pytorch":
        return _read_torch(path)
    return read_params(path)


def _read_weights(weights, source):
    """``(where, arrays)`` of a file or dict; byte-string keys (Python 2) become str."""
    if isinstance(weights, Mapping):
        where, arrays = "<dict>", dict(weights)
    elif isinstance(weights, (str, os.PathLike)):
        where = os.fspath(weights)
        arrays = _read_file(where, source)
    else:
        raise ValueError("weights must be a file path or a dict of name -> array, got %s"
                         % type(weights).__name__)
    if any(isinstance(k, bytes) for k in arrays):
        arrays = {k.decode("latin-1") if isinstance(k, bytes) else k: v
                  for k, v in arrays.items()}
    return where, arrays


def _is_array(value):
    return (isinstance(value, np.ndarray) or hasattr(value, "asnumpy")
            or (hasattr(value, "detach") and hasattr(value, "numpy")))


def _to_numpy(value):
    if hasattr(value, "asnumpy"):
        return value.asnumpy()
    if hasattr(value, "detach"):
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":  # NumPy has no bfloat16
            value = value.float()
        return value.numpy()
    return np.asarray(value)


def load_params(net, weights, source, ctx=None):
    """Load another implementation's weights into ``net``, all or nothing.

    Parameters
    ----------
    net : ResidualAttentionNet
        For example ``get_model('attention92_cifar')``; initialised or not.
    weights : str, os.PathLike or dict
        A file (a PyTorch ``state_dict`` for ``'pytorch'``, an MXNet
        ``.params`` file otherwise) or a dict of name -> array (NumPy,
        ``mx.nd.NDArray`` or ``torch.Tensor``).
    source : {'gluoncv', 'pytorch', 'seed', 'resattn'}
        Whose names ``weights`` uses; see the module docstring for each
        source's models and the preprocessing its weights expect.
    ctx : Context, default ``mx.cpu()``
        Where the parameters live.

    Raises
    ------
    ValueError
        For an unknown source; an unreadable (missing, truncated, corrupted)
        file, or a PyTorch file that holds more than tensors (it is read with
        ``weights_only=True``, so the code it carries never runs; a whole
        pickled model is named as such, with the steps to a state_dict); seed
        names of both of its schemes, or of neither; a network that has no
        counterpart in ``source``; and, listing each, parameters that are
        missing, unexpected or of the wrong shape. ``net`` is unchanged then.
    ImportError
        For ``'pytorch'`` files without PyTorch installed.

    Returns
    -------
    ResidualAttentionNet
        ``net``.

    Notes
    -----
    Seed weights are matched against the naming :func:`detect_scheme` finds
    in them. Entries that the foreign model stores but never uses are skipped: the
    PyTorch reference's ``num_batches_tracked`` and the ``conv4`` it builds
    in every residual unit but uses only where the unit projects. Keys that
    all start with ``module.`` (a ``torch.nn.DataParallel`` state_dict) lose
    that prefix. A GluonCV or seed 1x1-convolution classifier
    ``(classes, C, 1, 1)`` becomes the Dense ``(classes, C)``.

    Examples
    --------
    >>> net = get_model('attention92_cifar')                      # doctest: +SKIP
    >>> load_params(net, 'model_92_sgd.pkl', 'pytorch')           # doctest: +SKIP
    """
    check_source(source)
    entries, ignored = _plan(net, source)
    where, arrays = _read_weights(weights, source)
    if source == "seed":
        scheme = _seed_scheme(arrays, where)
        if scheme != "6c48813":
            entries, ignored = _plan(net, source, scheme)
    if source == "pytorch" and arrays and all(k.startswith("module.") for k in arrays):
        arrays = {k[len("module."):]: v for k, v in arrays.items()}
    not_arrays = sorted("%s (%s)" % (k, type(v).__name__) for k, v in arrays.items()
                        if not _is_array(v))
    if not_arrays:
        raise ValueError("%s holds entries that are not arrays: %s; pass the state_dict / "
                         "parameters alone" % (where, shown(not_arrays)))

    wanted = {e.foreign: (k, e) for k, e in entries.items()}
    missing = ["%s (%s)" % (e.foreign, k) for k, e in entries.items() if e.foreign not in arrays]
    unexpected = sorted(k for k in arrays if k not in wanted and k not in ignored)
    wrong = []
    for name, (key, entry) in wanted.items():
        if name in arrays:
            got = tuple(arrays[name].shape)
            if not shape_compatible(entry.foreign_shape, got):
                wrong.append("%s (%s): expected %s, got %s"
                             % (name, key, entry.foreign_shape, got))
    if missing or unexpected or wrong:
        hint = ""
        if 2 * len(missing) > len(entries):
            hint = " (most names are missing: are these %s weights?)" % source
        raise ValueError("cannot load %s weights from %s into %s (%d parameters): %s%s"
                         % (source, where, type(net).__name__, len(entries),
                            mismatch_report(missing, unexpected, wrong), hint))
    renamed = {}
    for key, entry in entries.items():
        value = _to_numpy(arrays[entry.foreign])
        # Shapes with a 0 are inferred ones (norm layers of a 'resattn' load).
        renamed[key] = value if 0 in entry.shape else value.reshape(entry.shape)
    assign_parameters(net, renamed, ctx=ctx, source=where)
    return net


def convert_file(model_name, weights, source, out_path, **model_kwargs):
    """Deprecated alias of :func:`resattn.models.convert_file` (kept for 0.1 code).

    The conversion builds a zoo model, so it lives with the builder
    (:mod:`resattn.models._builder`) and this module stays a leaf of the
    package: it knows the foreign names, not the zoo.
    """
    import warnings
    warnings.warn("resattn.models.convert.convert_file is deprecated: use "
                  "resattn.models.convert_file", DeprecationWarning, stacklevel=2)
    from ._builder import convert_file as convert
    return convert(model_name, weights, source, out_path, **model_kwargs)
