"""Weights carry their preprocessing into Python: ``net.pretrained_cfg``, timm's
``resolve_data_config`` / ``create_transform``, the one loader, and the public names.

The PyTorch reference's file is written in its own format (refimpl.legacy_torch, a
Python 2 / torch 0.3-style pickle, as ``model_92_sgd.pkl`` is), converted with the
``resattn convert`` command, and its logits on an odd-sized image compared with what
``resattn predict`` prints for the same file.
"""
import json
import os
import warnings

import mxnet as mx
import numpy as np
import pytest

import resattn
from conftest import randomize_batchnorm, tiny_weights
from resattn.cli import main
from resattn.data import create_transform, read_image, resolve_data_config
from resattn.models import PretrainedCfg, get_spec, list_models, load_model
from resattn.models.convert import foreign_names

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "v0_1_0")


def _run(argv):
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


# ------------------------------------------------------------------ every registered model
@pytest.mark.parametrize("name", list_models())
def test_every_model_carries_its_default_cfg(name):
    spec = get_spec(name)
    net = resattn.get_model(name)
    cfg = net.pretrained_cfg
    assert isinstance(cfg, PretrainedCfg) and cfg.is_default
    assert (cfg.model, cfg.input_size, cfg.num_classes) == (name, spec.input_size, spec.classes)
    assert cfg.normalization() == (tuple(spec.mean), tuple(spec.std))
    data = resolve_data_config(model=net)
    assert data["input_size"] == spec.input_size
    assert data["crop_mode"] == ("squash" if spec.input_size <= 64 else "center")
    x = create_transform(**data)(np.zeros((45, 37, 3), np.uint8))
    assert x.shape == (3, spec.input_size, spec.input_size) and x.dtype == np.float32


def test_public_builders_equal_the_registry():
    """torchvision's test: every builder the zoo module makes public is registered under its
    name, and every zoo model has one."""
    from resattn.models import zoo
    builders = {n for n in zoo.__all__ if n in zoo.MODEL_SPECS}
    assert builders == set(zoo.MODEL_SPECS) and builders <= set(list_models())
    for name in builders:
        assert get_spec(name).builder is getattr(zoo, name)


def test_list_models_filters_as_timm_does():
    assert list_models("*cifar*") == [n for n in list_models() if "cifar" in n]
    assert list_models(["attention56", "attentionnext*"]) == [
        "attention56", "attentionnext56", "attentionnext92"]
    assert list_models("*cifar*", exclude_filters="*paper") == [
        "attention56_cifar", "attention92_cifar", "attention452_cifar"]
    assert list_models(pretrained=True) == ["attention92_cifar"]
    assert list_models("nothing*") == []
    with pytest.raises(ValueError, match="filter must be a pattern"):
        list_models(5)


def test_resattn_list_takes_a_pattern(capsys):
    assert _run(["list", "452"]) == 0
    lines = [line.split()[0] for line in capsys.readouterr().out.splitlines()[2:-1]]
    assert lines == ["attention452", "attention452_cifar", "attention452_cifar_paper"]
    assert _run(["list", "--pretrained", "*cifar"]) == 0
    assert "seed-97.14*" in capsys.readouterr().out
    assert _run(["list", "resnet"]) == 2
    assert "no model matches resnet" in capsys.readouterr().err


@pytest.mark.parametrize("call", [
    lambda: resattn.get_model_list(),
    lambda: resattn.models.get_model_spec("attention56"),
    lambda: resattn.models.short_hash("attention56"),
    lambda: resattn.models.load_pretrained(None, "attention56", True),
])
def test_names_of_0_1_warn_for_one_release(call):
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        try:
            result = call()
        except ValueError as err:  # the dead mechanism: no resattn file was ever published
            assert "published" in str(err)
        else:
            assert result
    assert any(issubclass(w.category, DeprecationWarning) and "0.3" in str(w.message)
               for w in seen)


def test_the_namespaces_do_not_leak_helpers():
    import importlib
    for package in [resattn] + [importlib.import_module("resattn." + p) for p in (
            "models", "data", "training", "masks", "deploy")]:
        assert "attach" not in vars(package), package.__name__
        assert "attach" not in dir(package), package.__name__


# ------------------------------------------------------------------ data config and transform
def test_flags_override_trained_weights_only_when_asked():
    trained = PretrainedCfg(input_size=32, scale=255.0, mean=(0, 0, 0), std=(1, 1, 1),
                            crop_mode="squash", tag="pytorch-95.4")
    assert not trained.is_default
    cfg = resolve_data_config({"input_size": 32, "mean": None}, pretrained_cfg=trained)
    assert cfg["mean"] == (0.0, 0.0, 0.0)  # None: not given; equal values: no conflict
    with pytest.raises(ValueError, match=r"input_size=64 \(the weights' 32\) differs from the "
                                         r"preprocessing of the weights \(pytorch-95.4\)"):
        resolve_data_config({"input_size": 64}, pretrained_cfg=trained)
    assert resolve_data_config({"input_size": 64, "override_config": True},
                               pretrained_cfg=trained)["input_size"] == 64
    import argparse
    args = argparse.Namespace(input_size=48, mean=None, override_config=True)
    assert resolve_data_config(args, pretrained_cfg=trained)["input_size"] == 48
    # A network without weights takes any value.
    net = resattn.get_model("attention56_cifar")
    assert resolve_data_config({"input_size": 40}, model=net)["input_size"] == 40
    with pytest.raises(ValueError, match="unknown key cropping"):
        resolve_data_config({"cropping": 1}, model=net)


def test_create_transform_rules():
    img = np.arange(60 * 90 * 3, dtype=np.uint8).reshape(60, 90, 3)
    squash = create_transform(32, (0, 0, 0), (1, 1, 1), crop_mode="squash",
                              interpolation="area")
    import cv2
    as_float = img.astype(np.float32) / 255  # resized in float32, not rounded to uint8 first
    expected = cv2.resize(as_float, (32, 32), interpolation=cv2.INTER_AREA)
    np.testing.assert_allclose(squash(img), expected.transpose(2, 0, 1), atol=1e-6)
    center = create_transform(32, (0, 0, 0), (1, 1, 1), crop_mode="center", crop_pct=0.5)
    # The shorter side to 32 / 0.5 = 64, then the central 32 x 32.
    resized = cv2.resize(as_float, (96, 64), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_allclose(center(img), resized[16:48, 32:64].transpose(2, 0, 1), atol=1e-6)
    assert create_transform((20, 30), crop_mode="center")(img).shape == (3, 20, 30)
    # Grey, RGBA, 16-bit, PIL: the same image.
    grey = np.full((10, 12), 128, np.uint8)
    ref = squash(np.stack([grey] * 3, -1))
    np.testing.assert_allclose(squash(grey), ref)
    np.testing.assert_allclose(squash(np.dstack([grey] * 3 + [grey * 0])), ref)
    np.testing.assert_allclose(squash(grey.astype(np.uint16) * 257), ref, atol=1e-6)
    PIL = pytest.importorskip("PIL.Image")
    np.testing.assert_allclose(squash(PIL.fromarray(grey)), ref)
    np.testing.assert_allclose(squash(PIL.fromarray(grey).convert("LA")), ref)
    # Training: the seed's recipe (crop with padding, flip, cutout), seeded.
    train = create_transform(32, crop_mode="squash", is_training=True, cutout=8)
    a = train(img, np.random.RandomState(3))
    b = train(img, np.random.RandomState(3))
    np.testing.assert_array_equal(a, b)
    assert train.augment and train.pad == 4 and train.cutout == 8
    x = squash(img)
    np.testing.assert_allclose(squash.denormalize(x[None])[0], x.transpose(1, 2, 0), atol=1e-6)
    for bad, match in [(dict(crop_mode="crop"), "crop_mode must be one of squash, center"),
                       (dict(std=(0, 1, 1)), "std must be 3 finite numbers > 0"),
                       (dict(mean=(0, float("nan"), 0)), "mean must be 3 finite numbers"),
                       (dict(input_size=0), "input_size is 0"),
                       (dict(interpolation="cubic"), "interpolation must be one of")]:
        with pytest.raises(ValueError, match=match):
            create_transform(**dict(dict(input_size=32), **bad))


# ------------------------------------------------------------------ the PyTorch reference's file
@pytest.fixture(scope="module")
def pytorch_file(tmp_path_factory):
    torch = pytest.importorskip("torch")
    from refimpl.legacy_torch import write_legacy_torch
    d = tmp_path_factory.mktemp("pt")
    net = resattn.get_model("attention92_cifar", variant="gluoncv")
    net.initialize(mx.init.MSRAPrelu())
    net(mx.nd.zeros((1, 3, 32, 32)))
    randomize_batchnorm(net)
    params = net._collect_params_with_prefix()
    state = {foreign: torch.from_numpy(params[name].data().asnumpy())
             for name, foreign in foreign_names(net, "pytorch").items()}
    write_legacy_torch(state, str(d / "model_92_sgd.pkl"))
    return d


def test_converted_pytorch_file_carries_the_references_preprocessing(pytorch_file, capsys):
    src, out = str(pytorch_file / "model_92_sgd.pkl"), str(pytorch_file / "a92.params")
    assert _run(["convert", "--model", "attention92_cifar", "--source", "pytorch", src,
                 "-o", out]) == 0
    capsys.readouterr()
    net = resattn.get_model("attention92_cifar", pretrained=out)
    cfg = net.pretrained_cfg
    assert (cfg.input_size, cfg.scale, cfg.mean, cfg.std) == (32, 255.0, (0.0,) * 3, (1.0,) * 3)
    assert cfg.normalization() == ((0.0,) * 3, (1.0,) * 3)  # pixels / 255, nothing else
    assert cfg.file == out and cfg.source == "pytorch" and not cfg.is_default
    assert cfg.class_names == resattn.models.CIFAR10_CLASSES
    assert load_model(out).pretrained_cfg == cfg  # one loader, whichever door

    # An odd-sized image: Python's probabilities are those `resattn predict` prints.
    cv2 = pytest.importorskip("cv2")
    image = str(pytorch_file / "odd.png")
    cv2.imwrite(image, np.random.RandomState(5).randint(0, 255, (45, 37, 3), dtype=np.uint8))
    PIL = pytest.importorskip("PIL.Image")
    transform = create_transform(**resolve_data_config(model=net))
    for img in (read_image(image), PIL.open(image)):
        probs = mx.nd.softmax(net(mx.nd.array(transform(img)[None]))).asnumpy()[0]
        assert _run(["predict", "--params", out, "-k", "3", "--format", "json", image]) == 0
        row = json.loads(capsys.readouterr().out)
        assert row["file"] == image
        top = np.argsort(-probs)[:3]
        assert [t["index"] for t in row["top"]] == list(top)
        np.testing.assert_allclose([t["probability"] for t in row["top"]], probs[top],
                                   rtol=1e-4, atol=1e-6)
        assert _run(["predict", "--params", out, "-k", "1", image]) == 0
        assert capsys.readouterr().out == "%s: %s %.3f\n" % (
            image, cfg.class_names[top[0]], probs[top[0]])


# ------------------------------------------------------------------ 0.1 runs and trained runs
def test_a_0_1_run_loads_with_its_datasets_preprocessing():
    from resattn.data import dataset_info
    net = load_model(os.path.join(FIXTURES, "run", "best.params"))
    cfg = net.pretrained_cfg
    with open(os.path.join(FIXTURES, "run", "config.json")) as f:
        saved = json.load(f)
    info = dataset_info(saved["dataset"])
    assert cfg.model == saved["model"] and cfg.provenance["preprocessing_from"] == \
        "run config.json"
    assert cfg.normalization() == (tuple(info["mean"]), tuple(info["std"]))
    assert not cfg.is_default


def test_a_bare_file_needs_its_model(tmp_path):
    net = resattn.get_model("attention56_cifar", width_mult=0.0625)
    net.initialize()
    net(mx.nd.zeros((1, 3, 32, 32)))
    path = str(tmp_path / "bare.params")
    net.save_parameters(path)
    with pytest.raises(ValueError, match="has no weight config .* pass the model"):
        load_model(path)
    loaded = load_model(path, model="attention56_cifar", width_mult=0.0625)
    assert loaded.pretrained_cfg.is_default
    assert loaded.pretrained_cfg.provenance["preprocessing_from"] == "model default"
    assert loaded.classes == 10


# ------------------------------------------------------------------ predict at scale
def test_predict_batches_folders_and_machine_readable_names(tmp_path, capsys):
    cv2 = pytest.importorskip("cv2")
    weights = str(tmp_path / "w.params")
    tiny_weights(weights)
    folder = tmp_path / "imgs"
    (folder / "sub").mkdir(parents=True)
    names = ["a,b.png", 'quote".png', "new\nline.png", "sub/z.jpg", "plain.png"]
    rng = np.random.RandomState(0)
    for name in names:
        cv2.imwrite(str(folder / name), rng.randint(0, 255, (20, 30, 3), dtype=np.uint8))
    raw = os.fsencode(str(folder)) + b"/caf\xe9.png"  # not UTF-8
    with open(raw, "wb") as f:
        f.write(cv2.imencode(".png", rng.randint(0, 255, (9, 9, 3), dtype=np.uint8))[1])
    (folder / "notes.txt").write_text("not an image")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    outputs = {}
    for batch in ("1", "4"):
        assert _run(["predict", "--params", weights, "--format", "json", "--batch-size", batch,
                     str(folder)]) == 0
        captured = capsys.readouterr()
        outputs[batch] = [json.loads(line) for line in captured.out.splitlines()]
        assert "skipped" in captured.err and "broken.png" in captured.err
    assert [r["file"] for r in outputs["1"]] == [r["file"] for r in outputs["4"]]
    for a, b in zip(outputs["1"], outputs["4"]):
        np.testing.assert_allclose([t["probability"] for t in a["top"]],
                                   [t["probability"] for t in b["top"]], rtol=1e-4, atol=1e-6)
    files = {os.fsencode(r["file"]) for r in outputs["1"]}
    assert files == {os.fsencode(str(folder / n)) for n in names} | {raw}
    # CSV: every name survives a csv reader, byte for byte.
    import csv
    import io
    import subprocess
    import sys
    proc = subprocess.run([sys.executable, "-m", "resattn", "predict", "--params", weights,
                           "--format", "csv", "-k", "2", str(folder)], capture_output=True)
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.reader(io.StringIO(proc.stdout.decode("utf-8", "surrogateescape"))))
    assert rows[0] == ["file", "rank", "label", "index", "probability"]
    assert {os.fsencode(r[0]) for r in rows[1:]} == files and len(rows) == 1 + 2 * len(files)
    # An explicit file that is not an image is an error; bad options are one line.
    assert _run(["predict", "--params", weights, str(folder / "notes.txt")]) == 2
    assert _run(["predict", "--params", weights, "--format", "xml", str(folder)]) == 2
    assert "--format 'xml': expected one of text, json, csv" in capsys.readouterr().err
    assert _run(["predict", "--params", weights, "--batch-size", "0", str(folder)]) == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _run(["predict", "--params", weights, str(empty)]) == 2
    assert "no images in" in capsys.readouterr().err
