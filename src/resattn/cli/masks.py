"""``resattn masks``: draw (and score) the soft masks of a trained model."""

import numpy as np

from ._base import add_model_args, command, load_trained, size_type, weights_data_kwargs

__all__ = ["load_images", "denormalise"]


def denormalise(x, mean, std):
    """(N, 3, H, W) normalised batch -> (N, H, W, 3) float images in [0, 1] for plotting
    (:func:`resattn.data.transforms.denormalize`, kept under its 0.1 name)."""
    from ..data.transforms import denormalize
    return denormalize(x, mean, std)


def load_images(paths, transform, max_pixels=None):
    """Read image files (:func:`resattn.data.images.read_image`, size-checked) through
    ``transform`` (:func:`resattn.data.create_transform`); returns (N, 3, H, W) float32."""
    from ..data.images import read_image
    return np.stack([transform(read_image(path, max_pixels=max_pixels)) for path in paths])


def _reduction(text):
    if text in ("mean", "max"):
        return text
    if text.startswith("channel:"):
        try:
            return ("channel", int(text.split(":", 1)[1]))
        except ValueError:
            pass
    raise ValueError("--reduce must be mean, max or channel:K, got %r" % text)


def _masks_args(p):
    add_model_args(p, trained=True)
    p.add_argument("images", nargs="*", help="image files (or use --dataset and --index)")
    p.add_argument("--dataset", default=None, help="take images from this dataset's test split")
    p.add_argument("--index", type=int, nargs="+", default=None, help="test-split indices")
    p.add_argument("--input-size", type=size_type, default=None, help="resize image files to N|HxW")
    p.add_argument("--reduce", default="mean", help="mean, max or channel:K")
    p.add_argument("--score", action="store_true",
                   help="on cluttered-digits: mask mean inside the digit box / outside, per stage")
    p.add_argument("-o", "--out", default="masks.png", help="PNG to write")


@command("masks", "draw each attention module's soft mask over input images", _masks_args)
def _masks(args):
    from ..data import create_transform, dataset_info, get_dataset, resolve_data_config
    from ..masks import capture, score_by_stage
    from ..viz import plot_masks
    if bool(args.images) == bool(args.dataset and args.index):
        raise ValueError("give image files, or --dataset with --index (not both, not neither)")
    reduce = _reduction(args.reduce)
    # The run's config.json (read once, by the loader) names its dataset when --dataset does not.
    net, model, saved = load_trained(
        args, classes=dataset_info(args.dataset)["classes"] if args.dataset else None)
    dataset = args.dataset or saved.get("dataset")
    if args.score and not (dataset or "").startswith("cluttered-digits"):
        raise ValueError("--score needs --dataset cluttered-digits (its digit boxes are known), "
                         "got %r" % dataset)
    info = dataset_info(dataset) if dataset else None
    data_kw = weights_data_kwargs(net)  # the weights' own preprocessing, as eval applies it
    cfg = net.pretrained_cfg
    if data_kw:
        mean, std = data_kw["normalize"]
    elif info is not None:
        mean, std = info["mean"], info["std"]
    else:
        mean, std = cfg.normalization()
    net.hybridize()
    # The test split of --dataset (or of the run's dataset, for --score with image files),
    # built once for --index and --score.
    data = None
    if args.score or not args.images:
        data = get_dataset(dataset, train=False,
                           seed=saved.get("data_seed", saved.get("seed", 0)), **data_kw)
    if args.images:
        given = {"mean": mean, "std": std}
        if args.input_size:
            given["input_size"] = args.input_size
        transform = create_transform(**resolve_data_config(given, model=net, override=True))
        x = load_images(args.images, transform)
    else:
        bad = [i for i in args.index if not 0 <= i < len(data)]
        if bad:
            raise ValueError("--index %s out of range: the %s test split has %d images"
                             % (bad, args.dataset, len(data)))
        x = np.stack([data[i][0].asnumpy() for i in args.index])
    logits, masks = capture(net, x)
    plot_masks(denormalise(x, mean, std), masks, args.out, reduce=reduce,
               title="%s: predicted %s" % (model, ", ".join(map(str, logits.argmax(1)))))
    print("wrote %s (%d images x %d attention modules)" % (args.out, len(x), len(masks)))
    if args.score:
        images = np.stack([data[i][0].asnumpy() for i in range(len(data))])
        scores = score_by_stage(net, images, data.boxes, reduce=reduce, batch_size=120)
        for stage, value in scores.items():
            print("%s mask inside/outside digit box: %.3f" % (stage, value))
    return 0

