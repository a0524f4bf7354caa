# -*- coding: utf-8 -*-
"""Python 2.7 script: ``torch.save(state_dict)`` of torch 0.3 / 0.4 with Python 2's cPickle.

Usage: ``python2.7 py2_torch_save.py MANIFEST.json OUT``. The manifest gives
``torch_version``, ``cuda``, ``metadata`` (``[[prefix, version], ...]`` or
null), ``data`` (a file of raw little-endian storage bytes) and ``entries``
(``[name, storage class, shape, stride, key, numel, offset, nbytes]``).

torch is not needed: stand-ins for its modules, storage classes, tensors and
``torch.save``'s persistent ids reproduce what torch 0.3 / 0.4 hands to
cPickle (which objects are fresh and which shared, the tensors' reduce
tuples), so that the bytes are cPickle's own. Used by tests/test_formats.py to
check :mod:`legacy_torch`, which writes these files without Python 2.
"""
import collections
import json
import struct
import sys
import types

import cPickle


def _module(name):
    module = types.ModuleType(name)
    sys.modules[name] = module
    return module


torch = _module("torch")
torch._utils = _module("torch._utils")
torch.cuda = _module("torch.cuda")


def _rebuild_tensor(storage, storage_offset, size, stride):
    raise NotImplementedError


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks):
    raise NotImplementedError


for _f in (_rebuild_tensor, _rebuild_tensor_v2):
    _f.__module__ = "torch._utils"
    setattr(torch._utils, _f.__name__, _f)


class _StorageBase(object):
    def __init__(self, cdata, numel, data):
        self._cdata = cdata
        self._numel = numel
        self._data = data

    def size(self):
        return self._numel

    def _root_storage(self):
        return self, 0  # not a view: the storage itself

    def get_device(self):
        return 0

    def _write_file(self, f):
        f.write(struct.pack("<q", self._numel))
        f.write(self._data)


STORAGE_NAMES = ("FloatStorage", "DoubleStorage", "HalfStorage", "LongStorage", "IntStorage",
                 "ShortStorage", "CharStorage", "ByteStorage")
for _name in STORAGE_NAMES:
    setattr(torch, _name, type(_name, (_StorageBase,), {"__module__": "torch"}))
    setattr(torch.cuda, _name, type(_name, (_StorageBase,), {"__module__": "torch.cuda"}))


class _Tensor(object):
    def __init__(self, storage, size, stride):
        self._storage = storage
        self._size = list(size)
        self._stride = list(stride)
        self.requires_grad = False

    def storage(self):
        return self._storage

    def storage_offset(self):
        return 0

    def size(self):
        return list(self._size)  # like torch.Size: a new sequence each call

    def stride(self):
        return tuple(self._stride)  # a new tuple each call


class Tensor03(_Tensor):
    """torch 0.3: ``__reduce__`` -> ``(_rebuild_tensor, (storage, offset, size, stride))``."""

    def __reduce__(self):
        state = (self.storage(), self.storage_offset(), tuple(self.size()), self.stride())
        return (_rebuild_tensor, state)


class Tensor04(_Tensor):
    """torch 0.4: ``__reduce_ex__`` -> ``_rebuild_tensor_v2`` with requires_grad and hooks."""

    _backward_hooks = None

    def __reduce_ex__(self, proto):
        state = (self.storage(), self.storage_offset(), tuple(self.size()), self.stride(),
                 self.requires_grad, self._backward_hooks)
        return (_rebuild_tensor_v2, state)


def _location(storage):
    if type(storage).__module__ == "torch.cuda":
        return "cuda:" + str(storage.get_device())
    return "cpu"


def save(obj, f):
    stored = {}

    def persistent_id(item):
        if isinstance(item, _StorageBase):
            root, _ = item._root_storage()
            key = str(root._cdata)
            stored[key] = root
            return ("storage", getattr(torch, type(item).__name__), key, _location(item),
                    root.size(), None)
        return None

    info = dict(protocol_version=1001, little_endian=sys.byteorder == "little",
                type_sizes=dict(short=struct.Struct("=h").size, int=struct.Struct("=i").size,
                                long=struct.Struct("=l").size))
    cPickle.dump(0x1950a86a20f9469cfc6c, f, protocol=2)
    cPickle.dump(1001, f, protocol=2)
    cPickle.dump(info, f, protocol=2)
    pickler = cPickle.Pickler(f, 2)
    pickler.persistent_id = persistent_id
    pickler.dump(obj)
    keys = sorted(stored.keys())
    cPickle.dump(keys, f, protocol=2)
    f.flush()
    for key in keys:
        stored[key]._write_file(f)


def main(manifest_path, out_path):
    with open(manifest_path) as f:
        manifest = json.load(f)
    with open(manifest["data"], "rb") as f:
        data = f.read()
    tensor_class = Tensor03 if manifest["torch_version"] == "0.3" else Tensor04
    module = torch.cuda if manifest["cuda"] else torch
    state = collections.OrderedDict()
    if manifest["metadata"] is not None:
        state._metadata = collections.OrderedDict()
        for prefix, version in manifest["metadata"]:
            state._metadata[str(prefix)] = dict(version=version)
    for name, cls, shape, stride, key, numel, offset, nbytes in manifest["entries"]:
        storage = getattr(module, str(cls))(int(key), numel, data[offset:offset + nbytes])
        state[str(name)] = tensor_class(storage, shape, stride)
    with open(out_path, "wb") as f:
        save(state, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
