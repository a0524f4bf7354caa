"""Draw docs/_static/architecture.png: the network and one attention module.

Run from the repository root (the PNG is committed; rerun after changing
the picture)::

    .venv/bin/python docs/make_diagram.py

Only matplotlib is needed; nothing is imported from resattn, so the picture
shows the paper's structure (Wang et al. 2017, Fig. 2 and Table 1) as
resattn builds it.
"""
import argparse
import os

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Circle, FancyArrowPatch, FancyBboxPatch

TRUNK, MASK, UNIT, HEAD, GREY = "#cfe3f7", "#fbd9b5", "#dcefd2", "#f3c6cf", "#e6e6e6"


def box(ax, x, y, w, h, text, color, size=8.5, weight="normal"):
    """A rounded box centred at (x, y)."""
    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h,
                                boxstyle="round,pad=0.02,rounding_size=0.12",
                                facecolor=color, edgecolor="#444444", linewidth=0.9))
    ax.text(x, y, text, ha="center", va="center", fontsize=size, weight=weight)
    return (x - w / 2, x + w / 2, y - h / 2, y + h / 2)


def arrow(ax, start, end, style="-|>", dashed=False, color="#333333", rad=0.0):
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle=style, mutation_scale=11,
                                 linewidth=1.0, color=color, linestyle="--" if dashed else "-",
                                 connectionstyle="arc3,rad=%g" % rad, shrinkA=0, shrinkB=0))


def draw_network(ax):
    ax.set_xlim(0, 20)
    ax.set_ylim(0, 3.2)
    ax.set_axis_off()
    ax.set_title("Residual Attention Network (ImageNet layout; CIFAR in brackets)",
                 fontsize=11, weight="bold", loc="left")
    items = [
        (1.0, 1.5, "input\n224 [32]", GREY),
        (3.2, 2.2, "stem\n7x7/2 conv, max-pool\n[3x3 conv]", GREY),
        (6.2, 2.4, "stage 1 at 56 [32]\nunit + m1 modules\nmask: 3 [2] poolings", MASK),
        (9.3, 2.4, "stage 2 at 28 [16]\nunit/2 + m2 modules\nmask: 2 [1] poolings", MASK),
        (12.4, 2.4, "stage 3 at 14 [8]\nunit/2 + m3 modules\nmask: 1 [0] poolings", MASK),
        (15.6, 2.4, "final units at 7 [8]\nBN-ReLU\nglobal avg pool", UNIT),
        (18.6, 1.6, "output\nDense", HEAD),
    ]
    edges = []
    for x, w, text, color in items:
        edges.append(box(ax, x, 1.9, w, 1.45, text, color, size=8))
    for (_, right, _, _), (left, _, _, _) in zip(edges, edges[1:]):
        arrow(ax, (right, 1.9), (left, 1.9))
    ax.annotate("", xy=(16.8, 0.55), xytext=(2.1, 0.55),
                arrowprops=dict(arrowstyle="-", color="#777777", linewidth=0.8))
    for x, label in ((3.2, "features[0]"), (6.2, "features[1]"), (9.3, "features[2]"),
                     (12.4, "features[3]"), (15.6, "features[4]"), (18.6, "output")):
        ax.text(x, 0.3, label, ha="center", va="center", fontsize=8, family="monospace",
                color="#555555")
    ax.text(10, 3.05, "depth 36m + 20 with modules (m-1, m, m+1) per stage, e.g. "
            "Attention-56: (1, 1, 1), Attention-92: (1, 2, 3)",
            ha="center", fontsize=8.5, style="italic")


def draw_module(ax):
    ax.set_xlim(0, 21)
    ax.set_ylim(0.3, 10.2)
    ax.set_axis_off()
    ax.set_title("AttentionModule(channels, stage=1, p, t, r): output = (1 + M(x)) * T(x)",
                 fontsize=11, weight="bold", loc="left")
    y_main, y_trunk = 7.6, 9.2
    box(ax, 0.6, y_main, 0.9, 0.8, "x", GREY, size=10)
    box(ax, 2.2, y_main, 1.8, 1.0, "p pre-\nprocessing\nunits", UNIT)
    arrow(ax, (1.05, y_main), (1.3, y_main))
    # trunk branch
    box(ax, 9.7, y_trunk, 9.4, 0.85, "trunk branch T(x): t residual units (full resolution)",
        TRUNK, size=9.5)
    arrow(ax, (3.1, y_main + 0.2), (5.0, y_trunk), rad=-0.15)
    # mask branch, bottom-up: a max-pooling (3x3, stride 2) then units, per level
    down = [(4.4, 6.2, "max-pool /2\nr units\n(level 1)"),
            (6.3, 4.7, "max-pool /2\nr units\n(level 2)"),
            (8.4, 3.2, "max-pool /2\n2r units\n(bottom)")]
    prev = (3.1, y_main - 0.3)
    for x, y, text in down:
        left, right, _, _ = box(ax, x, y, 1.7, 1.1, text, MASK)
        arrow(ax, prev, (left, y + 0.25))
        prev = (right, y - 0.25)
    # top-down: bilinear upsampling to the size of the tensor it is added to
    ups = [(10.6, 4.7, "upsample to\nlevel-2 size,\n+ skip; r units"),
           (12.7, 6.2, "upsample to\nlevel-1 size,\n+ skip; r units"),
           (14.9, 7.3, "upsample to\nT's size")]
    prev = (9.25, 3.2 + 0.25)
    for x, y, text in ups:
        left, right, _, _ = box(ax, x, y, 1.8, 1.1, text, MASK)
        arrow(ax, prev, (left, y - 0.25))
        prev = (right, y + 0.25)
    # skip connections: one residual unit each
    for (x0, y), x1 in (((4.4, 6.2), 12.7), ((6.3, 4.7), 10.6)):
        sx = (x0 + x1) / 2
        box(ax, sx, y, 1.4, 0.55, "skip unit", UNIT, size=8)
        arrow(ax, (x0 + 0.85, y), (sx - 0.7, y))
        arrow(ax, (sx + 0.7, y), (x1 - 0.9, y))
    # the gluoncv variant's extra additions (dashed)
    orange = "#b05a00"
    arrow(ax, (6.3, 4.15), (10.6, 4.15), dashed=True, color=orange, rad=0.3)
    arrow(ax, (4.4, 5.65), (12.7, 5.65), dashed=True, color=orange, rad=0.12)
    arrow(ax, (14.45, y_trunk - 0.43), (16.2, 6.1), dashed=True, color=orange, rad=0.35)
    ax.text(12.9, 2.15, "dashed: added only with variant='gluoncv' (the down-path feature\n"
            "at each level, and T before the head); 'official' follows the Caffe prototxt",
            fontsize=7.5, color=orange, ha="center")
    # head, merge and post-processing
    box(ax, 17.1, 4.3, 3.0, 1.3, "mask head:\nBN-ReLU-1x1, BN-ReLU-1x1,\n"
        "f: sigmoid (mixed) / L2 norm\n(channel) / sigmoid of std. map\n(spatial)", HEAD, size=7.5)
    arrow(ax, (15.8, 7.05), (16.6, 4.95), rad=0.1)
    ax.add_patch(Circle((18.6, y_main), 0.62, facecolor="white", edgecolor="#444444",
                        linewidth=1.0))
    ax.text(18.6, y_main, "(1+M)\n* T", ha="center", va="center", fontsize=8.5, weight="bold")
    arrow(ax, (14.4, y_trunk), (18.2, y_main + 0.48), rad=-0.2)
    arrow(ax, (18.0, 4.95), (18.6, y_main - 0.62), rad=0.15)
    ax.text(18.75, 5.75, "M(x)", fontsize=8.5, ha="left")
    box(ax, 20.35, y_main, 1.1, 1.0, "p post\nunits", UNIT)
    arrow(ax, (19.22, y_main), (19.8, y_main))
    ax.text(5.6, 1.2, "soft mask branch: 4 - stage max-poolings bottom-up (r units after each,\n"
            "2r at the bottom), then bilinear upsampling top-down to T's size: an hourglass",
            fontsize=8.5, ha="center", style="italic")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--out", default=os.path.join(os.path.dirname(
        os.path.abspath(__file__)), "_static", "architecture.png"))
    parser.add_argument("--dpi", type=int, default=110)
    args = parser.parse_args(argv)
    fig = Figure(figsize=(13, 9.2), dpi=args.dpi)
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(2, 1, height_ratios=(3.0, 9.0), hspace=0.08)
    draw_network(fig.add_subplot(grid[0]))
    draw_module(fig.add_subplot(grid[1]))
    fig.subplots_adjust(left=0.01, right=0.99, top=0.96, bottom=0.01)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    fig.savefig(args.out, dpi=args.dpi)
    print("wrote %s" % args.out)


if __name__ == "__main__":
    main()
