"""Published weights: the registry, download into the cache, conversion once, configs that
travel with every .params, and the commands that apply them (eval, predict, masks, export).

Downloads come from the loopback server of conftest.py (``$RESATTN_MIRROR`` points the
entries at it); nothing here reaches the internet. The files served are made in the
published formats from random weights.
"""
import json
import os
import re

import mxnet as mx
import numpy as np
import pytest

from conftest import rel_diff, run_python
from loopback import git_blob
from resattn import get_model, hub
from resattn.cli import main
from resattn.io import config_path, read_weights_config, save_weights
from resattn.models import weights as W
from resattn.models.convert import foreign_names
from resattn.models import fetch_weights

SMALL = 0.0625  # width_mult of the served test files


def _run(argv):
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


# ------------------------------------------------------------------------ the registry
def test_the_nine_published_files():
    entries = W.list_weights()
    assert [w.tag for w in entries] == [
        "seed-95.41", "seed-95.65", "seed-95.68", "seed-96.57", "seed-96.65", "seed-96.98",
        "seed-97.00", "seed-97.14", "pytorch-95.4"]
    assert W.default_weights("attention92_cifar").tag == "seed-97.14"
    for w in entries:
        assert re.fullmatch(r"https://raw\.githubusercontent\.com/[\w.-]+/[\w.-]+/[0-9a-f]{40}/"
                            r"[\w./-]+", w.url), w.url
        assert re.fullmatch(r"[0-9a-f]{40}", w.blob)
        assert w.model == "attention92_cifar" and w.arch == {"variant": "gluoncv",
                                                             "classes": 10}
        assert w.class_names == W.CIFAR10_CLASSES and w.input_size == 32 and w.scale == 255
        if w.source == "seed":  # the file name carries the accuracy the authors claim
            assert "_0.%d0." % round(w.accuracy * 100) in w.path, (w.tag, w.path)
            assert (w.mean, w.std) == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
        else:
            assert (w.mean, w.std) == ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    assert len({w.blob for w in entries}) == len({w.commit for w in entries}) == 9


def test_readme_names_the_real_seed_file():
    with open(os.path.join(os.path.dirname(__file__), "..", "README.md")) as f:
        readme = f.read()
    assert "test_iter225999" not in readme
    for w in W.list_weights():
        assert w.tag in readme


def test_unknown_tags_and_wrong_models_are_refused():
    with pytest.raises(ValueError, match="did you mean seed-97.14"):
        get_model("attention92_cifar", pretrained="seed-97.1")
    with pytest.raises(ValueError, match="are for attention92_cifar, not attention56_cifar"):
        get_model("attention56_cifar", pretrained="seed-97.14")
    with pytest.raises(ValueError, match="no published weights for 'attention56'"):
        get_model("attention56", pretrained=True)
    with pytest.raises(ValueError, match=r"variant='official' \(the weights need 'gluoncv'\) "
                                         r"contradicts weights 'seed-97.14'"):
        get_model("attention92_cifar", pretrained="seed-97.14", variant="official")


def again_cfg(path):
    return get_model("attention92_cifar", pretrained=str(path)).pretrained_cfg


def test_a_mirror_serves_the_same_paths(monkeypatch):
    entry = W.get_weights("seed-97.14")
    monkeypatch.setenv("RESATTN_MIRROR", "http://mirror.example/raw/")
    assert entry.url == "http://mirror.example/raw/%s/%s/%s" % (entry.repo, entry.commit,
                                                               entry.path)


# ------------------------------------------------------------ served files, real formats
@pytest.fixture(scope="module")
def seed_file(tmp_path_factory):
    """A seed-named Gluon file (the 8574060 naming scheme's network is the same) of random
    weights with non-trivial BN statistics, and the logits of a fixed input."""
    from conftest import randomize_batchnorm
    net = get_model("attention92_cifar", width_mult=SMALL)
    net.initialize(mx.init.Xavier())
    x = np.random.RandomState(0).uniform(-1, 1, (2, 3, 32, 32)).astype(np.float32)
    net(mx.nd.array(x))
    randomize_batchnorm(net)
    names = foreign_names(net, "seed", scheme="8574060")
    params = {k: p.data() for k, p in net._collect_params_with_prefix().items()}
    path = str(tmp_path_factory.mktemp("seed") / "test_epoch1_0.90000.param")
    arrays = {names[k]: v for k, v in params.items()}
    arrays["fc.weight"] = arrays["fc.weight"].reshape((10, -1, 1, 1))  # the seed's 1x1 conv
    mx.nd.save(path, arrays)
    with open(path, "rb") as f:
        data = f.read()
    return data, x, net(mx.nd.array(x)).asnumpy()


@pytest.fixture
def entry(server, seed_file, monkeypatch, tmp_path):
    """A test entry whose file the loopback server serves; removed afterwards."""
    data, _, _ = seed_file
    commit = "0" * 40
    tag = "test-seed-90.00"
    w = W.Weights(tag=tag, model="attention92_cifar",
                  arch={"variant": "gluoncv", "classes": 10, "width_mult": SMALL},
                  source="seed", input_size=32, scale=255.0, mean=(0.485, 0.456, 0.406),
                  std=(0.229, 0.224, 0.225), class_names=W.CIFAR10_CLASSES,
                  repo="tests/served", commit=commit, path="cifar_param/test_epoch1.param",
                  blob=git_blob(data), accuracy=90.0, measured="by nobody", note="a test")
    W.register_weights(w)
    server.files["/tests/served/%s/cifar_param/test_epoch1.param" % commit] = data
    monkeypatch.setenv("RESATTN_MIRROR", server.base)
    monkeypatch.setenv("RESATTN_HOME", str(tmp_path / "home"))
    yield w
    del W._REGISTRY[tag]


def test_pretrained_tag_downloads_converts_once_and_reuses_offline(entry, server, seed_file,
                                                                   tmp_path):
    _, x, expected = seed_file
    net = get_model("attention92_cifar", pretrained=entry.tag)
    assert rel_diff(net(mx.nd.array(x)), expected) < 1e-5
    assert len(server.requests) == 1
    folder = tmp_path / "home" / "weights"
    converted = folder / ("%s-%s.resattn.params" % (entry.tag, entry.blob[:8]))
    assert sorted(os.listdir(folder)) == sorted([
        entry.filename, entry.filename + ".blob", entry.filename + ".lock",
        converted.name, converted.name + ".json"])
    config = read_weights_config(str(converted))
    assert config["model"] == "attention92_cifar" and config["arch"] == entry.arch
    assert config["preprocessing"] == entry.pretrained_cfg.preprocessing()
    assert again_cfg(converted) == entry.pretrained_cfg.replace(file=str(converted))
    assert config["provenance"]["blob"] == entry.blob
    assert config["provenance"]["url"] == entry.url
    # The raw file gone, the server down: the converted file is enough.
    os.remove(folder / entry.filename)
    server.stop()
    again = get_model("attention92_cifar", pretrained=entry.tag)
    assert rel_diff(again(mx.nd.array(x)), expected) < 1e-5
    again.hybridize()
    assert rel_diff(again(mx.nd.array(x)), expected) < 1e-5
    assert len(server.requests) == 1


def test_a_corrupted_download_is_refused_and_removed(entry, server, tmp_path):
    path = "/tests/served/%s/cifar_param/test_epoch1.param" % entry.commit
    good = server.files[path]
    server.corrupt[path] = good[:-10] + b"\0" * 10
    with pytest.raises(ValueError, match="expected %s: corrupted download" % entry.blob):
        get_model("attention92_cifar", pretrained=entry.tag)
    folder = tmp_path / "home" / "weights"
    assert not [n for n in os.listdir(folder) if not n.endswith(".lock")]
    del server.corrupt[path]
    get_model("attention92_cifar", pretrained=entry.tag)  # then it works


def test_offline_is_one_error_with_the_url_and_the_way_by_hand(entry, server, tmp_path):
    server.stop()
    with pytest.raises(hub.DownloadError) as err:
        fetch_weights(entry.tag)
    text = str(err.value)
    assert entry.url in text and "save it as" in text and entry.blob in text
    assert str(tmp_path / "home" / "weights" / entry.filename) in text
    code = _run(["eval", "--pretrained", entry.tag, "--dataset", "digits"])
    assert code == 2  # one line, no traceback (exit_status), never random weights


def test_interrupted_download_leaves_nothing_that_passes(entry, server, tmp_path,
                                                         monkeypatch):
    import functools
    path = "/tests/served/%s/cifar_param/test_epoch1.param" % entry.commit
    server.cut[path] = [1000, 1]  # the connection drops after 1000 bytes, no retries
    monkeypatch.setattr(hub, "download", functools.partial(hub.download, retries=0))
    with pytest.raises(hub.DownloadError):
        fetch_weights(entry.tag)
    folder = tmp_path / "home" / "weights"
    assert entry.filename not in os.listdir(folder)
    assert not any(n.endswith(".resattn.params") for n in os.listdir(folder))
    assert os.path.getsize(folder / (entry.filename + ".part")) == 1000
    assert os.path.isfile(fetch_weights(entry.tag))  # resumes from the .part
    assert server.ranges() == [None, "bytes=1000-"]


# ------------------------------------------------------- configs travel with .params
def test_convert_writes_the_config_and_eval_applies_it(seed_file, tmp_path, capsys):
    data, _, _ = seed_file
    src = tmp_path / "seed.param"
    src.write_bytes(data)
    out = str(tmp_path / "a92.params")
    assert _run(["convert", "--model", "attention92_cifar", "--source", "seed", str(src),
                 "-o", out, "--classes", "10"]) == 2  # width_mult is not a convert flag...
    capsys.readouterr()
    # ... so convert the full-width way: build, load, save with the config.
    from resattn.models import convert_file
    convert_file("attention92_cifar", str(src), "seed", out, width_mult=SMALL)
    cfg = read_weights_config(out)
    assert cfg["preprocessing"]["mean"] == [0.485, 0.456, 0.406]  # the seed's, not CIFAR's
    assert _run(["eval", "--params", out, "--dataset", "digits", "--subset", "20"]) == 0
    text = capsys.readouterr().out
    assert "preprocessing from the weights' config: 32x32, mean (0.485, 0.456, 0.406), " \
           "std (0.229, 0.224, 0.225)" in text
    # A flag that contradicts the config is refused, or overrides it when asked.
    assert _run(["eval", "--params", out, "--dataset", "digits", "--variant",
                 "official"]) == 2
    assert "variant='official' (the weights need 'gluoncv') contradicts the weights' config" \
        in capsys.readouterr().err
    assert _run(["eval", "--params", out, "--dataset", "digits", "--subset", "20",
                 "--variant", "official", "--override-config"]) == 0


def test_eval_normalises_with_the_weights_not_the_dataset():
    from resattn.data import get_dataset
    raw = get_dataset("digits", train=False, augment=False, normalize=((0, 0, 0), (1, 1, 1)))
    own = get_dataset("digits", train=False, augment=False)
    x, y = raw[3]
    assert 0 <= x.min().asscalar() and x.max().asscalar() <= 1  # pixels / 255, nothing else
    mean, std = own.preprocess.mean, own.preprocess.std
    np.testing.assert_allclose(((x.asnumpy().transpose(1, 2, 0) - mean) / std),
                               own[3][0].asnumpy().transpose(1, 2, 0), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="normalize must be"):
        get_dataset("digits", normalize=((0, 0), (1, 1)))
    # A pixel scale other than 255 is folded into mean and std.
    from resattn.models import PretrainedCfg
    mean, std = PretrainedCfg(scale=1.0, mean=[127.5] * 3, std=[255.0] * 3).normalization()
    assert np.allclose(mean, 0.5) and np.allclose(std, 1.0)


def test_a_changed_file_is_refused_by_its_config(seed_file, tmp_path):
    net = get_model("attention56_cifar", width_mult=SMALL)
    net.initialize()
    net(mx.nd.zeros((1, 3, 32, 32)))
    path = str(tmp_path / "w.params")
    save_weights(net, path, "attention56_cifar", arch={"width_mult": SMALL, "classes": 10})
    with open(path, "r+b") as f:  # one bit of the data region
        f.seek(os.path.getsize(path) // 2)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 1]))
    with pytest.raises(ValueError, match="does not match its config .* corrupted or was "
                                         "replaced"):
        get_model("attention56_cifar", pretrained=path, width_mult=SMALL)
    os.remove(config_path(path))  # without the config: loaded as it is
    get_model("attention56_cifar", pretrained=path, width_mult=SMALL)


def test_predict_prints_top_k_with_class_names(seed_file, tmp_path):
    cv2 = pytest.importorskip("cv2")
    net = get_model("attention92_cifar", width_mult=SMALL)
    data, _, _ = seed_file
    src = tmp_path / "seed.param"
    src.write_bytes(data)
    from resattn.models import convert_file
    from resattn.models.convert import load_params
    load_params(net, str(src), "seed")
    out = str(tmp_path / "a92.params")
    convert_file("attention92_cifar", str(src), "seed", out, width_mult=SMALL)
    images = []
    for i, color in enumerate([(0, 0, 255), (40, 200, 40)]):
        img = np.zeros((48, 40, 3), np.uint8) + np.array(color, np.uint8)
        images.append(str(tmp_path / ("img%d.png" % i)))
        cv2.imwrite(images[-1], img)
    proc = run_python("-m", "resattn", "predict", "--params", out, "-k", "3", *images)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 2
    for path, line in zip(images, lines):
        head, rest = line.split(": ", 1)
        assert head == path
        pairs = [p.rsplit(" ", 1) for p in rest.split(", ")]
        assert len(pairs) == 3 and all(name in W.CIFAR10_CLASSES for name, _ in pairs)
        probs = [float(p) for _, p in pairs]
        assert probs == sorted(probs, reverse=True) and sum(probs) <= 1.001
    # The same numbers as the network on the same preprocessing, computed here.
    x = np.stack([cv2.resize(cv2.imread(p)[:, :, ::-1], (32, 32),
                             interpolation=cv2.INTER_AREA).astype(np.float32) / 255
                  for p in images]).transpose(0, 3, 1, 2)
    x = (x - np.array([0.485, 0.456, 0.406]).reshape(1, 3, 1, 1)) / \
        np.array([0.229, 0.224, 0.225]).reshape(1, 3, 1, 1)
    probs = mx.nd.softmax(net(mx.nd.array(x))).asnumpy()
    best = W.CIFAR10_CLASSES[int(probs[0].argmax())]
    assert lines[0].split(": ", 1)[1].startswith("%s %.3f" % (best, probs[0].max()))


def test_predict_with_a_tag_through_the_cache(entry, server, tmp_path):
    cv2 = pytest.importorskip("cv2")
    img = str(tmp_path / "cat.png")
    cv2.imwrite(img, np.full((32, 32, 3), 128, np.uint8))
    env_home = os.environ["RESATTN_HOME"]
    proc = run_python("-c", "import os, sys; os.environ['RESATTN_MIRROR'] = %r; "
                      "os.environ['RESATTN_HOME'] = %r; sys.path.insert(0, %r); "
                      "import test_pretrained as t, resattn.models.weights as W; "
                      "W.register_weights(t._served_entry(%r, %r)); "
                      "from resattn.cli import main; sys.exit(main(['predict', '--pretrained', "
                      "%r, %r]))" % (server.base, env_home, os.path.dirname(__file__),
                                     entry.blob, entry.commit, entry.tag, img))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(img + ": ")
    assert len(server.requests) == 1


def _served_entry(blob, commit):
    """The test entry again, in another process."""
    return W.Weights(tag="test-seed-90.00", model="attention92_cifar",
                     arch={"variant": "gluoncv", "classes": 10, "width_mult": SMALL},
                     source="seed", input_size=32, scale=255.0, mean=(0.485, 0.456, 0.406),
                     std=(0.229, 0.224, 0.225), class_names=W.CIFAR10_CLASSES,
                     repo="tests/served", commit=commit, path="cifar_param/test_epoch1.param",
                     blob=blob, accuracy=90.0, measured="by nobody", note="a test")


def test_list_pretrained_shows_every_entry(capsys):
    assert _run(["list", "--pretrained"]) == 0
    text = capsys.readouterr().out
    for w in W.list_weights():
        assert w.tag in text and w.url in text
    assert "seed-97.14*" in text and "claimed by the authors" in text


def test_weights_config_json_is_plain(tmp_path):
    net = get_model("attention56_cifar", width_mult=SMALL)
    net.initialize()
    net(mx.nd.zeros((1, 3, 32, 32)))
    path = str(tmp_path / "w.params")
    save_weights(net, path, "attention56_cifar", arch={"width_mult": SMALL},
                 class_names=("a", "b"))
    with open(config_path(path)) as f:
        raw = json.load(f)
    assert raw["format"] == "resattn-weights" and raw["version"] == 1
    assert raw["class_names"] == ["a", "b"] and len(raw["sha1"]) == 40


def test_a_gluoncv_imagenet_file_keeps_gluoncv_wiring(tmp_path):
    """Converted into attention56 (official by default), a GluonCV file's config records
    variant='gluoncv', so loading it computes what GluonCV computes."""
    from conftest import randomize_batchnorm
    from resattn.models import convert_file
    ref = get_model("attention56", width_mult=SMALL, variant="gluoncv")
    ref.initialize(mx.init.Xavier())
    x = mx.nd.array(np.random.RandomState(1).uniform(-1, 1, (1, 3, 64, 64)))
    ref(x)
    randomize_batchnorm(ref)
    names = foreign_names(ref, "gluoncv")
    src = str(tmp_path / "residualattentionnet56.params")
    arrays = {names[k]: p.data() for k, p in ref._collect_params_with_prefix().items()}
    arrays["fc.weight"] = arrays["fc.weight"].reshape((1000, -1, 1, 1))  # GluonCV's 1x1 conv
    mx.nd.save(src, arrays)
    out = convert_file("attention56", src, "gluoncv", str(tmp_path / "a56.params"),
                       width_mult=SMALL)
    assert read_weights_config(out)["arch"]["variant"] == "gluoncv"
    net = get_model("attention56", pretrained=out)
    assert net.variant == "gluoncv"
    assert rel_diff(net(x), ref(x)) < 1e-5


def test_finetune_from_a_published_tag_applies_its_preprocessing(entry, tmp_path, capsys):
    """`resattn train --finetune TAG` fetches the tag as `--pretrained` does, takes its
    architecture, and normalises the new data as the weights expect (the seed's ImageNet
    statistics, not the digits'); its run's weights then carry that preprocessing."""
    out = tmp_path / "run"
    argv = ["train", "--model", "attention92_cifar", "--dataset", "digits", "--finetune",
            entry.tag, "--epochs", "1", "--subset", "32", "--batch-size", "16", "--out",
            str(out), "--no-progress"]
    assert _run(argv) == 0, capsys.readouterr().err
    text = capsys.readouterr().out
    assert "--finetune: preprocessing of the weights: 32 px, mean (0.485, 0.456, 0.406)" in text
    net = resattn_load(str(out / "best.params"))
    cfg = net.pretrained_cfg
    assert cfg.mean == (0.485, 0.456, 0.406) and cfg.std == (0.229, 0.224, 0.225)
    assert dict(cfg.arch)["width_mult"] == SMALL and dict(cfg.arch)["variant"] == "gluoncv"
    # --dataset-stats keeps the dataset's own; a contradicting flag is refused.
    assert _run(argv[:-2] + [str(tmp_path / "run2"), "--no-progress", "--dataset-stats"]) == 0
    cfg2 = resattn_load(str(tmp_path / "run2" / "best.params")).pretrained_cfg
    from resattn.data import dataset_info
    assert cfg2.mean == tuple(dataset_info("digits")["mean"])
    capsys.readouterr()
    assert _run(argv[:-2] + [str(tmp_path / "run3"), "--width-mult", "0.5"]) == 2
    assert "contradicts the weights of --finetune %s" % entry.tag in capsys.readouterr().err
    # An unknown name says what it accepts.
    assert _run(argv[:6] + ["nope-1.0"] + argv[7:]) == 2
    assert "no such file, nor a published weights tag" in capsys.readouterr().err


def resattn_load(path):
    from resattn import load_model
    return load_model(path)
