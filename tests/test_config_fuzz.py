"""Weight configs as someone might hand them over: every field edited to a wrong type, out of
range, non-finite or missing. Every command that loads weights (predict, eval, masks, export)
ends with exit 2 and one line naming the field, before any prediction; the Python loader
raises ValueError. The same holds for the fields of a run's config.json that loading reads.
"""
import copy
import json
import os

import numpy as np
import pytest

import resattn
from resattn.cli import main
from conftest import tiny_weights
from resattn.io import config_path

NAN, INF = float("nan"), float("inf")
DELETE = object()


def _set(path, value):
    def edit(cfg):
        *parents, last = path.split(".")
        node = cfg
        for key in parents:
            node = node[key]
        if value is DELETE:
            del node[last]
        else:
            node[last] = value
    return edit


#: (case id, edit of the config dict, a word the one line must contain).
EDITS = [("input_size %r" % (v,), _set("preprocessing.input_size", v), "input_size")
         for v in (-5, 0, "32", 10 ** 9, 31.5, True, [32], [0, 32], None, [32, 32, 32])]
EDITS += [
    ("input_size missing", _set("preprocessing.input_size", DELETE), "input_size"),
    ("preprocessing list", _set("preprocessing", [1, 2]), "preprocessing"),
    ("preprocessing str", _set("preprocessing", "imagenet"), "preprocessing"),
    ("arch list", _set("arch", ["gluoncv"]), "arch"),
    ("arch str", _set("arch", "x"), "arch"),
    ("arch.classes 0", _set("arch.classes", 0), "arch.classes"),
    ("arch.classes str", _set("arch.classes", "10"), "arch.classes"),
    ("arch.width_mult nan", _set("arch.width_mult", NAN), "width_mult"),
    ("arch.width_mult -1", _set("arch.width_mult", -1), "width_mult"),
    ("version str", _set("version", "2"), "version"),
    ("version float", _set("version", 1.5), "version"),
    ("version negative", _set("version", -1), "version"),
    ("version newer", _set("version", 99), "newer"),
    ("model list", _set("model", ["attention56_cifar"]), "model"),
    ("model empty", _set("model", ""), "model"),
    ("model missing", _set("model", DELETE), "model"),
    ("format missing", _set("format", DELETE), "format"),
    ("mean missing", _set("preprocessing.mean", DELETE), "mean"),
    ("mean two", _set("preprocessing.mean", [0.5, 0.5]), "mean"),
    ("mean inf", _set("preprocessing.mean", [INF, 0, 0]), "mean"),
    ("mean nan", _set("preprocessing.mean", [NAN, 0, 0]), "mean"),
    ("mean str", _set("preprocessing.mean", "imagenet"), "mean"),
    ("std zero", _set("preprocessing.std", [0, 0, 0]), "std"),
    ("std nan", _set("preprocessing.std", [NAN, 1, 1]), "std"),
    ("std negative", _set("preprocessing.std", [-0.2, 0.2, 0.2]), "std"),
    ("std missing", _set("preprocessing.std", DELETE), "std"),
    ("std str items", _set("preprocessing.std", ["a", 1, 1]), "std"),
    ("scale zero", _set("preprocessing.scale", 0), "scale"),
    ("scale negative", _set("preprocessing.scale", -255), "scale"),
    ("scale inf", _set("preprocessing.scale", INF), "scale"),
    ("scale nan", _set("preprocessing.scale", NAN), "scale"),
    ("scale str", _set("preprocessing.scale", "255"), "scale"),
    ("crop_mode", _set("preprocessing.crop_mode", "crop"), "crop_mode"),
    ("crop_pct zero", _set("preprocessing.crop_pct", 0), "crop_pct"),
    ("crop_pct two", _set("preprocessing.crop_pct", 2), "crop_pct"),
    ("interpolation", _set("preprocessing.interpolation", "cubic"), "interpolation"),
    ("class_names str", _set("class_names", "abc"), "class_names"),
    ("class_names ints", _set("class_names", [1, 2]), "class_names"),
    ("class_names empty", _set("class_names", []), "class_names"),
    ("class_names short", _set("class_names", ["a"] * 9), "class_names"),
    ("provenance list", _set("provenance", [1]), "provenance"),
    ("sha1 int", _set("sha1", 5), "sha1"),
    ("size negative", _set("size", -1), "size"),
    ("size str", _set("size", "big"), "size"),
    ("top-level list", lambda cfg: [cfg], "weight config"),
]
#: Whole files that are not JSON a config can be.
RAW = [("deep nesting", "[" * 100000 + "]" * 100000, "nests too deeply"),
       ("not json", "{ model: ", "cannot read the weight config"),
       ("binary", b"\xff\xfe\x00", "cannot read the weight config")]
#: Edits of the run's config.json beside a weight file without its own config.
RUN_EDITS = [("run model list", {"model": ["x"]}, "model"),
             ("run model_kwargs list", {"model": "attention56_cifar", "model_kwargs": [1]},
              "model_kwargs"),
             ("run classes str", {"model": "attention56_cifar", "classes": "10"}, "classes"),
             ("run image_size 0", {"model": "attention56_cifar", "image_size": 0},
              "image_size")]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    cv2 = pytest.importorskip("cv2")
    d = tmp_path_factory.mktemp("fuzz")
    path = str(d / "w.params")
    tiny_weights(path, class_names=[str(i) for i in range(10)])
    image = str(d / "img.png")
    cv2.imwrite(image, np.zeros((20, 20, 3), np.uint8))
    with open(config_path(path)) as f:
        config = json.load(f)
    with open(path, "rb") as f:
        params = f.read()
    return d, config, params, image


def _case(base, name, text):
    """A folder holding the weights and the edited config; the weight file's path."""
    d, _, params, _ = base
    folder = d / name.replace(" ", "_").replace("'", "").replace("%", "")
    folder.mkdir(exist_ok=True)
    path = str(folder / "w.params")
    with open(path, "wb") as f:
        f.write(params)
    mode = "wb" if isinstance(text, bytes) else "w"
    with open(config_path(path), mode) as f:
        f.write(text)
    return path


def _commands(path, image, tmp):
    return {"predict": ["predict", "--params", path, image],
            "eval": ["eval", "--params", path, "--dataset", "digits", "--subset", "8"],
            "masks": ["masks", "--params", path, image, "-o", str(tmp / "m.png")],
            "export": ["export", "--params", path, "--format", "symbol", "-o",
                       str(tmp / "exported")]}


def _check_all(path, image, word, tmp, capsys):
    for command, argv in _commands(path, image, tmp).items():
        try:
            status = main(argv)
        except SystemExit as exc:
            status = exc.code
        out = capsys.readouterr()
        lines = [line for line in out.err.splitlines() if line.strip()]
        assert status == 2, (command, out.err[-2000:])
        assert len(lines) == 1 and lines[0].startswith("resattn %s: error: " % command), \
            (command, out.err)
        assert word in lines[0], (command, lines[0])
        assert "Traceback" not in out.err and not out.out.strip(), (command, out.out)
    with pytest.raises(ValueError, match=word.replace(".", r"\.")):
        resattn.load_model(path)


@pytest.mark.parametrize("name,edit,word", EDITS, ids=[e[0] for e in EDITS])
def test_an_edited_config_is_one_line_naming_the_field(base, name, edit, word, tmp_path,
                                                        capsys):
    config = copy.deepcopy(base[1])
    config = edit(config) or config
    path = _case(base, name, json.dumps(config))  # NaN and Infinity as Python writes them
    _check_all(path, base[3], word, tmp_path, capsys)
    if isinstance(config, dict):
        assert not os.path.exists(tmp_path / "m.png")


@pytest.mark.parametrize("name,text,word", RAW, ids=[r[0] for r in RAW])
def test_a_config_that_is_not_one(base, name, text, word, tmp_path, capsys):
    _check_all(_case(base, name, text), base[3], word, tmp_path, capsys)


@pytest.mark.parametrize("name,run,word", RUN_EDITS, ids=[r[0] for r in RUN_EDITS])
def test_a_run_config_is_checked_the_same_way(base, name, run, word, tmp_path, capsys):
    d, _, params, image = base
    folder = d / name.replace(" ", "_")
    folder.mkdir(exist_ok=True)
    path = str(folder / "best.params")
    with open(path, "wb") as f:
        f.write(params)  # no weight config: the run's config.json says
    with open(folder / "config.json", "w") as f:
        json.dump(run, f)
    _check_all(path, image, word, tmp_path, capsys)


def test_the_untouched_config_predicts(base, capsys):
    d, config, params, image = base
    path = _case(base, "untouched", json.dumps(config))
    assert main(["predict", "--params", path, image]) == 0
    assert capsys.readouterr().out.startswith(image + ": ")
