"""torch's legacy serialization (``torch.save`` before torch 1.6), written without torch.

A legacy file is five parts back to back, each pickle with protocol 2:

1. the magic number ``0x1950a86a20f9469cfc6c`` (a Python long);
2. the protocol version 1001;
3. ``sys_info``: ``dict(protocol_version=1001, little_endian=True,
   type_sizes=dict(short=2, int=4, long=4))``;
4. the object, each storage replaced by a persistent id
   ``('storage', storage class, key, location, numel, view_metadata)`` where the
   class is the *CPU* one (torch normalises ``torch.cuda.FloatStorage`` to
   ``torch.FloatStorage``; the device is in ``location``, ``'cuda:0'``), the key
   is ``str(storage._cdata)`` (the address of the C struct) and
   ``view_metadata`` is None for a storage that is not a view; tensors reduce to
   ``torch._utils._rebuild_tensor(storage, offset, size, stride)`` (torch 0.3)
   or ``_rebuild_tensor_v2(storage, offset, size, stride, requires_grad,
   backward_hooks)`` with ``requires_grad=False`` and ``backward_hooks=None``
   (torch 0.4); a ``state_dict`` is a ``collections.OrderedDict``, which since
   torch 0.4.1 carries ``_metadata`` (module prefix -> ``{'version': n}``) and
   holds the BatchNorm ``num_batches_tracked`` (int64, 0-d) buffers;
5. the sorted list of storage keys, then for each key the storage: its
   element count as a little-endian int64 and its raw little-endian bytes.

Under Python 2 torch pickles with ``cPickle``, which differs from Python 3's
pickler in ways that show in the bytes: ``str`` is a byte string
(``SHORT_BINSTRING``), the memo is numbered from 1, and it memoizes an object
only while something besides the pickler holds it (CPython reference count >=
2), non-empty lists and dicts always, strings shorter than 2 characters never.
With a ``persistent_id`` function set, cPickle keeps the last object it passed
to that function in its reused argument tuple, so in ``torch.save``'s main
pickle every string of 2+ characters counts as held and is memoized (a tuple
is not: saving its elements displaces it). A fresh ``'cuda:0'`` location
(``'cuda:' + str(device)``) is therefore memoized anew for every storage,
while the constants ``'storage'`` and ``'cpu'`` and the classes and functions
are referred to in the memo after their first use. Lists and dicts are written
in batches of 1000 (``MARK ... APPENDS``; a batch of one element with ``APPEND``),
Python 2.7's ``OrderedDict`` reduces to
``(OrderedDict, ([[key, value], ...],)[, {'_metadata': ...}])``, and
``sys_info`` comes out in Python 2's dict order. :class:`_Py2Pickler` writes
what cPickle writes for the objects of ``torch.save(state_dict)``;
``tests/refimpl/py2_torch_save.py`` checks it against Python 2.7's own cPickle
where one is installed.
"""
import collections
import io
import os
import pickle
import random
import struct

import numpy as np

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001
TORCH_VERSIONS = ("0.3", "0.4.0", "0.4.1")

#: NumPy dtype -> the legacy storage class (module ``torch``).
STORAGE_CLASSES = {"float32": "FloatStorage", "float64": "DoubleStorage",
                   "float16": "HalfStorage", "int64": "LongStorage", "int32": "IntStorage",
                   "int16": "ShortStorage", "int8": "CharStorage", "uint8": "ByteStorage"}

_BATCH = 1000


def _numpy(value):
    if hasattr(value, "detach"):  # a torch.Tensor
        value = value.detach().cpu().numpy()
    return np.asarray(value, order="C")  # ascontiguousarray would make 0-d arrays 1-d


class _Entry:
    """One tensor: its array, C-contiguous strides (in elements) and storage key."""

    def __init__(self, name, array, key):
        self.name = name
        self.array = array
        self.key = key
        self.storage_class = STORAGE_CLASSES[array.dtype.name]
        self.shape = tuple(int(n) for n in array.shape)
        self.stride = tuple(int(s // array.itemsize) for s in array.strides)
        self.numel = int(array.size)

    def data(self):
        return struct.pack("<q", self.numel) + self.array.astype(
            self.array.dtype.newbyteorder("<"), copy=False).tobytes()


def fake_storage_keys(count, seed=0):
    """``count`` distinct decimal heap addresses like ``str(storage._cdata)``.

    Not in increasing order, so that the storage data (written in sorted-key
    order) is not in the order the tensors appear in the pickle.
    """
    rng = random.Random(seed)
    addresses = set()
    while len(addresses) < count:
        addresses.add(0x560000000000 + 16 * rng.randrange(1, 1 << 36))
    addresses = sorted(addresses)
    rng.shuffle(addresses)
    return [str(a) for a in addresses]


class _Py2Pickler:
    """What Python 2.7's ``cPickle.Pickler(f, 2)`` writes, one object at a time."""

    def __init__(self):
        self.out = bytearray(b"\x80\x02")
        self.memo = {}

    def _put(self, key):
        index = len(self.memo) + 1  # cPickle numbers its memo from 1
        self.memo[key] = index
        self.out += (b"q" + bytes([index])) if index < 256 else (b"r" + struct.pack("<I", index))

    def _fetch(self, key):
        if key not in self.memo:
            return False
        index = self.memo[key]
        self.out += (b"h" + bytes([index])) if index < 256 else (b"j" + struct.pack("<I", index))
        return True

    def fresh(self):
        """Memoize a non-empty list or dict (cPickle's put2 does, whatever holds it)."""
        self._put(("fresh", len(self.memo)))

    def string(self, text, reuse=True):
        """A str (Python 2 bytes); ``reuse``: the same object may come again (a constant
        or a key), so a second meeting refers to the memo."""
        data = text.encode("latin-1")
        if len(data) >= 2 and reuse and self._fetch(("str", data)):
            return
        if len(data) < 256:
            self.out += b"U" + bytes([len(data)]) + data
        else:
            self.out += b"T" + struct.pack("<i", len(data)) + data
        if len(data) >= 2:  # see the module docstring: always memoized
            self._put(("str", data) if reuse else ("fresh", len(self.memo)))

    def integer(self, value):
        if not -0x80000000 <= value <= 0x7FFFFFFF:  # a Python 2 int beyond BININT
            self.out += b"I%d\n" % value
        elif 0 <= value < 0x100:
            self.out += b"K" + bytes([value])
        elif 0 <= value < 0x10000:
            self.out += b"M" + struct.pack("<H", value)
        else:
            self.out += b"J" + struct.pack("<i", value)

    def long(self, value):
        data = pickle.encode_long(value)
        self.out += (b"\x8a" + bytes([len(data)]) if len(data) < 256
                     else b"\x8b" + struct.pack("<i", len(data))) + data

    def boolean(self, value):
        self.out += b"\x88" if value else b"\x89"

    def none(self):
        self.out += b"N"

    def glob(self, module, name):
        if not self._fetch(("global", module, name)):
            self.out += b"c" + module.encode() + b"\n" + name.encode() + b"\n"
            self._put(("global", module, name))

    def int_tuple(self, values):
        """A fresh tuple of ints (sizes and strides): never memoized."""
        if not values:
            self.out += b")"
            return
        if len(values) > 3:
            self.out += b"("
        for value in values:
            self.integer(value)
        self.out += {1: b"\x85", 2: b"\x86", 3: b"\x87"}.get(len(values), b"t")

    def items_list(self, items, save_item):
        """A fresh list, each element written by ``save_item`` (cPickle's batch_list_exact)."""
        self.out += b"]"
        if not items:
            return  # an empty list nobody else holds: not memoized
        self.fresh()
        for start in range(0, len(items), _BATCH):
            batch = items[start:start + _BATCH]
            if len(batch) == 1:  # a batch of one (a one-element list, or 1001 elements)
                save_item(batch[0])
                self.out += b"a"
                continue
            self.out += b"("
            for item in batch:
                save_item(item)
            self.out += b"e"

    def small_dict(self, items):
        """A fresh dict of (name, int) in the given (Python 2 hash) order."""
        self.out += b"}"
        if not items:
            return
        self.fresh()
        if len(items) > 1:
            self.out += b"("
        for key, value in items:
            self.string(key)
            if isinstance(value, dict):
                self.small_dict(list(value.items()))
            elif isinstance(value, bool):
                self.boolean(value)
            else:
                self.integer(value)
        self.out += b"u" if len(items) > 1 else b"s"

    def stop(self):
        self.out += b"."
        return bytes(self.out)


def _py2_header():
    magic = _Py2Pickler()
    magic.long(MAGIC_NUMBER)
    version = _Py2Pickler()
    version.integer(PROTOCOL_VERSION)
    info = _Py2Pickler()
    # Python 2.7's order for these keys (string hashes unrandomised, its default).
    info.small_dict([("protocol_version", PROTOCOL_VERSION),
                     ("type_sizes", {"int": 4, "short": 2, "long": 4}),
                     ("little_endian", True)])
    return magic.stop() + version.stop() + info.stop()


def _py2_state_dict(entries, metadata, location, torch_version):
    p = _Py2Pickler()
    rebuild = "_rebuild_tensor" if torch_version == "0.3" else "_rebuild_tensor_v2"

    def tensor(entry):
        p.glob("torch._utils", rebuild)
        p.out += b"("
        p.out += b"("  # the persistent id: a fresh 6-tuple
        p.string("storage")
        p.glob("torch", entry.storage_class)
        p.string(entry.key)
        p.string(location, reuse=location == "cpu")  # 'cuda:' + str(device) is new each time
        p.integer(entry.numel)
        p.none()  # not a view
        p.out += b"tQ"
        p.integer(0)  # storage offset
        p.int_tuple(entry.shape)
        p.int_tuple(entry.stride)
        if torch_version != "0.3":
            p.boolean(False)  # requires_grad of param.data
            p.none()  # _backward_hooks
        p.out += b"tR"
        p._put(("tensor", entry.name))  # held by the state dict

    def pair(entry):  # Python 2.7 OrderedDict.__reduce__ items: [key, value]
        p.out += b"]"
        p.fresh()
        p.out += b"("
        p.string(entry.name)
        tensor(entry)
        p.out += b"e"

    p.glob("collections", "OrderedDict")
    p.items_list(entries, pair)
    p.out += b"\x85R"
    p._put(("object", "state_dict"))
    if metadata is not None:
        p.out += b"}"  # state: {'_metadata': OrderedDict(prefix -> {'version': n})}
        p.fresh()
        p.string("_metadata")

        def meta_pair(item):
            prefix, info = item
            p.out += b"]"
            p.fresh()
            p.out += b"("
            p.string(prefix)
            p.small_dict(list(info.items()))
            p.out += b"e"

        p.glob("collections", "OrderedDict")
        p.items_list(list(metadata.items()), meta_pair)
        p.out += b"\x85R"
        p._put(("object", "_metadata"))
        p.out += b"sb"
    return p.stop()


def _py2_keys(keys):
    p = _Py2Pickler()
    p.items_list(keys, p.string)
    return p.stop()


class _Storage:
    def __init__(self, entry):
        self.entry = entry


class _Tensor:
    def __init__(self, entry, rebuild):
        self.entry = entry
        self.rebuild = rebuild

    def __reduce_ex__(self, protocol):
        e = self.entry
        args = (_Storage(e), 0, e.shape, e.stride)
        if self.rebuild.__name__ != "_rebuild_tensor":
            args += (False, None)
        return self.rebuild, args


def _py3_body(entries, metadata, location, torch_version):
    """The object and key pickles as torch 0.3 / 0.4 wrote them under Python 3."""
    import torch  # for the globals the pickle names

    rebuild = (torch._utils._rebuild_tensor if torch_version == "0.3"
               else torch._utils._rebuild_tensor_v2)

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, _Storage):
                e = obj.entry
                return ("storage", getattr(torch, e.storage_class), e.key, location, e.numel,
                        None)
            return None

    state = collections.OrderedDict((e.name, _Tensor(e, rebuild)) for e in entries)
    if metadata is not None:
        state._metadata = collections.OrderedDict(metadata)
    buf = io.BytesIO()
    Pickler(buf, protocol=2).dump(state)
    body = buf.getvalue()
    keys = pickle.dumps(sorted(e.key for e in entries), protocol=2)
    return body, keys


def legacy_bytes(state_dict, cuda=True, py2=True, torch_version="0.3", metadata=None,
                 keys=None, device=0):
    """The bytes of :func:`write_legacy_torch`."""
    if torch_version not in TORCH_VERSIONS:
        raise ValueError("torch_version must be one of %s" % (TORCH_VERSIONS,))
    names = list(state_dict)
    keys = fake_storage_keys(len(names)) if keys is None else list(keys)
    entries = [_Entry(name, _numpy(state_dict[name]), key) for name, key in zip(names, keys)]
    if torch_version != "0.4.1":
        metadata = None
    location = "cuda:%d" % device if cuda else "cpu"
    if py2:
        header = _py2_header()
        body = _py2_state_dict(entries, metadata, location, torch_version)
        key_list = _py2_keys(sorted(e.key for e in entries))
    else:
        header = (pickle.dumps(MAGIC_NUMBER, protocol=2)
                  + pickle.dumps(PROTOCOL_VERSION, protocol=2)
                  + pickle.dumps(dict(protocol_version=PROTOCOL_VERSION, little_endian=True,
                                      type_sizes=dict(short=2, int=4, long=4)), protocol=2))
        body, key_list = _py3_body(entries, metadata, location, torch_version)
    data = b"".join(e.data() for e in sorted(entries, key=lambda e: e.key))
    return header + body + key_list + data


def py2_manifest(state_dict, data_path, cuda=True, torch_version="0.3", metadata=None,
                 keys=None):
    """The manifest of ``py2_torch_save.py`` for the file :func:`legacy_bytes` makes of the
    same arguments; writes the raw storage bytes to ``data_path``."""
    names = list(state_dict)
    keys = fake_storage_keys(len(names)) if keys is None else list(keys)
    entries, offset = [], 0
    with open(os.fspath(data_path), "wb") as f:
        for name, key in zip(names, keys):
            entry = _Entry(name, _numpy(state_dict[name]), key)
            raw = entry.data()[8:]
            f.write(raw)
            entries.append([name, entry.storage_class, list(entry.shape), list(entry.stride),
                            key, entry.numel, offset, len(raw)])
            offset += len(raw)
    if torch_version != "0.4.1" or metadata is None:
        meta = None
    else:
        meta = [[prefix, info["version"]] for prefix, info in metadata.items()]
    return dict(torch_version=torch_version, cuda=bool(cuda), metadata=meta,
                data=os.fspath(data_path), entries=entries)


def write_legacy_torch(state_dict, path, cuda=True, py2=True, torch_version="0.3",
                       metadata=None, keys=None):
    """Write ``state_dict`` as ``torch.save(state_dict, path)`` of torch 0.3 / 0.4 would.

    Parameters
    ----------
    state_dict : mapping of str -> torch.Tensor or numpy.ndarray
        In order; float32 tensors become ``FloatStorage``, int64 ``LongStorage``...
    cuda : bool
        Storages on ``'cuda:0'`` (a model trained with ``.cuda()``), else ``'cpu'``.
    py2 : bool
        Pickled by Python 2's cPickle (byte strings, its memo) or Python 3's pickle.
    torch_version : {'0.3', '0.4.0', '0.4.1'}
        How tensors reduce (``_rebuild_tensor`` or ``_rebuild_tensor_v2``), and
        whether the state dict carries ``metadata`` (0.4.1). ``num_batches_tracked``
        entries are the caller's: torch 0.4.1 has them, earlier versions do not.
    metadata : mapping of prefix -> {'version': n}, optional
        The state dict's ``_metadata`` (0.4.1 only), e.g. a current torch
        ``state_dict()._metadata``, whose versions are 0.4.1's (BatchNorm 2, others 1).
    keys : list of str, optional
        The storage keys; by default :func:`fake_storage_keys`.

    Returns
    -------
    str
        ``path``.
    """
    data = legacy_bytes(state_dict, cuda=cuda, py2=py2, torch_version=torch_version,
                        metadata=metadata, keys=keys)
    with open(os.fspath(path), "wb") as f:
        f.write(data)
    return path
