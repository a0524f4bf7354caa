"""``resattn predict``: top-k labels of image files, with the weights' own preprocessing.

Images go through the network in batches (``--batch-size``), so memory does
not grow with their number, and each result is printed as soon as its batch
is done. The transform is the weights' (``create_transform(**resolve_data_config(model=net))``),
so a Python user who applies it gets the same numbers.
"""
import os

from .._checks import check_int
from ._base import add_model_args, check_choice, command, load_trained

__all__ = ["FORMATS", "IMAGE_EXTENSIONS", "image_files"]

#: Output formats: a line per image; JSON Lines; CSV (a row per label).
FORMATS = ("text", "json", "csv")
#: What a folder argument contributes (case-insensitive).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def _predict_args(p):
    add_model_args(p, trained=True)
    p.add_argument("images", nargs="+",
                   help="image files (PNG, JPEG, ... as OpenCV reads) or folders of them")
    p.add_argument("-k", "--top-k", type=int, default=5, help="labels per image (5)")
    p.add_argument("--batch-size", type=int, default=32, help="images per forward pass (32)")
    p.add_argument("--format", default="text",
                   help="text (a line per image), json (JSON Lines) or csv (file,rank,label,"
                        "index,probability)")
    p.add_argument("--max-image-pixels", type=int, default=None,
                   help="refuse images that declare more pixels than this (default: "
                        "$RESATTN_MAX_IMAGE_PIXELS or about 89 million, as Pillow)")


def image_files(paths):
    """``(path, explicit)`` for each image: files as given, folders' images sorted, recursively.

    Parameters
    ----------
    paths : sequence of str

    Returns
    -------
    iterator of (str, bool)
        ``explicit`` is False for a file found in a folder (skipped with a
        warning when unreadable, where an explicit one is an error).
    """
    for path in paths:
        if os.path.isdir(path):
            for root, dirs, files in os.walk(path):
                dirs.sort()
                for name in sorted(files):
                    if name.lower().endswith(IMAGE_EXTENSIONS):
                        yield os.path.join(root, name), False
        else:
            yield path, True


class _Writer:
    """Prints one image's top-k as the chosen format says, flushed at once."""

    def __init__(self, fmt, names):
        import sys
        self.fmt, self.names, self.out = fmt, names, sys.stdout
        if fmt == "csv":
            self._row(["file", "rank", "label", "index", "probability"])

    def _emit(self, text):
        # File names that are not UTF-8 travel as their own bytes (surrogate escapes).
        self.out.flush()
        buffer = getattr(self.out, "buffer", None)
        if buffer is None:
            self.out.write(text.encode("utf-8", "surrogateescape").decode("utf-8", "replace"))
            self.out.flush()
            return
        buffer.write(text.encode("utf-8", "surrogateescape"))
        buffer.flush()

    def _row(self, fields):
        import csv
        import io
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow(fields)
        self._emit(buf.getvalue())

    def write(self, path, probs, top):
        import json
        if self.fmt == "text":
            self._emit("%s: %s\n" % (path, ", ".join("%s %.3f" % (self.names[i], probs[i])
                                                     for i in top)))
        elif self.fmt == "json":
            self._emit(json.dumps({"file": path, "top": [
                {"label": self.names[i], "index": int(i), "probability": float(probs[i])}
                for i in top]}) + "\n")
        else:
            for rank, i in enumerate(top, 1):
                self._row([path, rank, self.names[i], int(i), "%.6g" % probs[i]])


@command("predict", "top-k labels of image files, preprocessed as the weights expect",
         _predict_args)
def _predict(args):
    import sys

    import mxnet as mx
    import numpy as np

    from ..data import create_transform, resolve_data_config
    from ..data.images import read_image
    check_choice("--format", args.format, FORMATS)
    for option, value in (("--top-k", args.top_k), ("--batch-size", args.batch_size)):
        check_int(option, value, 1)
    check_int("--max-image-pixels", args.max_image_pixels, 1, allow_none=True)
    net, model, _ = load_trained(args)
    cfg = net.pretrained_cfg
    classes = net.classes
    k = min(args.top_k, classes)
    if cfg.is_default:
        sys.stderr.write("note: %s has no config with its preprocessing; using %s's mean and "
                         "std\n" % (cfg.file, model))
    names = list(cfg.class_names or [str(i) for i in range(classes)])
    if len(names) != classes:
        raise ValueError("the weights' config names %d classes, the classifier has %d"
                         % (len(names), classes))
    transform = create_transform(**resolve_data_config(model=net))
    net.hybridize()
    writer = _Writer(args.format, names)
    batch, paths, done = [], [], 0

    def flush():
        probs = mx.nd.softmax(net(mx.nd.array(np.stack(batch)))).asnumpy()
        for path, p in zip(paths, probs):
            writer.write(path, p, np.argsort(-p, kind="stable")[:k])
        del batch[:], paths[:]

    for path, explicit in image_files(args.images):
        try:
            img = read_image(path, max_pixels=args.max_image_pixels)
        except ValueError as err:
            if explicit:
                raise
            sys.stderr.write("warning: skipped %s\n" % str(err).splitlines()[0])
            continue
        batch.append(transform(img))
        paths.append(path)
        done += 1
        if len(batch) == args.batch_size:
            flush()
    if batch:
        flush()
    if not done:
        raise ValueError("no images in %s (folders contribute %s files)"
                         % (", ".join(args.images), ", ".join(IMAGE_EXTENSIONS)))
    return 0
