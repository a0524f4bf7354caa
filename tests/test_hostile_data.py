"""Hostile data: what the data modules do with files and networks that are not as they should be.

Each case ends in a result or in a ValueError whose first line names the file and what to
do (the command line prints that line and exits with status 2), never in a traceback:
CIFAR offline, image folders holding broken images, links, folders named like images and
decompression bombs, record files whose index points past their end, and plainly bad paths.
Nothing here reaches the network.
"""
import os
import struct
import time
import warnings
import zlib

import cv2
import mxnet as mx
import numpy as np
import pytest

from conftest import run_python
from resattn import data
from resattn.cli._base import exit_status
from resattn.data import datasets, images

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunk(kind, body):
    return struct.pack(">I", len(body)) + kind + body + struct.pack(
        ">I", zlib.crc32(kind + body) & 0xffffffff)


def bomb_png(width=100000, height=100000):
    """A 65-byte PNG whose valid IHDR claims ``width`` x ``height`` RGB pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (PNG_SIGNATURE + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b""))
            + _chunk(b"IEND", b""))


def _image(seed=0, h=30, w=40):
    return np.random.RandomState(seed).randint(0, 256, (h, w, 3), np.uint8)


def _encoded(ext, img):
    return cv2.imencode(ext, img)[1].tobytes()


def _one_line_error(err, command="train"):
    """What the command line would print for ``err``: status 2 and one line."""
    status, line = exit_status(err, command)
    assert status == 2 and line and "\n" not in line
    return line


def _good_folder(root, per_class=(3, 2)):
    for split, n in zip(("train", "val"), per_class):
        for label, cls in enumerate(("a", "b")):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(n):
                (folder / ("%d.png" % i)).write_bytes(_encoded(".png", _image(10 * label + i)))
    return root


#: The hostile entries of train/a: name -> (what the warning says, how to make it).
HOSTILE = {
    "trunc.jpg": ("truncated", lambda p: p.write_bytes(_encoded(".jpg", _image())[:800])),
    "trunc.png": ("truncated", lambda p: p.write_bytes(_encoded(".png", _image())[:1500])),
    "text.png": ("not JPEG or PNG inside", lambda p: p.write_text("not an image\n")),
    "._resource.jpg": ("not JPEG or PNG inside",
                       lambda p: p.write_bytes(b"\x00\x05\x16\x07" + b"\x00" * 60)),
    "empty.jpg": ("empty", lambda p: p.write_bytes(b"")),
    "bomb.png": ("larger than 89478485 pixels", lambda p: p.write_bytes(bomb_png())),
    "loop.png": ("not a regular file", lambda p: os.symlink("loop.png", str(p))),
    "dangling.jpg": ("not a regular file", lambda p: os.symlink("missing.jpg", str(p))),
    "foo.png": ("not a regular file", lambda p: p.mkdir()),
    "fifo.png": ("not a regular file", lambda p: os.mkfifo(str(p))),
    "notes.txt": ("not named .jpg, .jpeg or .png", lambda p: p.write_text("notes")),
}

#: Odd but valid images of train/a, which must load.
ODD_BUT_VALID = {
    "png-inside.jpg": lambda p: p.write_bytes(_encoded(".png", _image(5))),
    "trailing-data.jpg": lambda p: p.write_bytes(_encoded(".jpg", _image(6)) + b"MOTION" * 99),
    "wide.png": lambda p: p.write_bytes(_encoded(".png", np.zeros((1, 100000, 3), np.uint8))),
    "gray.JPEG": lambda p: p.write_bytes(_encoded(".jpg", _image(7)[:, :, 0])),
}


@pytest.fixture
def hostile_folder(tmp_path):
    root = _good_folder(tmp_path / "hostile")
    for name, (_, make) in HOSTILE.items():
        make(root / "train" / "a" / name)
    for name, make in ODD_BUT_VALID.items():
        make(root / "train" / "a" / name)
    (root / "train" / "README.txt").write_text("beside the class folders")
    os.symlink("loopdir", str(root / "train" / "loopdir"))
    return root


# --------------------------------------------------------------------------- CIFAR offline

@pytest.fixture
def offline(monkeypatch):
    """Gluon's download fails as it does without network; requests may not be used at all."""
    calls = []

    def refuse(url, *args, **kwargs):
        calls.append(url)
        raise ConnectionError("HTTPSConnectionPool(host='apache-mxnet.s3-accelerate."
                              "dualstack.amazonaws.com', port=443): Max retries exceeded\n"
                              "(Caused by NameResolutionError)")

    def no_network(*args, **kwargs):
        raise AssertionError("a test tried to reach the network")

    monkeypatch.setattr(mx.gluon.data.vision.datasets, "download", refuse)
    monkeypatch.setattr(mx.gluon.utils, "download", refuse)
    import requests
    monkeypatch.setattr(requests.Session, "request", no_network)
    monkeypatch.delenv("MXNET_GLUON_REPO", raising=False)
    return calls


@pytest.mark.parametrize("name,title,archive", [
    ("cifar10", "CIFAR-10", "cifar-10-binary.tar.gz"),
    ("cifar100", "CIFAR-100", "cifar-100-binary.tar.gz")])
def test_cifar_offline_is_one_error_saying_where_to_put_the_archive(offline, tmp_path, name,
                                                                     title, archive):
    root = str(tmp_path / "empty")
    url = "https://apache-mxnet.s3-accelerate.dualstack.amazonaws.com/gluon/dataset/%s/%s" \
        % (name, archive)
    with pytest.raises(ValueError) as err:
        data.get_data_loader(name, True, 8, root=root)
    line = _one_line_error(err.value)
    assert line == ("resattn train: error: %s is not in %s and cannot be downloaded "
                    "(ConnectionError: HTTPSConnectionPool(host='apache-mxnet.s3-accelerate."
                    "dualstack.amazonaws.com', port=443): Max retries exceeded): put %s (from "
                    "%s) in %s, or use an offline dataset (digits, cluttered-digits, "
                    "imagefolder:PATH)" % (title, root, archive, url, root))
    assert offline == [url]


def test_cifar_damaged_archive_and_a_file_as_root(offline, tmp_path):
    (tmp_path / "cifar-10-binary.tar.gz").write_bytes(b"half an archive")
    with pytest.raises(ValueError, match=r"^CIFAR-10: .*cifar-10-binary.tar.gz is damaged "
                                         r"\(its SHA-1 is not fab780a1.*\) and cannot be "
                                         r"downloaded again \(ConnectionError.*replace it"):
        data.get_dataset("cifar10", root=str(tmp_path))
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="CIFAR-10: root '.*file' is a file, not a folder"):
        data.get_dataset("cifar10", root=str(tmp_path / "file"))
    assert offline == ["https://apache-mxnet.s3-accelerate.dualstack.amazonaws.com/gluon/"
                       "dataset/cifar10/cifar-10-binary.tar.gz"]


# --------------------------------------------------------------------------- image folders

def test_hostile_image_folder_skips_bad_files_with_one_warning_line(hostile_folder):
    name = "imagefolder:%s" % hostile_folder
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train = data.get_dataset(name, train=True, image_size=32)
        val = data.get_dataset(name, train=False, image_size=32)
    caught = [w for w in caught if issubclass(w.category, UserWarning)]
    assert len(caught) == 1, [str(w.message) for w in caught]
    message = str(caught[0].message)
    assert "\n" not in message
    assert message.startswith("imagefolder: skipped %d of %d files in %r, which are not usable "
                              "images: " % (len(HOSTILE) + 2, len(HOSTILE) + 2 + 3 + 3
                                            + len(ODD_BUT_VALID), str(hostile_folder / "train")))
    for entry, (reason, _) in HOSTILE.items():
        assert reason in message and os.path.join("a", entry) in message, entry
    assert "README.txt" in message and "loopdir" in message and "100000x100000" in message
    assert train.synsets == val.synsets == ["a", "b"]
    listed = sorted(os.path.basename(path) for path, _ in train._source.items)
    assert listed == sorted(["0.png", "1.png", "2.png"] * 2 + list(ODD_BUT_VALID))
    assert len(train) == 6 + len(ODD_BUT_VALID) and len(val) == 4
    for dataset in (train, val):
        for i in range(len(dataset)):
            x, _ = dataset[(i, i)]
            assert x.shape == (3, 32, 32) and np.isfinite(x.asnumpy()).all()


@pytest.fixture
def decoded(monkeypatch):
    """The sizes of the buffers handed to OpenCV's decoder."""
    sizes = []
    real = cv2.imdecode
    monkeypatch.setattr(cv2, "imdecode", lambda buf, *a, **k: sizes.append(len(buf))
                        or real(buf, *a, **k))
    return sizes


def test_decompression_bomb_is_refused_from_its_header(tmp_path, monkeypatch, decoded):
    """The 65-byte PNG claiming 100000 x 100000 pixels is never handed to a decoder."""
    bomb = bomb_png()
    assert len(bomb) == 65
    with pytest.raises(ValueError) as err:
        datasets._decode(bomb, "imagefolder: 'bomb.png'")
    assert _one_line_error(err.value).endswith(
        "error: imagefolder: 'bomb.png' is not a usable image: its header declares "
        "100000x100000 = 10000000000 pixels, more than the limit of 89478485; it was not "
        "decoded (pass max_pixels= to read_image or set RESATTN_MAX_IMAGE_PIXELS to allow "
        "more)")
    assert decoded == []
    # The limit moves with the environment variable: 40x30 images are over 1000 pixels.
    root = _good_folder(tmp_path / "small")
    (root / "train" / "a" / "bomb.png").write_bytes(bomb)
    monkeypatch.setenv("RESATTN_MAX_IMAGE_PIXELS", "1000")
    with pytest.raises(ValueError, match=r"no usable image in .*larger than 1000 pixels.*"
                                         r"a/0.png \(40x30\)"):
        data.get_dataset("imagefolder:%s" % root)
    monkeypatch.setenv("RESATTN_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(ValueError, match="RESATTN_MAX_IMAGE_PIXELS must be a positive integer"
                                         ".*'lots'"):
        data.get_dataset("imagefolder:%s" % root)
    monkeypatch.delenv("RESATTN_MAX_IMAGE_PIXELS")
    with pytest.warns(UserWarning, match=r"skipped 1 of 7 .*a/bomb.png \(100000x100000\)$"):
        assert len(data.get_dataset("imagefolder:%s" % root)) == 6
    monkeypatch.setattr(images, "MAX_IMAGE_PIXELS", 1200)  # or the module's attribute
    with pytest.warns(UserWarning, match=r"skipped 1 of 7 .*larger than 1200 pixels"):
        data.get_dataset("imagefolder:%s" % root)
    assert decoded == []


# --------------------------------------------------------------------------- read_image

def _max_rss_mb():
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_read_image_refuses_a_30000_square_png_from_its_header(tmp_path, decoded):
    """30000 x 30000 RGB would be 2.7 GB decoded: refused in well under a second, with
    nothing handed to the decoder and no memory to speak of."""
    path = tmp_path / "huge.png"
    path.write_bytes(bomb_png(30000, 30000))  # IHDR, a tiny IDAT, IEND: 65 bytes
    before = _max_rss_mb()
    start = time.monotonic()
    with pytest.raises(ValueError) as err:
        images.read_image(path)
    seconds = time.monotonic() - start
    assert _one_line_error(err.value).endswith(
        "error: %r is not a usable image: its header declares 30000x30000 = 900000000 pixels,"
        " more than the limit of 89478485; it was not decoded (pass max_pixels= to read_image"
        " or set RESATTN_MAX_IMAGE_PIXELS to allow more)" % str(path))
    assert seconds < 1 and decoded == []
    assert _max_rss_mb() - before < 50
    # The image folder skips it, with the one warning of its listing.
    root = _good_folder(tmp_path / "folder")
    os.replace(path, root / "train" / "a" / "huge.png")
    with pytest.warns(UserWarning, match=r"skipped 1 of 7 files .*: larger than 89478485 pixels"
                                         r" \(set RESATTN_MAX_IMAGE_PIXELS to allow more\): "
                                         r"a/huge.png \(30000x30000\)$"):
        train = data.get_dataset("imagefolder:%s" % root, image_size=16)
    assert len(train) == 6 and train[(0, 0)][0].shape == (3, 16, 16)
    assert decoded and 65 not in decoded


def _bmp_header(width, height):
    return b"BM" + struct.pack("<IHHI", 54, 0, 0, 54) + struct.pack(
        "<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 0, 0, 0, 0)


def _tiff_header(width, height):
    entries = [(256, 4, 1, width), (257, 4, 1, height)]
    return b"II*\0" + struct.pack("<IH", 8, len(entries)) + b"".join(
        struct.pack("<HHII", *e) for e in entries) + b"\0\0\0\0"


#: Headers claiming 50000 x 40000 pixels (2 gigapixels), in each format read_image sizes.
BOMBS = {
    "jpeg": b"\xff\xd8\xff\xc0\x00\x11\x08" + struct.pack(">HH", 40000, 50000)
            + b"\x03" + b"\x00" * 9 + b"\xff\xda\x00\x08" + b"\x00" * 6 + b"\xff\xd9",
    "bmp": _bmp_header(50000, -40000),  # negative: rows stored top-down
    "gif": b"GIF89a" + struct.pack("<HHBBB", 50000, 40000, 0, 0, 0) + b";",
    "webp": b"RIFF\x1e\x00\x00\x00WEBPVP8X\x0a\x00\x00\x00" + b"\x00" * 4
            + (50000 - 1).to_bytes(3, "little") + (40000 - 1).to_bytes(3, "little"),
    "tiff": _tiff_header(50000, 40000),
    "pnm": b"P6\n# a comment\n50000 40000\n255\n",
    "hdr": b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 40000 +X 50000\n",
    "sun": b"\x59\xa6\x6a\x95" + struct.pack(">II", 50000, 40000) + b"\x00" * 20,
}


@pytest.mark.parametrize("kind", sorted(BOMBS))
def test_read_image_sizes_every_format_before_decoding(tmp_path, kind, decoded):
    path = tmp_path / ("bomb." + kind)
    path.write_bytes(BOMBS[kind])
    with pytest.raises(ValueError, match=r"its header declares 50000x40000 = 2000000000 pixels"):
        images.read_image(path)
    assert decoded == []


def test_read_image_limit_argument_environment_and_constant(tmp_path, monkeypatch):
    path = tmp_path / "small.png"
    path.write_bytes(_encoded(".png", _image()))  # 40 x 30 = 1200 pixels
    assert images.read_image(path, max_pixels=1200).shape == (30, 40, 3)
    with pytest.raises(ValueError, match=r"1200 pixels, more than the limit of 1199;"):
        images.read_image(path, max_pixels=1199)
    monkeypatch.setenv("RESATTN_MAX_IMAGE_PIXELS", "1000")
    with pytest.raises(ValueError, match=r"more than the limit of 1000"):
        images.read_image(path)
    assert images.read_image(path, max_pixels=1200).shape == (30, 40, 3)  # the argument wins
    monkeypatch.delenv("RESATTN_MAX_IMAGE_PIXELS")
    monkeypatch.setattr(images, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ValueError, match=r"more than the limit of 1000"):
        images.read_image(path)
    for bad in (0, -5, 1.5, True, "lots"):
        with pytest.raises(ValueError, match="max_pixels must be a positive integer"):
            images.read_image(path, max_pixels=bad)


def test_read_image_decodes_as_the_loaders_did(tmp_path):
    """RGB uint8 (H, W, 3) as MXNet's imdecode gave the image folder and cv2.imread
    (IMREAD_COLOR, then BGR to RGB) the masks command: grey repeated, alpha dropped,
    16 bits cut to their high byte."""
    img = _image(3)
    cases = {
        "rgb.png": img, "rgb.jpg": img, "rgb.bmp": img, "rgb.webp": img, "rgb.tiff": img,
        "rgb.ppm": img, "grey.png": img[:, :, 0], "grey.jpg": img[:, :, 0],
        "rgba.png": np.dstack([img, img[:, :, :1]]),
        "deep.png": (img.astype(np.uint16) * 257 + 3)[:, :, ::-1],
    }
    for name, pixels in cases.items():
        path = tmp_path / name
        assert cv2.imwrite(str(path), pixels), name
        out = images.read_image(path)
        assert out.dtype == np.uint8 and out.shape == (30, 40, 3) and out.flags.c_contiguous
        assert np.array_equal(out, cv2.imread(str(path), cv2.IMREAD_COLOR)[:, :, ::-1]), name
        if name.endswith((".png", ".jpg")):
            ours = mx.image.imdecode(path.read_bytes(), 1).asnumpy()
            assert np.array_equal(out, ours), name


@pytest.mark.parametrize("make, shown", [
    (lambda p: p.write_bytes(b""), r"is not a usable image: empty; remove or replace it"),
    (lambda p: p.write_bytes(_encoded(".png", _image())[:1500]), r"truncated \(no IEND"),
    (lambda p: p.write_bytes(_encoded(".jpg", _image())[:800]), r"truncated \(no end-of"),
    (lambda p: p.write_text("not an image\n"), r"not PNG, JPEG, BMP, GIF, WebP, TIFF, PNM, "
                                               r"Sun raster or Radiance HDR inside"),
    (lambda p: None, r"^cannot read image '.*x.png' \(No such file or directory\)$"),
    (lambda p: p.mkdir(), r"^cannot read image '.*x.png' \(a folder\)$"),
    (lambda p: os.mkfifo(str(p)), r"^cannot read image '.*x.png' \(not a regular file\)$"),
])
def test_read_image_bad_files_are_one_line_value_errors(tmp_path, make, shown):
    path = tmp_path / "x.png"
    make(path)
    with pytest.raises(ValueError, match=shown) as err:
        images.read_image(str(path))
    _one_line_error(err.value)


def test_image_damaged_inside_or_changed_after_listing_is_a_value_error_naming_it(tmp_path):
    root = _good_folder(tmp_path / "folder")
    damaged = bytearray(_encoded(".png", _image()))
    at = damaged.index(b"IDAT") + 40
    damaged[at:at + 20] = bytes(20)  # header and IEND intact, the compressed pixels not
    (root / "train" / "b" / "1.png").write_bytes(bytes(damaged))
    loader = data.get_data_loader("imagefolder:%s" % root, True, 2, image_size=16,
                                  shuffle=False)
    with pytest.raises(ValueError) as err:
        list(loader)
    assert _one_line_error(err.value).startswith(
        "resattn train: error: imagefolder: %r cannot be decoded (OpenCV could not decode it)"
        % str(root / "train" / "b" / "1.png"))
    val = data.get_dataset("imagefolder:%s" % root, train=False, image_size=16)
    (root / "val" / "a" / "1.png").write_text("replaced by text")
    (root / "val" / "b" / "0.png").unlink()
    with pytest.raises(ValueError, match=r"^imagefolder: '.*val/a/1.png' is not a usable image:"
                                         r" not PNG, JPEG, BMP, GIF, WebP, TIFF, PNM, Sun "
                                         r"raster or Radiance HDR inside; remove or replace "
                                         r"it$"):
        val[1]
    with pytest.raises(ValueError, match=r"^imagefolder: cannot read image '.*val/b/0.png' "
                                         r"\(No such file or directory\), listed when the "
                                         r"dataset"):
        val[2]


# --------------------------------------------------------------------------- records

def _write_records(root, split="train", count=6):
    idx, rec = str(root / (split + ".idx")), str(root / (split + ".rec"))
    writer = mx.recordio.MXIndexedRecordIO(idx, rec, "w")
    for key in range(count):
        header = mx.recordio.IRHeader(0, float(key % 3), key, 0)
        writer.write_idx(key, mx.recordio.pack_img(header, _image(key), img_fmt=".jpg"))
    writer.close()
    offsets = [int(line.split("\t")[1]) for line in open(idx)]
    return root / (split + ".rec"), root / (split + ".idx"), offsets


def _idx(offsets):
    return "".join("%d\t%d\n" % (key, offset) for key, offset in enumerate(offsets))


@pytest.mark.parametrize("damage,shown", [
    ("offset past the end",
     r"^rec: record 5 \(key 5\) of '.*train.idx' starts at byte 99999999, past the end of "
     r"'.*train.rec' \(\d+ bytes\); the .idx does not match the .rec"),
    ("truncated rec",
     r"^rec: record 5 \(key 5\) of '.*train.idx' runs to byte \d+, past the end of "
     r"'.*train.rec' \(\d+ bytes\): the .rec is truncated"),
    ("offset inside a record",
     r"^rec: record 5 \(key 5\) of '.*train.idx': no record starts at byte \d+ of "
     r"'.*train.rec'; it is not a RecordIO file matching its .idx"),
    ("malformed line", r"^rec: line 3 of '.*train.idx' is '2 oops', not 'KEY<tab>OFFSET'"),
    ("empty index", r"^rec: '.*train.idx' lists no records"),
])
def test_record_index_not_matching_the_file_is_refused_when_built(tmp_path, damage, shown):
    rec, idx, offsets = _write_records(tmp_path)
    if damage == "offset past the end":
        idx.write_text(_idx(offsets[:5] + [99999999]))
    elif damage == "truncated rec":
        with open(rec, "r+b") as f:
            f.truncate(offsets[5] + 100)
    elif damage == "offset inside a record":
        idx.write_text(_idx(offsets[:5] + [offsets[5] + 12]))
    elif damage == "malformed line":
        idx.write_text(_idx(offsets[:2]) + "2 oops\n")
    else:
        idx.write_text("\n")
    for build in (lambda: data.get_dataset("rec:%s" % tmp_path),
                  lambda: data.dataset_info("rec:%s" % tmp_path)):
        with pytest.raises(ValueError, match=shown) as err:
            build()
        _one_line_error(err.value)


def test_record_damaged_when_read_is_a_value_error_naming_it(tmp_path):
    rec, idx, offsets = _write_records(tmp_path)
    garbage = mx.recordio.pack(mx.recordio.IRHeader(0, 1.0, 6, 0), b"not an image at all")
    writer = mx.recordio.MXIndexedRecordIO(str(tmp_path / "val.idx"), str(tmp_path / "val.rec"),
                                           "w")
    writer.write_idx(0, garbage)
    writer.write_idx(1, mx.recordio.pack(mx.recordio.IRHeader(0, 2.0, 7, 0), bomb_png()))
    writer.close()
    val = data.get_dataset("rec:%s" % tmp_path, train=False, image_size=16)
    assert len(val) == 2 and val.classes == 3
    with pytest.raises(ValueError, match=r"^rec: record 0 of '.*val.rec' is not a usable "
                                         r"image: not PNG, JPEG, "):
        val[0]
    with pytest.raises(ValueError, match=r"^rec: record 1 of '.*val.rec' is not a usable image:"
                                         r" its header declares 100000x100000 = "):
        val[1]
    train = data.get_dataset("rec:%s" % tmp_path, image_size=16)
    assert train[(5, 0)][0].shape == (3, 16, 16)
    with open(rec, "r+b") as f:
        f.truncate(offsets[5] + 100)  # after the dataset was built
    with pytest.raises(ValueError, match=r"^rec: record 5 of '.*train.rec' runs to byte \d+, "
                                         r"past the end of '.*train.rec' \(\d+ bytes\)"):
        train[(5, 0)]


# --------------------------------------------------------------------------- plain bad paths

def _bad_path(tmp_path, kind):
    if kind == "missing":
        return str(tmp_path / "nowhere")
    if kind == "a file":
        (tmp_path / "file.txt").write_text("x")
        return str(tmp_path / "file.txt")
    if kind == "empty train":
        (tmp_path / "train").mkdir()
        return str(tmp_path)
    (tmp_path / "train" / "cat").mkdir(parents=True)  # a class without images
    (tmp_path / "train" / "cat" / "cat.txt").write_text("x")
    return str(tmp_path)


@pytest.mark.parametrize("kind,folder_error,record_error", [
    ("missing", "folder '.*nowhere/train' does not exist", "file '.*nowhere/train.rec' does not"),
    ("a file", "'.*file.txt' is a file, not a folder", "'.*file.txt' is a file, not a folder"),
    ("empty train", "no class folders in '.*train'", "file '.*train.rec' does not exist"),
    ("class without images", "no usable image in '.*train'.*not named .jpg, .jpeg or .png: "
                             "cat/cat.txt", "file '.*train.rec' does not exist"),
])
def test_plainly_bad_paths_are_one_line_value_errors(tmp_path, kind, folder_error, record_error):
    path = _bad_path(tmp_path, kind)
    calls = [(lambda: data.get_dataset("imagefolder:" + path), "imagefolder: " + folder_error),
             (lambda: data.get_data_loader("rec:" + path, True, 4), "rec: " + record_error)]
    if kind != "class without images":
        calls.append((lambda: data.dataset_info("imagefolder:" + path),
                      "imagefolder: " + folder_error))
    for call, shown in calls:
        with pytest.raises(ValueError, match="^" + shown) as err:
            call()
        _one_line_error(err.value)


# --------------------------------------------------------------------------- command line

def test_train_on_a_hostile_folder_warns_once_and_finishes(hostile_folder, tmp_path):
    out = tmp_path / "run"
    result = run_python("-m", "resattn", "train", "--model", "attention56_cifar",
                        "--width-mult", "0.0625", "--dataset", "imagefolder:%s" % hostile_folder,
                        "--epochs", "1", "--batch-size", "4", "--no-progress", "--out", str(out),
                        timeout=300)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 0, result.stderr
    # One warning (Python shows it with the line that called get_dataset under it).
    messages = [line for line in result.stderr.splitlines() if "Warning: " in line]
    assert len(messages) == 1 and "imagefolder: skipped 13 of 23 files" in messages[0], \
        result.stderr
    assert len(result.stderr.strip().splitlines()) <= 2, result.stderr
    assert (out / "last.params").is_file()
    # And with nothing usable left, one line and status 2.
    for path in (hostile_folder / "train" / "b").iterdir():
        path.unlink()
    for path in (hostile_folder / "train" / "a").glob("[0-9].png"):
        path.unlink()
    for name in ODD_BUT_VALID:
        (hostile_folder / "train" / "a" / name).unlink()
    result = run_python("-m", "resattn", "train", "--model", "attention56_cifar",
                        "--width-mult", "0.0625", "--dataset", "imagefolder:%s" % hostile_folder,
                        "--epochs", "1", "--no-progress", "--out", str(tmp_path / "run2"),
                        timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith(
        "resattn train: error: imagefolder: no usable image in %r" % str(hostile_folder / "train"))
