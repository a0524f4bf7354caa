"""Weight conversion: parity with GluonCV, a PyTorch and a Gluon re-implementation, errors."""
import re

import mxnet as mx
import numpy as np
import pytest

from conftest import randomize_batchnorm, rel_diff
from resattn import get_model
from resattn._compat import import_gluoncv
from resattn.models.convert import SOURCES, convert_file, foreign_names, load_params

TOL = 1e-4
SMALL = 1 / 8  # width multiplier for the tests that need no foreign model


def _check_parity(net, x, expected, label):
    """``net(x)`` equals ``expected`` imperatively and hybridized; returns both differences."""
    diffs = [rel_diff(expected, net(x))]
    net.hybridize()
    diffs.append(rel_diff(expected, net(x)))
    print("%s: max relative difference imperative %.2e, hybridized %.2e" % (label, *diffs))
    assert max(diffs) < TOL, diffs
    return diffs


# --------------------------------------------------------------------------- GluonCV

GLUONCV_CASES = {  # GluonCV model: (resattn model, input size, batch, classes)
    "cifar_residualattentionnet56": ("attention56_cifar", 32, 2, 10),
    "cifar_residualattentionnet92": ("attention92_cifar", 32, 2, 10),
    # GluonCV's ImageNet modules upsample to fixed sizes: 224 only.
    "residualattentionnet56": ("attention56", 224, 1, 1000),
}
_GLUONCV = {}


def _gluoncv_model(name):
    """A GluonCV model with random weights and BatchNorm statistics, its input and output."""
    if name not in _GLUONCV:
        _, size, batch, classes = GLUONCV_CASES[name]
        mx.random.seed(1)
        net = import_gluoncv().model_zoo.get_model(name, classes=classes)
        net.initialize(mx.init.Xavier())
        x = mx.nd.random.uniform(-1, 1, shape=(batch, 3, size, size))
        net(x)
        randomize_batchnorm(net, np.random.RandomState(2))
        y = net(x)  # inference mode: outside autograd.record
        assert np.ptp(y.asnumpy()) > 0
        _GLUONCV[name] = (net, x, y)
    return _GLUONCV[name]


@pytest.mark.parametrize("name", list(GLUONCV_CASES))
def test_gluoncv_parity(name, tmp_path):
    gluoncv_net, x, expected = _gluoncv_model(name)
    path = str(tmp_path / (name + ".params"))
    gluoncv_net.save_parameters(path)
    net = get_model(GLUONCV_CASES[name][0], variant="gluoncv",
                    classes=GLUONCV_CASES[name][3])
    assert load_params(net, path, "gluoncv") is net
    _check_parity(net, x, expected, "gluoncv %s" % name)


def test_gluoncv_mapping_is_sensitive():
    """Swapping two same-shaped mask units in the file changes the output."""
    gluoncv_net, x, expected = _gluoncv_model("cifar_residualattentionnet56")
    arrays = {k: p.data() for k, p in gluoncv_net._collect_params_with_prefix().items()}
    pairs = [("attention_module1.0.softmax1_blocks.0.", "attention_module1.0.softmax3_blocks.0."),
             ("attention_module1.0.softmax1_blocks.0.",
              "attention_module1.0.skip1_connection_residual_block.")]
    for a, b in pairs:
        swapped = dict(arrays)
        for key in arrays:
            if key.startswith(a):
                swapped[key], swapped[b + key[len(a):]] = arrays[b + key[len(a):]], arrays[key]
        net = get_model("attention56_cifar", variant="gluoncv")
        load_params(net, swapped, "gluoncv")
        diff = rel_diff(expected, net(x))
        print("gluoncv swapped %s and %s: relative difference %.2e" % (a, b, diff))
        assert diff > 10 * TOL, (a, b)


def test_networks_without_gluoncv_counterpart_are_refused():
    with pytest.raises(ValueError, match="p=2 have no GluonCV counterpart"):
        foreign_names(get_model("attention452_cifar", width_mult=SMALL), "gluoncv")
    with pytest.raises(ValueError, match="ResNeXtUnit"):
        foreign_names(get_model("attentionnext56", width_mult=SMALL), "gluoncv")


# --------------------------------------------------------------------------- seed (Gluon)

def _gluoncv_to_seed(name):
    """GluonCV's CIFAR Attention-92 names -> the Gluon implementation's (commit 6c48813).

    Its AttentionModule_stage1/2/3_cifar are GluonCV's stage2/3/4 modules with
    single units stored without a Sequential and other names in stage 1.
    """
    match = re.match(r"attention_module(\d)\.(\d+)\.(.*)", name)
    if not match:  # conv1, residual_block*, mpool2, fc
        return name
    stage, k, rest = int(match.group(1)), int(match.group(2)), match.group(3)
    module = "attention_module%d%s" % (stage, "" if k == 0 else "_%d" % (k + 1))
    renames = [("first_residual_blocks.0.", "first_residual_blocks.")]
    if stage == 1:
        renames += [("softmax1_blocks.0.", "down_residual_blocks1."),
                    ("softmax2_blocks.", "middle_2r_blocks."),
                    ("softmax3_blocks.0.", "up_residual_blocks1."),
                    ("softmax4_blocks.", "conv1_1_blocks.")]
    for old, new in renames:
        if rest.startswith(old):
            rest = new + rest[len(old):]
    return "%s.%s" % (module, rest)


def test_seed_parity(tmp_path):
    gluoncv_net, x, expected = _gluoncv_model("cifar_residualattentionnet92")
    arrays = {_gluoncv_to_seed(k): p.data()
              for k, p in gluoncv_net._collect_params_with_prefix().items()}
    assert "attention_module2_2.softmax1_blocks.0.bn1.gamma" in arrays
    assert "attention_module1.up_residual_blocks1.conv3.weight" in arrays
    path = str(tmp_path / "seed.params")
    mx.nd.save(path, arrays)
    net = get_model("attention92_cifar")
    load_params(net, path, "seed")
    _check_parity(net, x, expected, "seed attention92_cifar")


# --------------------------------------------------------------------------- PyTorch

def _torch_reference(variant):
    """ResidualAttentionModel_92_32input_update with the reference's attribute names.

    ``variant='gluoncv'`` is the reference's own wiring; ``'official'`` adds no
    down-path feature at the up level and no trunk before the mask head.
    """
    torch = pytest.importorskip("torch")
    tnn, F = torch.nn, torch.nn.functional

    class ResidualBlock(tnn.Module):
        def __init__(self, cin, cout, stride=1):
            super().__init__()
            self.project = cin != cout or stride != 1
            self.bn1 = tnn.BatchNorm2d(cin)
            self.conv1 = tnn.Conv2d(cin, cout // 4, 1, bias=False)
            self.bn2 = tnn.BatchNorm2d(cout // 4)
            self.conv2 = tnn.Conv2d(cout // 4, cout // 4, 3, stride, 1, bias=False)
            self.bn3 = tnn.BatchNorm2d(cout // 4)
            self.conv3 = tnn.Conv2d(cout // 4, cout, 1, bias=False)
            self.conv4 = tnn.Conv2d(cin, cout, 1, stride, bias=False)  # built even if unused

        def forward(self, x):
            pre = F.relu(self.bn1(x))
            out = self.conv1(pre)
            out = self.conv2(F.relu(self.bn2(out)))
            out = self.conv3(F.relu(self.bn3(out)))
            return out + (self.conv4(pre) if self.project else x)

    def head(c):
        return tnn.Sequential(tnn.BatchNorm2d(c), tnn.ReLU(), tnn.Conv2d(c, c, 1, bias=False),
                              tnn.BatchNorm2d(c), tnn.ReLU(), tnn.Conv2d(c, c, 1, bias=False),
                              tnn.Sigmoid())

    def up(x, like):
        return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=True)

    class Module(tnn.Module):  # AttentionModule_stage{1,2,3}_cifar: 2, 1, 0 poolings
        def __init__(self, c, pools):
            super().__init__()
            self.pools = pools
            self.first_residual_blocks = ResidualBlock(c, c)
            self.trunk_branches = tnn.Sequential(ResidualBlock(c, c), ResidualBlock(c, c))
            if pools == 2:
                self.down_residual_blocks1 = ResidualBlock(c, c)
                self.skip1_connection_residual_block = ResidualBlock(c, c)
                self.up_residual_blocks1 = ResidualBlock(c, c)
            self.middle_2r_blocks = tnn.Sequential(ResidualBlock(c, c), ResidualBlock(c, c))
            self.conv1_1_blocks = head(c)
            self.last_blocks = ResidualBlock(c, c)

        def forward(self, x):
            # The official wiring pools as the prototxts do: pad 0, Caffe's ceil rule.
            pool = (lambda t: F.max_pool2d(t, 3, 2, 1)) if variant == "gluoncv" else \
                (lambda t: F.max_pool2d(t, 3, 2, 0, ceil_mode=True))
            add = variant == "gluoncv"
            x = self.first_residual_blocks(x)
            trunk = self.trunk_branches(x)
            if self.pools == 2:
                down = self.down_residual_blocks1(pool(x))
                out = up(self.middle_2r_blocks(pool(down)), down)
                out = out + self.skip1_connection_residual_block(down) + (down if add else 0)
                out = up(self.up_residual_blocks1(out), trunk) + (trunk if add else 0)
            elif self.pools == 1:
                out = up(self.middle_2r_blocks(pool(x)), trunk) + (trunk if add else 0)
            else:
                out = self.middle_2r_blocks(x)
            return self.last_blocks((1 + self.conv1_1_blocks(out)) * trunk)

    class Net(tnn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = tnn.Sequential(tnn.Conv2d(3, 32, 3, 1, 1, bias=False),
                                        tnn.BatchNorm2d(32), tnn.ReLU())
            self.residual_block1 = ResidualBlock(32, 128)
            self.attention_module1 = Module(128, 2)
            self.residual_block2 = ResidualBlock(128, 256, 2)
            self.attention_module2 = Module(256, 1)
            self.attention_module2_2 = Module(256, 1)
            self.residual_block3 = ResidualBlock(256, 512, 2)
            self.attention_module3 = Module(512, 0)
            self.attention_module3_2 = Module(512, 0)
            self.attention_module3_3 = Module(512, 0)
            self.residual_block4 = ResidualBlock(512, 1024)
            self.residual_block5 = ResidualBlock(1024, 1024)
            self.residual_block6 = ResidualBlock(1024, 1024)
            self.mpool2 = tnn.Sequential(tnn.BatchNorm2d(1024), tnn.ReLU(), tnn.AvgPool2d(8))
            self.fc = tnn.Linear(1024, 10)

        def forward(self, x):
            for name in ("conv1", "residual_block1", "attention_module1", "residual_block2",
                         "attention_module2", "attention_module2_2", "residual_block3",
                         "attention_module3", "attention_module3_2", "attention_module3_3",
                         "residual_block4", "residual_block5", "residual_block6", "mpool2"):
                x = getattr(self, name)(x)
            return self.fc(x.flatten(1))

    torch.manual_seed(3)
    net = Net()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, tnn.BatchNorm2d):
                m.weight.uniform_(0.8, 1.2)
                m.bias.normal_(0, 0.1)
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.num_batches_tracked.fill_(7)
    return net.eval()


@pytest.mark.parametrize("variant", ["gluoncv", "official"])
def test_pytorch_parity(variant, tmp_path):
    torch = pytest.importorskip("torch")
    ref = _torch_reference(variant)
    state = ref.state_dict()
    assert "attention_module1.trunk_branches.0.conv4.weight" in state  # never used
    assert "conv1.1.num_batches_tracked" in state
    x = np.random.RandomState(4).uniform(0, 1, (2, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        expected = ref(torch.from_numpy(x)).numpy()
    assert np.ptp(expected) > 0
    path = str(tmp_path / "model_92_sgd.pkl")
    torch.save(state, path)
    net = get_model("attention92_cifar", variant=variant)
    load_params(net, path, "pytorch")
    _check_parity(net, mx.nd.array(x), expected, "pytorch attention92_cifar %s" % variant)
    other = get_model("attention92_cifar",
                      variant="official" if variant == "gluoncv" else "gluoncv")
    load_params(other, path, "pytorch")
    assert rel_diff(expected, other(mx.nd.array(x))) > 10 * TOL  # the wiring matters
    if variant == "gluoncv":  # the converted file loads as a resattn model
        out = convert_file("attention92_cifar", path, "pytorch", str(tmp_path / "a92.params"))
        again = get_model("attention92_cifar", pretrained=out)
        assert rel_diff(expected, again(mx.nd.array(x))) < TOL
        again = load_params(get_model("attention92_cifar"), out, "resattn")
        assert rel_diff(expected, again(mx.nd.array(x))) < TOL


@pytest.mark.parametrize("zipfile", [True, False], ids=["zip", "legacy"])
def test_pytorch_refuses_pickled_code(tmp_path, zipfile):
    torch = pytest.importorskip("torch")
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))  # unpickling would create `marker`

    path = str(tmp_path / "evil.pkl")
    torch.save({"conv1.0.weight": torch.zeros(32, 3, 3, 3), "payload": Payload()}, path,
               _use_new_zipfile_serialization=zipfile)
    net = get_model("attention92_cifar", width_mult=SMALL)
    with pytest.raises(ValueError, match="weights_only=True refuses") as err:
        load_params(net, path, "pytorch")
    assert path in str(err.value) and "open" in str(err.value)
    assert "whole pickled model" not in str(err.value)
    assert not marker.exists()
    # Control: an unrestricted load does run the payload.
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_pytorch_without_torch_names_the_extra(tmp_path, monkeypatch):
    path = tmp_path / "model.pkl"
    path.write_bytes(b"")
    monkeypatch.setitem(__import__("sys").modules, "torch", None)
    with pytest.raises(ImportError, match=r"resattn\[torch\]"):
        load_params(get_model("attention56_cifar", width_mult=SMALL), str(path), "pytorch")


# --------------------------------------------------------------------------- errors

def _small_net():
    net = get_model("attention56_cifar", width_mult=SMALL)
    net.initialize(mx.init.Xavier())
    net(mx.nd.zeros((1, 3, 16, 16)))
    randomize_batchnorm(net)
    return net


def _values(net):
    return {k: p.data().asnumpy().copy() for k, p in net._collect_params_with_prefix().items()}


def _foreign_dict(net, source="pytorch"):
    """``net``'s parameters under ``source``'s names, as NumPy arrays plus + 1."""
    params = net._collect_params_with_prefix()
    return {f: params[k].data().asnumpy() + 1 for k, f in foreign_names(net, source).items()}


def test_dict_load_roundtrip_and_dataparallel_prefix():
    src, dst = _small_net(), _small_net()
    arrays = _foreign_dict(src)
    arrays["conv1.1.num_batches_tracked"] = np.array(5)
    load_params(dst, {"module." + k: v for k, v in arrays.items()}, "pytorch")
    got = _values(dst)
    for key, foreign in foreign_names(src, "pytorch").items():
        np.testing.assert_array_equal(got[key], arrays[foreign])


def test_bad_dict_names_every_problem_and_changes_nothing():
    net = _small_net()
    before = _values(net)
    arrays = _foreign_dict(net)
    del arrays["attention_module2.trunk_branches.1.conv2.weight"]
    arrays["attention_module2.extra.weight"] = np.zeros(3)
    arrays["fc.weight"] = np.zeros((10, 7))
    with pytest.raises(ValueError) as err:
        load_params(net, arrays, "pytorch")
    msg = str(err.value)
    for fragment in ("1 missing: attention_module2.trunk_branches.1.conv2.weight "
                     "(features.2.1.trunk.1.conv2.weight)",
                     "1 unexpected: attention_module2.extra.weight",
                     "1 wrong shape: fc.weight (output.weight): expected (10, 128), got (10, 7)",
                     "<dict>"):
        assert fragment in msg
    after = _values(net)
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_bad_file_is_named_and_changes_nothing(tmp_path):
    net = _small_net()
    before = _values(net)
    arrays = _foreign_dict(net, "gluoncv")
    arrays["fc.weight"] = arrays["fc.weight"][:, :, None, None]  # GluonCV's 1x1 conv
    arrays["attention_module1.0.softmax1_blocks.0.bn1.gamma"] = np.ones(5)
    path = str(tmp_path / "bad.params")
    mx.nd.save(path, {k: mx.nd.array(v) for k, v in arrays.items()})
    with pytest.raises(ValueError, match=re.escape(path)) as err:
        load_params(net, path, "gluoncv")
    assert "softmax1_blocks.0.bn1.gamma (features.1.1.mask_down.0.0.bn1.gamma): " \
           "expected (16,), got (5,)" in str(err.value)
    after = _values(net)
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_wrong_source_and_unreadable_files(tmp_path):
    net = _small_net()
    with pytest.raises(ValueError, match="are these gluoncv weights"):
        load_params(net, _foreign_dict(net, "pytorch"), "gluoncv")
    with pytest.raises(ValueError, match="no such file"):
        load_params(net, str(tmp_path / "absent.params"), "seed")
    garbage = tmp_path / "garbage.params"
    garbage.write_bytes(b"not a parameter file")
    empty = tmp_path / "empty.pkl"
    empty.write_bytes(b"")
    params = str(tmp_path / "net.params")
    net.save_parameters(params)
    for path, source in ((garbage, "gluoncv"), (garbage, "pytorch"), (empty, "pytorch"),
                         (params, "pytorch")):
        with pytest.raises(ValueError, match="cannot read " + re.escape(str(path))):
            load_params(net, str(path), source)
    with pytest.raises(ValueError, match="not arrays: epoch"):
        load_params(net, {"epoch": 3, "conv1.0.weight": np.zeros(3)}, "pytorch")


@pytest.mark.parametrize("call", [
    lambda net: load_params(net, {}, "caffe"),
    lambda net: foreign_names(net, "caffe"),
    lambda net: convert_file("attention56_cifar", {}, "caffe", "unused.params"),
])
def test_unknown_source_lists_the_valid_ones(call):
    with pytest.raises(ValueError, match="'caffe'") as err:
        call(get_model("attention56_cifar", width_mult=SMALL))
    assert all(repr(s) in str(err.value) for s in SOURCES)


def test_reference_names_need_the_cifar_structure():
    with pytest.raises(ValueError, match="at most 2 poolings"):
        foreign_names(get_model("attention56", width_mult=SMALL), "seed")
    names = foreign_names(get_model("attention92_cifar", width_mult=SMALL), "pytorch")
    assert names["features.1.1.mask_up.0.0.bn1.gamma"] == \
        "attention_module1.up_residual_blocks1.bn1.weight"
    assert names["features.3.3.mask_down.0.1.conv2.weight"] == \
        "attention_module3_3.middle_2r_blocks.1.conv2.weight"
    assert names["features.1.0.proj.weight"] == "residual_block1.conv4.weight"
    assert names["output.weight"] == "fc.weight"
