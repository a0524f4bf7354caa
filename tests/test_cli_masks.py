import json
import os

import mxnet as mx
import numpy as np
import pytest

from resattn import get_model
from resattn.cli import main


def _run(argv):
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny cluttered-digits 'run': params plus the config.json `resattn train` writes."""
    out = tmp_path_factory.mktemp("run")
    net = get_model("attention56_cifar", width_mult=0.0625)
    net.initialize(mx.init.Xavier())
    net(mx.nd.zeros((1, 3, 64, 64)))
    net.save_parameters(str(out / "best.params"))
    (out / "config.json").write_text(json.dumps({
        "model": "attention56_cifar", "dataset": "cluttered-digits", "classes": 10, "seed": 0,
        "model_kwargs": {"width_mult": 0.0625}}))
    return out


def _png_size(path):
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def test_masks_from_dataset_with_score(trained, capsys):
    out = str(trained / "masks.png")
    assert _run(["masks", "--params", str(trained / "best.params"), "--dataset",
                 "cluttered-digits", "--index", "0", "5", "--score", "-o", out]) == 0
    text = capsys.readouterr().out
    assert "wrote %s (2 images x 3 attention modules)" % out in text
    scores = [float(l.rsplit(":", 1)[1]) for l in text.splitlines() if "inside/outside" in l]
    assert len(scores) == 3 and all(s > 0 for s in scores)
    width, height = _png_size(out)
    assert width > height > 0  # 2 rows of 4 panels


def test_score_uses_the_canvas_the_run_was_trained_at(trained, tmp_path, capsys):
    # A run trained with --image-size 40 is scored on its own 40 px test images, not on
    # the dataset's default 64 px canvas.
    from resattn.data import ClutteredDigits, dataset_info
    from resattn.io import write_weights_config
    from resattn.masks import score_by_stage
    run = tmp_path / "run40"
    run.mkdir()
    (run / "best.params").write_bytes((trained / "best.params").read_bytes())
    config = json.loads((trained / "config.json").read_text())
    config["image_size"] = 40
    (run / "config.json").write_text(json.dumps(config))
    # The weights' config as resattn train writes it beside each .params.
    info = dataset_info("cluttered-digits")
    write_weights_config(str(run / "best.params"), "attention56_cifar",
                         arch={"width_mult": 0.0625, "classes": 10},
                         preprocessing={"input_size": 40, "scale": 255.0,
                                        "mean": list(info["mean"]), "std": list(info["std"])})
    assert _run(["masks", "--params", str(run / "best.params"), "--dataset", "cluttered-digits",
                 "--index", "0", "--score", "-o", str(run / "m.png")]) == 0
    text = capsys.readouterr().out
    printed = [float(l.rsplit(":", 1)[1]) for l in text.splitlines() if "inside/outside" in l]
    net = get_model("attention56_cifar", width_mult=0.0625)
    net.load_parameters(str(run / "best.params"))
    for canvas, close in ((40, True), (64, False)):
        data = ClutteredDigits(train=False, seed=0, canvas=canvas)
        x = np.stack([data[i][0].asnumpy() for i in range(len(data))])
        want = [v for v in score_by_stage(net, x, data.boxes, batch_size=120).values()]
        assert np.allclose(printed, want, atol=1.5e-3) == close, (canvas, printed, want)


def test_masks_from_image_files(trained, tmp_path, capsys):
    cv2 = pytest.importorskip("cv2")
    paths = []
    for i in range(2):
        path = str(tmp_path / ("img%d.png" % i))
        cv2.imwrite(path, (np.random.RandomState(i).rand(40, 50, 3) * 255).astype(np.uint8))
        paths.append(path)
    out = str(tmp_path / "m.png")
    assert _run(["masks", "--params", str(trained / "best.params"), "--reduce", "channel:1",
                 "--input-size", "48x40", "-o", out] + paths) == 0
    assert os.path.getsize(out) > 0


@pytest.mark.parametrize("extra,fragment", [
    (["--dataset", "cluttered-digits", "--index", "999"], "out of range"),
    (["--reduce", "median", "--dataset", "digits", "--index", "0"], "--reduce must be"),
    (["--dataset", "digits", "--index", "0", "--score"], "--score needs --dataset cluttered"),
    ([], "give image files, or --dataset"),
    (["/no/such.png"], "cannot read image '/no/such.png'"),
])
def test_masks_bad_arguments(trained, extra, fragment, capsys):
    assert _run(["masks", "--params", str(trained / "best.params"), "-o",
                 str(trained / "x.png")] + extra) == 2
    assert fragment in capsys.readouterr().err
