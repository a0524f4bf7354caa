"""Every script in examples/ runs, in-process, on tiny settings and offline data."""
import importlib.util
import json
import os

import mxnet as mx
import numpy as np
import pytest

import resattn
from resattn.io import load_parameters, save_parameters

from conftest import randomize_batchnorm, rel_diff

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")
TINY = "0.0625"  # width_mult: 1/16 of every width


def load_example(name):
    spec = importlib.util.spec_from_file_location("example_" + name,
                                                  os.path.join(EXAMPLES, name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_example_is_tested():
    tested = {"custom_network", "train_cifar10", "finetune_imagefolder", "load_pytorch_weights",
              "visualize_masks", "export_onnx", "detection_backbone"}
    found = {f[:-3] for f in os.listdir(EXAMPLES) if f.endswith(".py") and f != "demo.py"}
    assert found <= tested, "examples without a smoke test: %s" % sorted(found - tested)


def test_custom_network(tmp_path, capsys):
    out = tmp_path / "run"
    assert load_example("custom_network").main(
        ["--width", "8", "--attention", "spatial", "--epochs", "1", "--subset", "64",
         "--batch-size", "32", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "max diff 0" in text
    assert "stage1.module1: soft mask (2, 8, 32, 37)" in text
    assert "stage2.module1: soft mask (2, 16, 16, 19)" in text
    assert (out / "best.params").is_file() and (out / "metrics.jsonl").is_file()


def test_train_cifar10_on_digits(tmp_path, capsys):
    out = tmp_path / "run"
    assert load_example("train_cifar10").main(
        ["--dataset", "digits", "--epochs", "1", "--batch-size", "32", "--subset", "64",
         "--width-mult", TINY, "--num-workers", "0", "--no-progress", "--out", str(out)]) == 0
    assert "best val_top1" in capsys.readouterr().out
    config = json.loads((out / "config.json").read_text())
    assert config["model"] == "attention92_cifar" and config["dataset"] == "digits"
    assert config["mixup_alpha"] == 1.0 and config["optimizer"] == "nag"  # the recipe
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1]
    # The run is one `resattn eval` can read back (model and widths from config.json).
    from resattn.cli import main as cli
    assert cli(["eval", "--params", str(out / "best.params"), "--dataset", "digits",
                "--subset", "64"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "top1 %.4f" % rows[0]["val_top1"]


def _image_folder(root, per_class):
    import cv2
    rng = np.random.RandomState(0)
    for split, n in (("train", per_class), ("val", per_class // 2)):
        for name, colour in (("blue", (255, 0, 0)), ("red", (0, 0, 255))):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                img = (rng.rand(36, 44, 3) * 80).astype(np.uint8)
                img[6:28, 8:36] = colour
                cv2.imwrite(str(folder / ("%d.png" % i)), img)
    return root


@pytest.mark.parametrize("freeze", [False, True])
def test_finetune_imagefolder(tmp_path, capsys, freeze):
    data = _image_folder(tmp_path / "data", 4)
    source = resattn.get_model("attention56_cifar", width_mult=float(TINY))
    source.initialize(mx.init.MSRAPrelu())
    source(mx.nd.zeros((1, 3, 32, 32)))
    save_parameters(source, str(tmp_path / "pretrained.params"))
    out = tmp_path / "ft"
    args = ["--data", str(data), "--model", "attention56_cifar", "--width-mult", TINY,
            "--checkpoint", str(tmp_path / "pretrained.params"), "--checkpoint-classes", "10",
            "--epochs", "1", "--batch-size", "4", "--num-workers", "0", "--out", str(out)]
    assert load_example("finetune_imagefolder").main(args + (["--freeze-features"]
                                                             if freeze else [])) == 0
    assert "blue, red" in capsys.readouterr().out
    tuned = resattn.get_model("attention56_cifar", width_mult=float(TINY), classes=2)
    load_parameters(tuned, str(out / "best.params"))
    # The features start from the checkpoint; frozen, they are exactly the checkpoint's.
    name = "features.1.1.trunk.0.conv2.weight"
    before = source._collect_params_with_prefix()[name].data()
    after = tuned._collect_params_with_prefix()[name].data()
    assert (rel_diff(before, after) == 0) == freeze
    assert tuned.output.weight.shape == (2, tuned.widths[3])


def test_load_pytorch_weights(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    from resattn.models.convert import foreign_names
    # A state_dict in the PyTorch reference's names, from a random attention92_cifar.
    net = resattn.get_model("attention92_cifar")
    net.initialize(mx.init.MSRAPrelu())
    net(mx.nd.zeros((1, 3, 32, 32)))
    randomize_batchnorm(net)
    params = net._collect_params_with_prefix()
    state = {}
    for name, foreign in foreign_names(net, "pytorch").items():
        state[foreign] = torch.from_numpy(params[name].data().asnumpy())
        if foreign.endswith(".running_mean"):  # as torch.nn.BatchNorm2d stores it
            state[foreign[:-len("running_mean")] + "num_batches_tracked"] = torch.tensor(0)
    torch.save(state, str(tmp_path / "model_92_sgd.pkl"))
    images = tmp_path / "a.png"
    import cv2
    cv2.imwrite(str(images), (np.random.RandomState(0).rand(40, 40, 3) * 255).astype(np.uint8))

    out = tmp_path / "a92.params"
    assert load_example("load_pytorch_weights").main(
        [str(tmp_path / "model_92_sgd.pkl"), "-o", str(out), "--image", str(images)]) == 0
    text = capsys.readouterr().out
    assert "wrote" in text and "a.png:" in text
    # The reference's preprocessing, from the config the conversion wrote.
    assert "preprocessing: 32x32, pixels / 255, mean [0.0, 0.0, 0.0], std [1.0, 1.0, 1.0]" \
        in text
    converted = resattn.get_model("attention92_cifar")
    load_parameters(converted, str(out))
    x = mx.nd.random.uniform(shape=(2, 3, 32, 32))
    assert rel_diff(net(x), converted(x)) < 1e-6


def test_visualize_masks(tmp_path, capsys):
    from PIL import Image
    out = tmp_path / "masks.png"
    assert load_example("visualize_masks").main(
        ["--model", "attention56_cifar", "--width-mult", TINY, "--dataset", "cluttered-digits",
         "--index", "0", "1", "--reduce", "class", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "2 images x 3 modules" in text
    assert "inside the digit box / outside" in text and "stage3" in text
    with Image.open(out) as img:
        assert img.size[0] > img.size[1] > 0


def _tiny_run(tmp_path):
    """A directory as `resattn train` leaves it (best.params, config.json), tiny and untrained."""
    run = tmp_path / "run"
    run.mkdir()
    net = resattn.get_model("attention56_cifar", width_mult=float(TINY))
    net.initialize(mx.init.MSRAPrelu())
    net(mx.nd.zeros((1, 3, 32, 32)))
    save_parameters(net, str(run / "best.params"))
    (run / "config.json").write_text(json.dumps(
        {"model": "attention56_cifar", "dataset": "digits",
         "model_kwargs": {"width_mult": float(TINY)}}))
    return run


def test_visualize_masks_reads_the_run(tmp_path, capsys):
    run = _tiny_run(tmp_path)
    assert load_example("visualize_masks").main(
        ["--params", str(run / "best.params"), "--index", "3", "-o", str(tmp_path / "m.png")]) == 0
    assert "1 images x 3 modules" in capsys.readouterr().out


def test_export_onnx(tmp_path, capsys):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    run = _tiny_run(tmp_path)
    out = tmp_path / "model.onnx"
    assert load_example("export_onnx").main(
        ["--params", str(run / "best.params"), "-o", str(out), "--int8", "--calib-batches", "1",
         "--batch-size", "16", "--subset", "32"]) == 0
    text = capsys.readouterr().out
    assert out.is_file() and "ONNX Runtime vs MXNet" in text and "2x3x40x24" in text
    assert "INT8: top-1" in text
    assert (tmp_path / "model-int8-symbol.json").is_file()


def test_detection_backbone(tmp_path, capsys):
    from resattn.gluoncv import import_gluoncv
    try:
        import_gluoncv()
    except ImportError as err:  # pragma: no cover
        pytest.skip("GluonCV is not installed: %s" % err)
    out = tmp_path / "detect"
    assert load_example("detection_backbone").main(
        ["--width-mult", TINY, "--grid", "2", "--classify-epochs", "1", "--classify-images", "64",
         "--batch-size", "32", "--detect-epochs", "1", "--train-scenes", "2", "--val-scenes", "1",
         "--draw", "1", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "classifier: attention56 from" in text and "VOC07 mAP@0.5" in text
    assert "4 digits each; backbone strides [4, 4, 8, 16, 32]" in text
    assert (out / "classifier" / "best.params").is_file()
    assert (out / "faster_rcnn.params").is_file() and (out / "detections.png").is_file()
