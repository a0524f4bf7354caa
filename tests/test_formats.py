"""The published weight files' formats: the seed's two namings, the reference's legacy pickle.

Each foreign model is an independent re-implementation (``tests/refimpl``)
with random weights and BatchNorm statistics, saved as its authors saved it:
the seed with Gluon ``save_parameters`` at either of its namings, the PyTorch
reference as torch 0.3 / 0.4 under Python 2 wrote ``model_92_sgd.pkl`` (legacy
serialization, CUDA storages). Loaded into ``attention92_cifar`` it must give
the reference's outputs, imperatively and hybridized.
"""
import glob
import json
import os
import re
import shutil
import subprocess

import mxnet as mx
import numpy as np
import pytest

from conftest import randomize_batchnorm, rel_diff
from refimpl import legacy_torch, seed_gluon
from resattn import get_model
from resattn.models.convert import (SEED_SCHEMES, detect_scheme, foreign_names, load_params)

TOL = 1e-4
HERE = os.path.dirname(os.path.abspath(__file__))


def _values(net):
    return {k: p.data().asnumpy().copy() for k, p in net._collect_params_with_prefix().items()}


def _unchanged(net, before):
    after = _values(net)
    return all(np.array_equal(before[k], after[k]) for k in before)


def _check_parity(net, x, expected, label):
    diffs = [rel_diff(expected, net(x))]
    net.hybridize()
    diffs.append(rel_diff(expected, net(x)))
    print("%s: max relative difference imperative %.2e, hybridized %.2e" % (label, *diffs))
    assert max(diffs) <= TOL, diffs


def _initialised(name):
    net = get_model(name)
    net.initialize(mx.init.Xavier())
    net(mx.nd.zeros((1, 3, 32, 32)))
    randomize_batchnorm(net)
    return net


# --------------------------------------------------------------------------- the seed (Gluon)

SEED_MODELS = {  # scheme: the seed's model of that naming, and the resattn model
    "6c48813": (seed_gluon.ResidualAttentionModel_92_32input_update, "attention92_cifar"),
    "8574060": (lambda: seed_gluon.ResidualAttentionModel_32input(additional_stage=True),
                "attention92_cifar"),
    "8574060-56": (lambda: seed_gluon.ResidualAttentionModel_32input(additional_stage=False),
                   "attention56_cifar"),
}
_SEED = {}


def _seed_model(case):
    """The seed's model with random weights and BatchNorm statistics, an input, its output."""
    if case not in _SEED:
        mx.random.seed(11)
        net = SEED_MODELS[case][0]()
        net.initialize(mx.init.Xavier())
        # The seed's input: [0, 1] images normalised with ImageNet's mean and std.
        x = mx.nd.array(np.random.RandomState(5).uniform(-2, 2, (2, 3, 32, 32)))
        net(x)
        randomize_batchnorm(net, np.random.RandomState(6))
        y = net(x)  # inference mode
        assert np.ptp(y.asnumpy()) > 0
        net.hybridize()  # as the seed trained and tested it; same outputs
        assert rel_diff(y, net(x)) < 1e-5
        _SEED[case] = (net, x, y)
    return _SEED[case]


def _seed_file(case, tmp_path):
    net, _, _ = _seed_model(case)
    path = str(tmp_path / ("test_iter_%s.param" % case))
    net.save_parameters(path)  # every commit of the seed saved with save_parameters
    return path


def _seed_arrays(case):
    net, _, _ = _seed_model(case)
    return {k: p.data() for k, p in net._collect_params_with_prefix().items()}


@pytest.mark.parametrize("case", list(SEED_MODELS))
def test_seed_parity(case, tmp_path):
    _, x, expected = _seed_model(case)
    path = _seed_file(case, tmp_path)
    names = set(mx.nd.load(path))
    scheme = case.split("-")[0]
    first = {"6c48813": "attention_module1.down_residual_blocks1.bn1.gamma",
             "8574060": "attention_module1.softmax1_blocks.bn1.gamma"}[scheme]
    assert first in names and "attention_module2.softmax1_blocks.0.conv1.weight" in names
    assert detect_scheme(path) == scheme
    net = get_model(SEED_MODELS[case][1])
    assert set(foreign_names(net, "seed", scheme=scheme).values()) == names
    assert load_params(net, path, "seed") is net
    _check_parity(net, x, expected, "seed %s -> %s" % (case, SEED_MODELS[case][1]))


def test_seed_schemes_name_the_same_network():
    """Only the first module's mask is named differently; nothing else."""
    old, new = (foreign_names(get_model("attention92_cifar"), "seed", scheme=s)
                for s in SEED_SCHEMES)
    differ = sorted(k for k in old if old[k] != new[k])
    assert differ and all(k.startswith(("features.1.1.mask_down", "features.1.1.mask_up",
                                        "features.1.1.mask_head")) for k in differ)
    assert new["features.1.1.mask_down.0.0.conv1.weight"] == \
        "attention_module1.softmax1_blocks.conv1.weight"
    assert new["features.1.1.mask_down.1.1.bn2.gamma"] == \
        "attention_module1.softmax2_blocks.1.bn2.gamma"
    assert new["features.1.1.mask_up.0.0.conv3.weight"] == \
        "attention_module1.softmax3_blocks.conv3.weight"
    assert new["features.1.1.mask_head.5.weight"] == "attention_module1.softmax4_blocks.5.weight"
    assert new["features.1.1.mask_skip.0.bn1.beta"] == \
        old["features.1.1.mask_skip.0.bn1.beta"] == \
        "attention_module1.skip1_connection_residual_block.bn1.beta"
    with pytest.raises(ValueError, match="unknown seed scheme 'x'"):
        foreign_names(get_model("attention92_cifar"), "seed", scheme="x")
    with pytest.raises(ValueError, match="source='seed' only"):
        foreign_names(get_model("attention92_cifar"), "pytorch", scheme="8574060")


def test_seed_new_naming_mapping_is_sensitive():
    """Swapping the same-shaped softmax1_blocks and softmax3_blocks changes the output."""
    _, x, expected = _seed_model("8574060")
    arrays = _seed_arrays("8574060")
    a, b = "attention_module1.softmax1_blocks.", "attention_module1.softmax3_blocks."
    swapped = dict(arrays)
    for key in arrays:
        if key.startswith(a):
            other = b + key[len(a):]
            swapped[key], swapped[other] = arrays[other], arrays[key]
    net = load_params(get_model("attention92_cifar"), swapped, "seed")
    diff = rel_diff(expected, net(x))
    print("seed 8574060 with softmax1/softmax3 swapped: relative difference %.2e" % diff)
    assert diff > 10 * TOL


def test_seed_mixed_names_are_refused(tmp_path):
    arrays = _seed_arrays("6c48813")
    old = "attention_module1.up_residual_blocks1."
    mixed = {("attention_module1.softmax3_blocks." + k[len(old):] if k.startswith(old) else k): v
             for k, v in arrays.items()}
    path = str(tmp_path / "mixed.param")
    mx.nd.save(path, mixed)
    net = _initialised("attention92_cifar")
    before = _values(net)
    for weights, where in ((path, path), (mixed, "<dict>")):
        with pytest.raises(ValueError) as err:
            load_params(net, weights, "seed")
        msg = str(err.value)
        print(msg)
        assert msg.startswith(where + " mixes the seed's two namings")
        assert "ResidualAttentionModel_92_32input_update" in msg
        assert "ResidualAttentionModel_32input(additional_stage=True)" in msg
        assert "attention_module1.softmax3_blocks.bn1.beta" in msg
        assert "55 names of" in msg and "attention_module1.conv1_1_blocks.0.beta" in msg
        assert "15 names of" in msg
        with pytest.raises(ValueError, match="mixes the seed's two namings"):
            detect_scheme(weights)
    assert _unchanged(net, before)


def test_seed_neither_naming_is_refused():
    arrays = _seed_arrays("6c48813")
    neither = {k: v for k, v in arrays.items()
               if not re.match(r"attention_module1\.(down|middle|up|conv1_1)", k)}
    net = _initialised("attention92_cifar")
    before = _values(net)
    with pytest.raises(ValueError) as err:
        load_params(net, neither, "seed")
    msg = str(err.value)
    print(msg)
    assert "<dict> has neither of the seed's namings" in msg
    for expected in ("attention_module1.{down_residual_blocks1.*", "middle_2r_blocks.0/1.*",
                     "conv1_1_blocks.*} (ResidualAttentionModel_92_32input_update",
                     "attention_module1.{softmax1_blocks.*", "softmax4_blocks.*} "
                     "(ResidualAttentionModel_32input"):
        assert expected in msg
    assert _unchanged(net, before)
    # Other libraries' names are pointed to their source.
    gluoncv = foreign_names(get_model("attention92_cifar"), "gluoncv").values()
    with pytest.raises(ValueError, match="look like GluonCV's: use source='gluoncv'"):
        detect_scheme({k: np.zeros(1) for k in gluoncv})
    prefix = {"residualattentionmodel_92_32input_update0_conv0_weight": np.zeros(1)}
    with pytest.raises(ValueError, match="prefix names .*save_parameters"):
        load_params(net, prefix, "seed")


def test_seed_truncated_file_is_refused(tmp_path):
    path = _seed_file("8574060", tmp_path)
    with open(path, "rb") as f:
        data = f.read()
    net = _initialised("attention92_cifar")
    before = _values(net)
    for size in (0, 100, len(data) // 2, len(data) - 1):
        with open(path, "wb") as f:
            f.write(data[:size])
        with pytest.raises(ValueError, match="cannot read " + re.escape(path)):
            load_params(net, path, "seed")
    assert _unchanged(net, before)


# --------------------------------------------------------------------------- the PyTorch reference

_TORCH = {}


def _torch_reference():
    """The reference with random weights and BatchNorm statistics, an input, its output."""
    torch = pytest.importorskip("torch")
    if not _TORCH:
        from refimpl import pytorch_ref
        model = pytorch_ref.randomize(pytorch_ref.ResidualAttentionModel_92_32input_update(), 3)
        x = np.random.RandomState(4).uniform(0, 1, (2, 3, 32, 32)).astype(np.float32)
        with torch.no_grad():
            y = model(torch.from_numpy(x)).numpy()
        assert np.ptp(y) > 0
        _TORCH.update(model=model, x=x, y=y, state=model.state_dict())
    return _TORCH


def _era_state(version, prefix=""):
    """The state_dict as torch ``version`` had it: num_batches_tracked from 0.4.1 on."""
    state = _torch_reference()["state"]
    return {prefix + k: v for k, v in state.items()
            if version == "0.4.1" or not k.endswith(".num_batches_tracked")}


LEGACY_CASES = [  # torch version, Python 2, CUDA storages, key prefix
    ("0.3", True, True, ""),
    ("0.4.0", True, True, ""),
    ("0.4.1", True, True, ""),
    ("0.4.1", False, False, "module."),  # Python 3, a DataParallel state_dict on the CPU
]


@pytest.mark.parametrize("version,py2,cuda,prefix", LEGACY_CASES)
def test_pytorch_legacy_file_parity(version, py2, cuda, prefix, tmp_path):
    torch = pytest.importorskip("torch")
    ref = _torch_reference()
    state = _era_state(version, prefix)
    path = str(tmp_path / "model_92_sgd.pkl")
    legacy_torch.write_legacy_torch(state, path, cuda=cuda, py2=py2, torch_version=version,
                                    metadata=ref["state"]._metadata)
    with open(path, "rb") as f:
        head = f.read(64)
    assert head.startswith(b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.")
    assert not head.startswith(b"PK")  # not the zip format of torch >= 1.6
    # What resattn does: torch.load with weights_only=True, on a machine without CUDA.
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    assert list(loaded) == list(state)
    assert all(torch.equal(loaded[k], state[k]) for k in state)
    net = get_model("attention92_cifar")
    assert load_params(net, path, "pytorch") is net
    _check_parity(net, mx.nd.array(ref["x"]), ref["y"],
                  "pytorch %s (%s, %s) -> attention92_cifar"
                  % (version, "Python 2" if py2 else "Python 3", "cuda:0" if cuda else "cpu"))


def test_pytorch_python2_byte_string_keys():
    """A dict loaded with encoding='bytes' (Python 2 str as bytes) loads as well."""
    ref = _torch_reference()
    state = {k.encode("ascii"): v for k, v in _era_state("0.3").items()}
    net = load_params(get_model("attention92_cifar"), state, "pytorch")
    assert rel_diff(ref["y"], net(mx.nd.array(ref["x"]))) <= TOL


def _python2():
    """A Python 2.7 interpreter with cPickle, or None."""
    candidates = [os.environ.get("RESATTN_PYTHON2"), shutil.which("python2.7"),
                  shutil.which("python2")]
    candidates += sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/2.7*/bin/python")))
    for exe in filter(None, candidates):
        try:
            done = subprocess.run([exe, "-c", "import cPickle, sys; print(sys.version_info[0])"],
                                  capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            continue
        if done.returncode == 0 and done.stdout.strip() == "2":
            return exe
    return None


def _synthetic_state(layers, num_batches_tracked):
    """1001+ entries (cPickle's batches of 1000), > 255 memo entries, several dtypes."""
    rng = np.random.RandomState(0)
    state, metadata = {}, {"": {"version": 1}}
    for i in range(layers):
        state["layer%d.conv.weight" % i] = rng.randn(2, 3, 1, 1).astype(np.float32)
        state["layer%d.bn.running_var" % i] = rng.rand(3).astype(np.float32)
        if num_batches_tracked:
            state["layer%d.bn.num_batches_tracked" % i] = np.array(i, dtype=np.int64)
        metadata["layer%d" % i] = {"version": 1}
        metadata["layer%d.bn" % i] = {"version": 2}
    state["fc.weight"] = rng.randn(10, 4).astype(np.float64)
    return state, metadata


def test_legacy_writer_is_python2_cpickle_byte_for_byte(tmp_path):
    """tests/refimpl/legacy_torch.py writes what Python 2's cPickle writes."""
    exe = _python2()
    if exe is None:
        pytest.skip("no Python 2.7 interpreter (set RESATTN_PYTHON2)")
    reference = {k: v for k, v in _torch_reference()["state"].items()
                 if not k.endswith("num_batches_tracked")}
    cases = [(reference, None, "0.3", True),
             (_torch_reference()["state"], _torch_reference()["state"]._metadata, "0.4.1", True)]
    cases += [_synthetic_state(500, True) + ("0.4.1", True),
              _synthetic_state(500, False) + ("0.4.0", False),
              ({"fc.bias": np.zeros(1, np.float32)}, None, "0.3", True)]
    for i, (state, metadata, version, cuda) in enumerate(cases):
        keys = legacy_torch.fake_storage_keys(len(state), seed=i)
        manifest = legacy_torch.py2_manifest(state, tmp_path / "data.bin", cuda=cuda,
                                             torch_version=version, metadata=metadata,
                                             keys=keys)
        with open(tmp_path / "manifest.json", "w") as f:
            json.dump(manifest, f)
        out = tmp_path / "py2.pkl"
        subprocess.run([exe, os.path.join(HERE, "refimpl", "py2_torch_save.py"),
                        str(tmp_path / "manifest.json"), str(out)], check=True, timeout=120)
        theirs = out.read_bytes()
        ours = legacy_torch.legacy_bytes(state, cuda=cuda, py2=True, torch_version=version,
                                         metadata=metadata, keys=keys)
        if ours != theirs:
            first = next((j for j, (a, b) in enumerate(zip(ours, theirs)) if a != b),
                         min(len(ours), len(theirs)))
            pytest.fail("case %d (%s): first difference at byte %d: ours %r, cPickle %r"
                        % (i, version, first, ours[first - 20:first + 20],
                           theirs[first - 20:first + 20]))


def test_pytorch_whole_pickled_model_is_refused_with_the_way_out(tmp_path):
    torch = pytest.importorskip("torch")
    from refimpl import pytorch_ref
    marker = tmp_path / "ran"
    model = pytorch_ref.ResidualBlock(8, 16)
    net = _initialised("attention92_cifar")
    before = _values(net)
    for zip_format in (False, True):
        path = str(tmp_path / ("whole_%s.pkl" % zip_format))
        torch.save(model, path, _use_new_zipfile_serialization=zip_format)
        with pytest.raises(ValueError) as err:
            load_params(net, path, "pytorch")
        msg = str(err.value)
        print(msg)
        for fragment in ("cannot read " + path, "whole pickled model (torch.save(model))",
                         "refimpl.pytorch_ref.ResidualBlock", "torch.nn.modules.conv.Conv2d",
                         "weights_only=True refuses", "weights_only=False",
                         ".state_dict(), 'state_dict.pkl')"):
            assert fragment in msg
    assert _unchanged(net, before) and not marker.exists()


def test_pytorch_truncated_legacy_file_is_refused(tmp_path):
    pytest.importorskip("torch")
    state = _era_state("0.3")
    data = legacy_torch.legacy_bytes(state)
    header = len(legacy_torch._py2_header())
    path = str(tmp_path / "model_92_sgd.pkl")
    net = _initialised("attention92_cifar")
    before = _values(net)
    # In the magic number, sys_info, the object, the storage keys, and the data.
    for size in (5, header - 3, header + 5000, len(data) - 4 * 10 ** 6, len(data) - 1):
        with open(path, "wb") as f:
            f.write(data[:size])
        with pytest.raises(ValueError, match="cannot read " + re.escape(path)) as err:
            load_params(net, path, "pytorch")
        print(size, str(err.value)[len(path) + 12:][:150])
    assert _unchanged(net, before)


def test_pytorch_python2_strings_that_are_not_utf8(tmp_path):
    """A Python 2 byte string that is not UTF-8 is read as latin-1, not refused."""
    pytest.importorskip("torch")
    path = str(tmp_path / "latin1.pkl")
    state = {"fc.weight\xe9": np.zeros((10, 1024), np.float32)}
    legacy_torch.write_legacy_torch(state, path)
    with pytest.raises(ValueError, match="1 unexpected: fc.weight\xe9"):
        load_params(get_model("attention92_cifar"), path, "pytorch")
