"""``resattn predict``: top-k labels of image files, with the weights' own preprocessing."""
from ._base import add_model_args, command, load_trained


def _predict_args(p):
    add_model_args(p, trained=True)
    p.add_argument("images", nargs="+", help="image files (PNG, JPEG, ... as OpenCV reads)")
    p.add_argument("-k", "--top-k", type=int, default=5, help="labels per image (5)")


@command("predict", "top-k labels of image files, preprocessed as the weights expect",
         _predict_args)
def _predict(args):
    import mxnet as mx
    import numpy as np

    from .masks import load_images
    net, model, saved = load_trained(args)
    prep = saved["preprocessing"]
    classes = net.classes
    if not 1 <= args.top_k:
        raise ValueError("--top-k must be >= 1, got %d" % args.top_k)
    k = min(args.top_k, classes)
    if prep["mean"] is None:
        from .. import model_config
        cfg = model_config(model)
        prep = dict(prep, mean=cfg["mean"], std=cfg["std"])
        print("note: %s has no config with its preprocessing; using %s's mean and std"
              % (saved["params_path"], model))
    names = prep.get("class_names") or [str(i) for i in range(classes)]
    if len(names) != classes:
        raise ValueError("the weights' config names %d classes, the classifier has %d"
                         % (len(names), classes))
    x = load_images(args.images, prep["input_size"], prep["mean"], prep["std"])
    net.hybridize()
    probs = mx.nd.softmax(net(mx.nd.array(x))).asnumpy()
    for path, p in zip(args.images, probs):
        top = np.argsort(-p)[:k]
        print("%s: %s" % (path, ", ".join("%s %.3f" % (names[i], p[i]) for i in top)))
    return 0
