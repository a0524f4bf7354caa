"""Tests of resattn.data on offline data only: sklearn's digits and files written here."""
import time

import cv2
import mxnet as mx
import numpy as np
import pytest

from conftest import run_python
from resattn import data
from resattn.data import registry
from resattn.data.synthetic import _split_seed

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def _raw(dataset, x):
    """Undo the normalisation of an item: (3, H, W) NDArray -> (H, W, 3) in [0, 1]."""
    p = dataset.preprocess
    return x.asnumpy().transpose(1, 2, 0) * p.std + p.mean


def _placement(aug, ref, pad):
    """The (dy, dx, flipped) for which ``aug`` is a zero-padded crop of ``ref``, or None."""
    h, w = ref.shape[:2]
    for flipped, img in ((False, ref), (True, ref[:, ::-1])):
        padded = np.pad(img, ((pad, pad), (pad, pad), (0, 0)))
        for dy in range(2 * pad + 1):
            for dx in range(2 * pad + 1):
                if np.allclose(aug, padded[dy:dy + h, dx:dx + w], atol=1e-5):
                    return dy, dx, flipped
    return None


class FakeCIFAR:
    """Stands in for gluon's CIFAR10/100: records its arguments, never downloads."""
    calls = []

    def __init__(self, root=None, train=True):
        FakeCIFAR.calls.append(dict(root=root, train=train))
        rng = np.random.RandomState(1 if train else 2)
        self._data = mx.nd.array(rng.randint(0, 256, (20, 32, 32, 3)), dtype=np.uint8)
        self._label = rng.randint(0, 10, 20).astype(np.int32)

    def __getitem__(self, idx):
        return self._data[idx], self._label[idx]

    def __len__(self):
        return len(self._label)


@pytest.fixture
def fake_cifar(monkeypatch):
    FakeCIFAR.calls = []
    monkeypatch.setattr(mx.gluon.data.vision, "CIFAR10", FakeCIFAR)
    monkeypatch.setattr(mx.gluon.data.vision, "CIFAR100", FakeCIFAR)
    return FakeCIFAR


# BGR, as cv2 writes: pure red, green and blue images.
COLOURS = {"a": (0, 0, 255), "b": (0, 255, 0), "c": (255, 0, 0)}


def _solid(bgr, h=30, w=40):
    return np.tile(np.array(bgr, np.uint8), (h, w, 1))


def _expected_x(bgr):
    rgb = np.array(bgr[::-1], np.float32) / 255
    return (rgb - IMAGENET_MEAN) / IMAGENET_STD


@pytest.fixture
def image_folder(tmp_path):
    for split, count in (("train", 3), ("val", 2)):
        for name, bgr in COLOURS.items():
            folder = tmp_path / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                cv2.imwrite(str(folder / ("%d.png" % i)), _solid(bgr, 30 + i, 40))
    return tmp_path


@pytest.fixture
def record_dir(tmp_path):
    for split, count in (("train", 3), ("val", 2)):
        rec = mx.recordio.MXIndexedRecordIO(str(tmp_path / (split + ".idx")),
                                            str(tmp_path / (split + ".rec")), "w")
        key = 0
        for label, bgr in enumerate(COLOURS.values()):
            for i in range(count):
                header = mx.recordio.IRHeader(0, float(label), key, 0)
                rec.write_idx(key, mx.recordio.pack_img(header, _solid(bgr, 40, 30 + i),
                                                        img_fmt=".png"))
                key += 1
        rec.close()
    return tmp_path


# --------------------------------------------------------------------------- digits

def test_digits_split_is_fixed_stratified_and_disjoint():
    train_x, train_y, train_i = data.digits_split(True)
    test_x, test_y, test_i = data.digits_split(False)
    assert (len(train_y), len(test_y)) == (1437, 360)
    assert train_x.shape == (1437, 8, 8) and train_x.dtype == np.float32
    assert 0 <= train_x.min() and train_x.max() <= 1
    assert sorted(np.concatenate([train_i, test_i]).tolist()) == list(range(1797))
    counts = np.bincount(test_y, minlength=10)
    assert counts.min() >= 34 and counts.max() <= 37
    again = data.digits_split(False)
    assert np.array_equal(again[0], test_x) and np.array_equal(again[2], test_i)


def test_digits_items_shape_dtype_and_normalisation():
    train = data.get_dataset("digits", augment=False)
    assert len(train) == 1437 and len(data.get_dataset("digits", train=False)) == 360
    x, y = train[0]
    assert isinstance(x, mx.nd.NDArray) and x.shape == (3, 32, 32) and x.dtype == np.float32
    assert isinstance(y, np.int32)
    xs = np.stack([train[i][0].asnumpy() for i in range(len(train))])
    np.testing.assert_allclose(xs.mean(axis=(0, 2, 3)), 0, atol=1e-3)
    np.testing.assert_allclose(xs.std(axis=(0, 2, 3)), 1, atol=1e-3)
    assert np.array_equal(xs[:, 0], xs[:, 2])


def test_digits_statistics_match_the_data():
    info = data.dataset_info("digits")
    assert info["classes"] == 10 and info["input_size"] == 32 and info["offline"]
    images = data.digits_split(True)[0]
    big = np.stack([cv2.resize(im, (32, 32), interpolation=cv2.INTER_LINEAR) for im in images])
    np.testing.assert_allclose(info["mean"], [big.mean()] * 3, rtol=1e-5)
    np.testing.assert_allclose(info["std"], [big.std()] * 3, rtol=1e-5)
    # Bilinear upscaling keeps the mean of the 8x8 originals.
    assert abs(info["mean"][0] - images.mean()) < 0.01


def test_augmentation_is_seeded_by_numpy():
    train = data.get_dataset("digits")
    np.random.seed(0)
    a = train[7][0].asnumpy()
    np.random.seed(0)
    b = train[7][0].asnumpy()
    assert np.array_equal(a, b)
    draws = {train[(7, key)][0].asnumpy().tobytes() for key in range(20)}
    assert len(draws) > 5
    assert np.array_equal(train[(7, 3)][0].asnumpy(), train[(7, 3)][0].asnumpy())


def test_digits_are_shifted_but_never_flipped():
    train = data.get_dataset("digits", subset=5)
    plain = data.get_dataset("digits", augment=False, subset=5)
    shifts = set()
    for i in range(5):
        ref = _raw(plain, plain[i][0])
        for key in range(10):
            found = _placement(_raw(train, train[(i, 10 * i + key)][0]), ref, pad=4)
            assert found is not None and not found[2]
            shifts.add(found[:2])
    assert len(shifts) > 10


def test_evaluation_items_are_not_augmented():
    test = data.get_dataset("digits", train=False, cutout=8)
    assert not test.augment
    assert np.array_equal(test[(0, 1)][0].asnumpy(), test[(0, 2)][0].asnumpy())


# --------------------------------------------------------------------------- cifar wiring

def test_cifar_wiring_crops_and_flips(fake_cifar, tmp_path):
    train = data.get_dataset("cifar10", root=str(tmp_path), subset=4)
    assert fake_cifar.calls == [dict(root=str(tmp_path), train=True)]
    test = data.get_dataset("cifar100", train=False)
    assert fake_cifar.calls[-1] == dict(root=None, train=False)
    assert len(train) == 4 and len(test) == 20
    x, y = test[3]
    img, label = FakeCIFAR(train=False)[3]
    expected = (img.asnumpy() / 255 - np.array((0.5071, 0.4865, 0.4409))) \
        / np.array((0.2673, 0.2564, 0.2762))
    np.testing.assert_allclose(x.asnumpy().transpose(1, 2, 0), expected, atol=1e-5)
    assert y == label
    ref = FakeCIFAR(train=True)[0][0].asnumpy() / 255
    flips = [_placement(_raw(train, train[(0, key)][0]), ref, pad=4)[2] for key in range(16)]
    assert any(flips) and not all(flips)
    assert data.dataset_info("cifar10") == dict(
        classes=10, input_size=32, mean=(0.4914, 0.4822, 0.4465),
        std=(0.2023, 0.1994, 0.2010), offline=False, class_names=(
            "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
            "truck"))


# --------------------------------------------------------------------------- cutout

def test_cutout_zeroes_one_clipped_square():
    img = np.ones((32, 32, 3), np.float32)
    sizes = set()
    for seed in range(50):
        out = data.cutout(img, 8, np.random.RandomState(seed))
        ys, xs = np.nonzero(out[:, :, 0] == 0)
        h, w = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
        assert len(ys) == h * w and h <= 8 and w <= 8
        assert (out[ys, xs] == 0).all() and (out == 0).sum() == 3 * h * w
        sizes.add((h, w))
    assert (8, 8) in sizes
    assert data.cutout(img, 0, np.random.RandomState(0)) is img


def test_cutout_in_a_dataset_zeroes_a_square_after_normalisation():
    aug = data.get_dataset("cluttered-digits", augment=True, cutout=10, subset=3)
    plain = data.get_dataset("cluttered-digits", augment=False, subset=3)
    for i in range(3):
        a, p = aug[(i, 5)][0].asnumpy(), plain[i][0].asnumpy()
        changed = np.nonzero((a != p).any(axis=0))
        assert (a[:, changed[0], changed[1]] == 0).all()
        assert 0 < len(changed[0]) <= 100


# --------------------------------------------------------------------------- cluttered digits

def test_cluttered_digits_are_deterministic_per_seed():
    a = data.ClutteredDigits(train=True, seed=0)
    b = data.ClutteredDigits(train=True, seed=0)
    c = data.ClutteredDigits(train=True, seed=1)
    test = data.ClutteredDigits(train=False, seed=0)
    assert (len(a), len(test)) == (1437, 360)
    assert np.array_equal(a._source.images, b._source.images)
    assert np.array_equal(a.boxes, b.boxes)
    assert not np.array_equal(a._source.images, c._source.images)
    assert not np.array_equal(a.boxes, c.boxes)
    assert np.array_equal(a._source.labels, data.digits_split(True)[1])
    assert np.array_equal(test._source.labels, data.digits_split(False)[1])
    x, y = a[0]
    assert x.shape == (3, 64, 64) and x.dtype == np.float32 and y == a._source.labels[0]
    raw = a.raw_image(0)
    assert raw.shape == (64, 64, 3) and raw.dtype == np.float32
    assert 0 <= raw.min() and raw.max() <= 1
    np.testing.assert_allclose(_raw(a, x), raw, atol=1e-5)


def test_cluttered_digits_boxes_hold_the_digit():
    cluttered = data.ClutteredDigits(train=False, seed=3)
    clean = data.ClutteredDigits(train=False, seed=3, clutter=(0, 0))
    boxes = cluttered.boxes
    assert boxes.shape == (360, 4) and np.issubdtype(boxes.dtype, np.integer)
    assert np.array_equal(boxes, clean.boxes)
    side = boxes[:, 2] - boxes[:, 0]
    assert np.array_equal(side, boxes[:, 3] - boxes[:, 1])
    assert side.min() >= 20 and side.max() <= 28
    assert boxes[:, :2].min() >= 0 and boxes[:, 2:].max() <= 64
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        img, digit = cluttered.raw_image(i)[:, :, 0], clean.raw_image(i)[:, :, 0]
        inside = np.zeros(img.shape, bool)
        inside[y0:y1, x0:x1] = True
        assert digit[~inside].max() == 0 and digit[inside].sum() > 10
        assert (img >= digit).all()
        # The box is far denser than the clutter around it.
        assert img[inside].mean() > 2 * img[~inside].mean()
        assert img[~inside].sum() > 0


def test_cluttered_digits_generation_is_fast_and_info_matches():
    images = data.digits_split(True)[0]
    start = time.perf_counter()
    canvases, _ = data.make_cluttered_digits(images, seed=123)
    assert time.perf_counter() - start < 2.0
    info = data.dataset_info("cluttered-digits")
    assert info["input_size"] == 64 and info["classes"] == 10 and info["offline"]
    reference, _ = data.make_cluttered_digits(images, _split_seed(0, True))
    np.testing.assert_allclose(info["mean"], [reference.mean()] * 3, rtol=1e-5)
    np.testing.assert_allclose(info["std"], [reference.std()] * 3, rtol=1e-5)


# --------------------------------------------------------------------------- folders, records

def test_image_folder_round_trip(image_folder):
    name = "imagefolder:%s" % image_folder
    assert data.dataset_info(name) == dict(classes=3, input_size=224, mean=(0.485, 0.456, 0.406),
                                           std=(0.229, 0.224, 0.225), offline=True,
                                           class_names=("a", "b", "c"))
    val = data.get_dataset(name, train=False, image_size=16)
    assert len(val) == 6 and val.synsets == ["a", "b", "c"]
    for i in range(len(val)):
        x, y = val[i]
        bgr = list(COLOURS.values())[int(y)]
        assert x.shape == (3, 16, 16)
        np.testing.assert_allclose(x.asnumpy().transpose(1, 2, 0),
                                   np.broadcast_to(_expected_x(bgr), (16, 16, 3)), atol=1e-5)
    train = data.get_dataset(name, train=True)
    assert len(train) == 9 and train[(0, 1)][0].shape == (3, 224, 224)


def test_image_folder_checks_classes_agree(image_folder):
    (image_folder / "train" / "d").mkdir()
    with pytest.raises(ValueError, match="differ"):
        data.get_dataset("imagefolder:%s" % image_folder, train=False)


def test_record_round_trip(record_dir):
    name = "rec:%s" % record_dir
    info = data.dataset_info(name)
    assert info["classes"] == 3 and info["input_size"] == 224 and info["offline"]
    val = data.get_dataset(name, train=False, image_size=24)
    assert len(val) == 6 and val.classes == 3
    labels = []
    for i in range(len(val)):
        x, y = val[i]
        labels.append(int(y))
        np.testing.assert_allclose(x.asnumpy().transpose(1, 2, 0), np.broadcast_to(
            _expected_x(list(COLOURS.values())[int(y)]), (24, 24, 3)), atol=1e-5)
    assert labels == [0, 0, 1, 1, 2, 2]
    loader = data.get_data_loader(name, True, batch_size=4, image_size=24)
    batches = list(loader)
    assert len(batches) == 2 and batches[0][0].shape == (4, 3, 24, 24)


# --------------------------------------------------------------------------- loaders

@pytest.mark.parametrize("length,parts", [(10, 3), (1437, 4), (5, 5), (2, 3)])
def test_shards_are_disjoint_nearly_equal_and_cover(length, parts):
    shards = [data.shard_indices(length, parts, k) for k in range(parts)]
    together = np.concatenate(shards)
    assert sorted(together.tolist()) == list(range(length))
    sizes = [len(s) for s in shards]
    assert max(sizes) - min(sizes) <= 1


def test_sharded_loaders_cover_the_evaluation_set():
    kwargs = dict(subset=50)
    full = np.concatenate([x.asnumpy() for x, _ in
                           data.get_data_loader("digits", False, 8, **kwargs)])
    parts = [np.concatenate([x.asnumpy() for x, _ in data.get_data_loader(
        "digits", False, 8, num_parts=3, part_index=k, **kwargs)]) for k in range(3)]
    assert [len(p) for p in parts] == [17, 17, 16]
    key = lambda a: sorted(map(bytes, a.reshape(len(a), -1)))  # noqa: E731
    assert key(np.concatenate(parts)) == key(full)


def test_sharded_training_loaders_stay_in_step():
    lengths = [len(data.get_data_loader("digits", True, 4, num_parts=3, part_index=k,
                                        subset=50)) for k in range(3)]
    assert lengths == [4, 4, 4]
    loader = data.get_data_loader("digits", True, 4, subset=50)
    assert all(x.shape == (4, 3, 32, 32) and y.dtype == np.int32 for x, y in loader)


def test_loader_batches_depend_on_the_seed_not_the_workers():
    def batches(seed, workers):
        np.random.seed(seed)
        loader = data.get_data_loader("digits", True, 8, num_workers=workers, subset=32)
        return [(x.asnumpy(), y.asnumpy()) for x, y in loader]

    a, b, c = batches(5, 0), batches(5, 2), batches(6, 0)
    assert len(a) == 4
    assert all(np.array_equal(p[0], q[0]) and np.array_equal(p[1], q[1]) for p, q in zip(a, b))
    assert not all(np.array_equal(p[0], q[0]) for p, q in zip(a, c))


# --------------------------------------------------------------------------- errors

@pytest.mark.parametrize("call,shown", [
    (lambda: data.get_dataset("cifar-10"), "'cifar-10'.*did you mean 'cifar10'"),
    (lambda: data.dataset_info("mnist"), "'mnist'.*cluttered-digits"),
    (lambda: data.get_dataset("imagefolder:"), "'imagefolder:'"),
    (lambda: data.get_dataset("imagefolder:/no/such/dir"), "/no/such/dir/train"),
    (lambda: data.get_dataset("rec:/no/such/dir", train=False), "/no/such/dir/val.rec"),
    (lambda: data.get_dataset("digits", subset=0), "subset.*0"),
    (lambda: data.get_dataset("digits", cutout=-1), "cutout.*-1"),
    (lambda: data.get_dataset("digits", image_size=0), "image_size.*0"),
    (lambda: data.get_dataset("cluttered-digits", seed=-2), "seed.*-2"),
    (lambda: data.get_dataset("digits", root="/tmp/x"), "'/tmp/x'"),
    (lambda: data.get_data_loader("digits", True, 8, num_parts=3, part_index=3),
     r"part_index.*\[0, num_parts=3\).*3"),
    (lambda: data.get_data_loader("digits", True, 8, num_parts=2, part_index=-1),
     "part_index.*-1"),
    (lambda: data.get_data_loader("digits", True, 8, num_parts=0), "num_parts.*0"),
    (lambda: data.get_data_loader("digits", True, 0), "batch_size.*0"),
    (lambda: data.get_data_loader("digits", True, 8, last_batch="drop"), "'drop'"),
    (lambda: data.get_data_loader("digits", True, 64, subset=10), "batch_size=64.*10 items"),
])
def test_bad_arguments_raise_value_error_naming_them(call, shown):
    with pytest.raises(ValueError, match=shown):
        call()


# --------------------------------------------------------------------------- the registry

BUILT_IN = ("cifar10", "cifar100", "digits", "cluttered-digits", "imagefolder:PATH", "rec:PATH")
SQUARES_STATS = ((0.25, 0.25, 0.25), (0.5, 0.5, 0.5))


def _squares(train, **options):
    """A tiny in-memory source: 6 train / 4 test gray 8x8 images, labelled by brightness."""
    n = 6 if train else 4
    return [(np.full((8, 8), 255 * (i % 2), np.uint8), i % 2) for i in range(n)]


def test_datasets_are_what_the_registry_lists():
    assert tuple(data.DATASETS) == tuple(data.list_datasets()) == BUILT_IN
    assert data.DATASETS == BUILT_IN and len(data.DATASETS) == 6 and "digits" in data.DATASETS
    assert repr(data.DATASETS) == repr(BUILT_IN)
    for name in BUILT_IN:
        spec = data.dataset_spec(name)
        assert isinstance(spec, data.DatasetSpec) and spec.pattern == name


def test_registry_imports_without_mxnet():
    code = ("import sys, resattn.data.registry as r; print(', '.join(r.DATASETS)); "
            "assert 'mxnet' not in sys.modules and 'cv2' not in sys.modules, "
            "sorted(m for m in ('mxnet', 'cv2') if m in sys.modules)")
    proc = run_python("-c", code, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ", ".join(BUILT_IN)


def test_a_registered_dataset_works_by_name_and_goes_away(monkeypatch):
    with monkeypatch.context() as m:
        m.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
        spec = data.register_dataset("squares", classes=2, input_size=8, stats=SQUARES_STATS,
                                     flip=False, builder=_squares)
        assert spec.name == "squares" and data.DATASETS == BUILT_IN + ("squares",)
        assert data.dataset_info("squares") == dict(classes=2, input_size=8, mean=(0.25,) * 3,
                                                    std=(0.5,) * 3, offline=True,
                                                    class_names=None)
        test = data.get_dataset("squares", train=False)
        assert len(test) == 4 and test.classes == 2 and test.name == "squares"
        x, y = test[1]
        assert x.shape == (3, 8, 8) and y == 1
        np.testing.assert_allclose(x.asnumpy(), (1 - 0.25) / 0.5)
        loader = data.get_data_loader("squares", True, batch_size=2, image_size=16)
        batches = [(x.shape, y.asnumpy().tolist()) for x, y in loader]
        assert len(batches) == 3 and all(shape == (2, 3, 16, 16) for shape, _ in batches)
        with pytest.raises(ValueError, match="did you mean 'squares'"):
            data.get_dataset("squares2")
        with pytest.raises(ValueError, match="only used by cifar10 and cifar100"):
            data.get_dataset("squares", root="/tmp/x")
    assert data.DATASETS == BUILT_IN
    with pytest.raises(ValueError, match="unknown dataset 'squares'"):
        data.dataset_info("squares")


def test_a_registered_dataset_can_take_a_path_and_measure_itself(monkeypatch, tmp_path):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    seen = []

    @data.register_dataset("counted", classes=lambda path: len(path), input_size=8,
                           stats=lambda path: SQUARES_STATS, takes_path=True)
    def counted(train, path, **options):
        seen.append(dict(options, path=path, train=train))
        return _squares(train)

    assert callable(counted) and "counted:PATH" in data.DATASETS
    name = "counted:%s" % tmp_path
    info = data.dataset_info(name)
    assert info["classes"] == len(str(tmp_path))
    assert (info["mean"], info["std"]) == SQUARES_STATS
    dataset = data.get_dataset(name, subset=3, cutout=2, seed=4)
    assert len(dataset) == 3 and dataset.augment and dataset.name == name
    assert seen == [dict(train=True, path=str(tmp_path), image_size=8, augment=True, cutout=2,
                         seed=4, subset=3)]
    with pytest.raises(ValueError, match="'counted:' needs a path"):
        data.get_dataset("counted:")


@pytest.mark.parametrize("name,kwargs,shown", [
    ("digits", {}, "'digits' is already registered"),
    ("rec", {}, "'rec' is already registered"),
    ("a:b", {}, "without ':'.*'a:b'"),
    ("new", dict(stats=((0.5,) * 3, (0.0,) * 3)), "stats"),
    ("new", dict(classes=0), "classes.*0"),
    ("new", dict(input_size=None), "input_size.*None"),
    ("new", dict(style="large"), "style.*'large'"),
    ("new", dict(builder="not a reference"), "builder of dataset 'new'"),
])
def test_bad_registrations_raise_value_error(monkeypatch, name, kwargs, shown):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    fields = dict(classes=2, input_size=8, stats=SQUARES_STATS, builder=_squares)
    fields.update(kwargs)
    with pytest.raises(ValueError, match=shown):
        data.register_dataset(name, **fields)
    assert data.DATASETS == BUILT_IN


def test_label_noise_replaces_a_seeded_fraction_of_training_labels_only():
    from resattn.data import get_dataset
    clean = get_dataset("digits", train=True, augment=False)
    labels = np.array([clean[i][1] for i in range(len(clean))])
    for fraction in (0.3, 0.5, 0.7):
        noisy = get_dataset("digits", train=True, augment=False, label_noise=fraction, seed=4)
        got = np.array([noisy[i][1] for i in range(len(noisy))])
        wrong = got != labels
        assert wrong.sum() == round(fraction * len(labels))  # every replaced label is wrong
        assert got.min() >= 0 and got.max() <= 9
        again = get_dataset("digits", train=True, augment=False, label_noise=fraction, seed=4)
        assert [again[i][1] for i in range(50)] == list(got[:50])  # seeded
        other = get_dataset("digits", train=True, augment=False, label_noise=fraction, seed=5)
        assert [other[i][1] for i in range(len(other))] != list(got)
    test = get_dataset("digits", train=False, label_noise=0.7)
    true = get_dataset("digits", train=False)
    assert [test[i][1] for i in range(len(test))] == [true[i][1] for i in range(len(true))]
    for bad in (1.0, -0.1, float("nan"), True, "0.3"):
        with pytest.raises(ValueError, match="label noise must be a fraction in"):
            get_dataset("digits", train=True, label_noise=bad)
