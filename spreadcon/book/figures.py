"""Figures that show rather than tell: the data, the proxies' groups, Thanos drawn, and a slider over alpha.

Book helpers, not training code. Every figure is drawn from the data or from the
package (never from numbers typed here), is at most :data:`PAGE_WIDTH` inches
wide, and writes its text at :data:`FONT` points or more, so that on the page,
where a figure no wider than the text column is shown at its own size, no text
is smaller than 9 pt.

| function | what it draws | chapter |
|---|---|---|
| :func:`sample_grid` | real images, one row per fine class, rows grouped under their coarse class | 1, 5 |
| :func:`proxy_grid` | a robustness proxy, one row per group, with the group's size in training | 6 |
| :func:`thanos_diagram` | Thanos's two backbones, their losses, the concatenation and the probe | 4 |
| :func:`spread_slider_html` | alpha against rho*(alpha), and a class's points on the circle, as a slider | 2 |

Example:
    >>> import matplotlib; matplotlib.use("Agg")
    >>> fig = thanos_diagram()
    >>> any("concatenate" in t.get_text() for t in fig.axes[0].texts)
    True
"""

from __future__ import annotations

import math
import re
from typing import NamedTuple, Sequence

import numpy as np
import torch

__all__ = ["PAGE_WIDTH", "FONT", "sample_grid", "proxy_grid", "thanos_graph", "thanos_diagram",
           "arc_angles", "spread_animation", "spread_slider_html", "offline_jshtml"]

#: inches: the widest figure here; the book's text column is wider (about 7.3 inches at 100 dpi)
PAGE_WIDTH = 6.5
#: points: the smallest text in these figures (shown at its own size, so at least 9 pt on the page)
FONT = 10


def _plain(text: str) -> str:
    """``text`` for a matplotlib label, with ``$`` escaped so a dataset's name never turns into mathtext."""
    return str(text).replace("$", r"\$")


# --------------------------------------------------------------------------- image grids


def _images(split, idx: torch.Tensor) -> torch.Tensor:
    """uint8 ``(k, C, H, W)`` images ``idx`` of ``split``, in memory or read from their files."""
    if split.images is not None:
        return split.images[idx.to(split.images.device)].cpu()
    return torch.stack([split.reader(split.files[i]) for i in idx.tolist()])


def _pick(labels: torch.Tensor, value: int, k: int, generator: torch.Generator) -> torch.Tensor:
    """Up to ``k`` indices where ``labels == value``, drawn without replacement with ``generator``."""
    idx = (labels == value).nonzero().flatten()
    return idx[torch.randperm(len(idx), generator=generator)[:k]]


def _strip(images: torch.Tensor) -> np.ndarray:
    """uint8 ``(k, C, H, W)`` → the images side by side, ``(H, k W)`` (grey) or ``(H, k W, C)``."""
    x = images.permute(2, 0, 3, 1)                      # (H, k, W, C)
    h, k, w, c = x.shape
    x = x.reshape(h, k * w, c).numpy()
    return x[..., 0] if c == 1 else x


def _draw_strip(ax, images: torch.Tensor, label: str) -> None:
    """One row: ``images`` side by side on ``ax``, thin white lines between them, ``label`` on the left."""
    if len(images):
        strip = _strip(images)
        ax.imshow(strip, cmap="gray" if strip.ndim == 2 else None, vmin=0, vmax=255, interpolation="nearest")
        w = images.shape[-1]
        for j in range(1, len(images)):
            ax.axvline(j * w - 0.5, color="white", lw=1)
    else:                                                # a class or group without images in this split
        ax.text(0.02, 0.5, "no images in this split", transform=ax.transAxes, va="center", fontsize=FONT)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_ylabel(_plain(label), rotation=0, ha="right", va="center", fontsize=FONT)


def sample_grid(ds, *, per_fine: int = 8, split: str = "train", coarse: Sequence[int | str] | None = None,
                fines_per_coarse: int | None = None, columns: int | None = None, seed: int = 0):
    """Real images of ``ds``, one row per fine class, the rows grouped under their coarse class.

    Each group starts with its coarse class's name (bold); each row holds
    ``per_fine`` images of one fine class, drawn at random (seeded) from
    ``split`` and labelled with the fine class's name. The groups fill
    ``columns`` columns side by side, left to right, then down.

    Args:
        ds: a :class:`spreadcon.data.Dataset` (from :func:`spreadcon.data.load`).
        per_fine: images per row.
        split: which split the images come from.
        coarse: the coarse classes to show, by id or name; default all.
        fines_per_coarse: at most this many fine classes per coarse class
            (the first ones by id); default all.
        columns: groups side by side; default all of them in one line.
        seed: which images are drawn.

    Returns:
        A matplotlib Figure with one axes per fine class shown.

    Raises:
        ValueError: an unknown coarse class, ``per_fine < 1`` or ``columns < 1``.
    """
    import matplotlib.pyplot as plt

    if per_fine < 1:
        raise ValueError(f"per_fine={per_fine!r} must be at least 1")
    s = ds.splits[split]
    shown = list(range(ds.n_coarse)) if coarse is None else [_coarse_id(ds, c) for c in coarse]
    columns = len(shown) if columns is None else int(columns)
    if columns < 1:
        raise ValueError(f"columns={columns!r} must be at least 1")
    # (column, first row, coarse id, its fine ids) of each group: left to right, then down
    groups, depth = [], [0] * columns
    for k, c in enumerate(shown):
        fines = sorted(set(s.fine[s.coarse == c].tolist()))[:fines_per_coarse]
        col = k % columns
        groups.append((col, depth[col], c, fines))
        depth[col] += len(fines)
    _, h, w = ds.image_shape
    longest = max(len(ds.fine_names[f]) for *_, fs in groups for f in fs)
    label_w = 0.1 + 0.075 * longest                    # inches taken by a row's label at FONT points
    tile = min(0.6, (PAGE_WIDTH / columns - label_w) / per_fine)
    heads = max(sum(1 for g in groups if g[0] == col) for col in range(columns))
    fig = plt.figure(figsize=(PAGE_WIDTH, max(depth) * tile * h / w * 1.12 + 0.3 * heads), layout="constrained")
    grid = fig.add_gridspec(max(depth), columns)
    gen = torch.Generator().manual_seed(seed)
    for col, top, c, fines in groups:
        for row, f in enumerate(fines):
            ax = fig.add_subplot(grid[top + row, col])
            _draw_strip(ax, _images(s, _pick(s.fine, f, per_fine, gen)), ds.fine_names[f])
            if row == 0:
                ax.set_title(_plain(ds.coarse_names[c]), loc="left", fontsize=FONT + 1, fontweight="bold")
    return fig


def _coarse_id(ds, c: int | str) -> int:
    if isinstance(c, str):
        if c not in ds.coarse_names:
            raise ValueError(f"coarse={c!r} is not a coarse class of {ds.name}; valid: {', '.join(ds.coarse_names)}")
        return ds.coarse_names.index(c)
    if not 0 <= int(c) < ds.n_coarse:
        raise ValueError(f"coarse={c!r} is not a coarse class id of {ds.name} (0..{ds.n_coarse - 1})")
    return int(c)


def proxy_grid(ds, *, per_group: int = 10, split: str = "train", seed: int = 0):
    """A robustness proxy (``mnist-cifar``, ``cifar-patch``): one row per group, with its size in training.

    Row ``g`` holds ``per_group`` images of group ``g`` (``2 × class +
    attribute``) drawn at random (seeded) from ``split``; its label is the
    group's name and the number of images of that group in ``ds``'s training
    split, so the rare groups are visibly rare.

    Returns:
        A matplotlib Figure with one axes per group.

    Raises:
        ValueError: ``ds`` has no groups.
    """
    import matplotlib.pyplot as plt

    from spreadcon.book.proxies import group_counts

    if not ds.group_names or ds.splits[split].group is None:
        raise ValueError(f"dataset {ds.name!r} has no groups (a robustness dataset has)")
    counts = group_counts(ds.splits["train"].group, list(ds.group_names))
    s = ds.splits[split]
    _, h, w = ds.image_shape
    label_w = 0.2 + 0.075 * max(len(n) for n in ds.group_names)
    tile = min(0.6, (PAGE_WIDTH - label_w) / per_group)
    fig = plt.figure(figsize=(PAGE_WIDTH, len(counts) * tile * h / w * 1.1 + 0.2), layout="constrained")
    gen = torch.Generator().manual_seed(seed)
    for g, (name, n, frac) in enumerate(counts):
        ax = fig.add_subplot(len(counts), 1, g + 1)
        _draw_strip(ax, _images(s, _pick(s.group, g, per_group, gen)), f"{name}\n{n:,} in training ({frac:.1%})")
    return fig


# --------------------------------------------------------------------------- Thanos drawn


class Box(NamedTuple):
    """A box of the diagram: centre ``(x, y)`` in diagram units, its text and its kind (sets the colour)."""

    x: float
    y: float
    text: str
    kind: str


#: what each training term of :mod:`spreadcon.methods` looks like in the diagram
TERM_TEXT = {
    "ce": "CE head\n(coarse y)",
    "supcon": "SupCon\n(coarse y)",
    "spread": "L_spread(α) =\n(1−α) SupCon\n+ α cNCE\n(coarse y)",
    "simclr": "SimCLR\n(no label)",
    "recon": "decoder: z → x̂\n(no label input)\nMSE(x̂, x)",
}
_COLOURS = {"data": "#eeeeee", "net": "#cfe2f3", "emb": "#fff2cc", "loss": "#f4cccc", "eval": "#d9ead3"}
#: diagram units are inches: the width of the figure, and where training ends and evaluation begins
_WIDTH, _HEIGHT, _DIVIDE = PAGE_WIDTH, 4.5, 4.15


def thanos_graph(method: str = "thanos") -> tuple[dict[str, Box], list[tuple[str, str]]]:
    """The boxes and arrows of ``method``'s diagram, read from :mod:`spreadcon.methods`.

    One branch per backbone in ``get_method(method).backbones``; each branch
    is an encoder, its embedding ``z_i`` and one loss box per term of that
    backbone's method (``get_method(b).terms``), on the outer side of the
    branch. The embeddings meet in a concatenation that feeds the linear probe.

    Returns:
        ``(boxes, edges)``: boxes by name (centres in inches); edges as ``(from, to)`` names.

    Example:
        >>> boxes, edges = thanos_graph()
        >>> [k for k in boxes if k.startswith("enc")], ("z2", "autoencoder:recon") in edges
        (['enc1', 'enc2'], True)
    """
    from spreadcon.methods import get_method

    backbones = get_method(method).backbones
    if len(backbones) != 2:
        raise ValueError(f"method {method!r} has {len(backbones)} backbones; the diagram draws two (thanos, "
                         "thanos-quirks, the pair controls)")
    mid = 2.05
    names = [f"z{i}" for i in (1, 2)]
    boxes = {"x": Box(0.42, mid, "image x\n(2 views)", "data"),
             "cat": Box(4.72, mid, f"concatenate\n[{', '.join(names)}]\n(frozen)", "emb"),
             "probe": Box(5.86, mid, "linear probe:\nfine labels,\nor Group DRO", "eval")}
    edges = [("cat", "probe")]
    for i, (b, y, side) in enumerate(zip(backbones, (mid + 0.62, mid - 0.62), (1, -1)), start=1):
        boxes[f"enc{i}"] = Box(1.55, y, f"encoder {i}:\n{b}", "net")
        boxes[f"z{i}"] = Box(2.62, y, f"z{i}", "emb")
        edges += [("x", f"enc{i}"), (f"enc{i}", f"z{i}"), (f"z{i}", "cat")]
        for j, term in enumerate(get_method(b).terms):
            boxes[f"{b}:{term}"] = Box(1.9 + 1.5 * j, y + side * 1.05, TERM_TEXT[term], "loss")
            edges.append((f"z{i}", f"{b}:{term}"))
    return boxes, edges


#: the boxes' padding around their text, in units of the font size (matplotlib's ``boxstyle`` pad)
_PAD = 0.3


def _half_sizes(fig, texts: dict) -> dict[str, np.ndarray]:
    """Half width and half height, in inches, of each text's box (its text laid out once, plus the pad)."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    pad = _PAD * FONT / 72 + 0.03                        # the box's pad and its edge line, in inches
    return {name: np.array([t.get_window_extent(renderer).width, t.get_window_extent(renderer).height])
            / fig.dpi / 2 + pad for name, t in texts.items()}


def _edge(centre: np.ndarray, towards: np.ndarray, half: np.ndarray) -> tuple[float, float]:
    """Where the segment from ``centre`` to ``towards`` leaves the box of half sizes ``half`` around ``centre``."""
    v = towards - centre
    scale = min(half[k] / abs(v[k]) if v[k] else math.inf for k in (0, 1))
    return tuple(centre + min(scale, 1.0) * v)


def thanos_diagram(method: str = "thanos"):
    """Thanos drawn from :func:`thanos_graph`: two backbones, their losses, the concatenation, the probe.

    The left part (each backbone trained on its own, on coarse labels) and the
    right part (the frozen embeddings, evaluated) sit on two shaded panels.

    Returns:
        A matplotlib Figure with one axes; one arrow per edge of the graph
        (each arrow's gid is ``"from->to"``, each box's text has its name as gid).
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch, Rectangle

    boxes, edges = thanos_graph(method)
    fig = plt.figure(figsize=(_WIDTH, _HEIGHT))
    ax = fig.add_axes((0, 0, 1, 1), xlim=(0, _WIDTH), ylim=(0, _HEIGHT))
    ax.axis("off")
    for x0, x1, title in [(0.0, _DIVIDE, "trained on coarse labels, each backbone alone"),
                          (_DIVIDE, _WIDTH, "frozen, then evaluated")]:
        ax.add_patch(Rectangle((x0 + 0.03, 0.03), x1 - x0 - 0.06, _HEIGHT - 0.06, fc="#f6f6f6", ec="0.8", lw=0.8))
        ax.text(x0 + 0.12, _HEIGHT - 0.08, title, fontsize=FONT, va="top", color="0.3")
    texts = {}
    for name, b in boxes.items():
        t = ax.text(b.x, b.y, b.text, ha="center", va="center", fontsize=FONT, zorder=3,
                    bbox={"boxstyle": f"round,pad={_PAD}", "fc": _COLOURS[b.kind], "ec": "0.35", "lw": 0.8})
        t.set_gid(name)
        texts[name] = t
    half = _half_sizes(fig, texts)
    for src, dst in edges:
        a, b = np.array(boxes[src][:2]), np.array(boxes[dst][:2])
        # from edge to edge, in inches: the same arrow at any dpi the page is drawn at
        arrow = FancyArrowPatch(posA=_edge(a, b, half[src]), posB=_edge(b, a, half[dst]), arrowstyle="-|>",
                                mutation_scale=11, color="0.25", lw=1, zorder=2, shrinkA=0, shrinkB=0)
        arrow.set_gid(f"{src}->{dst}")
        ax.add_patch(arrow)
    return fig


# --------------------------------------------------------------------------- the alpha slider


def arc_angles(rho: float, n: int) -> np.ndarray:
    """Angles of ``n`` points equally spaced on an arc of the circle whose mean pairwise cosine is ``rho``.

    For equally spaced angles with step ``d`` the mean of the points has squared
    norm ``rho_bar = (sin(n d/2) / (n sin(d/2)))²``, and the mean cosine over the
    ``n (n-1)`` ordered pairs is ``(n rho_bar - 1)/(n - 1)``: the symmetric
    model's ``rho``. ``rho_bar`` falls from 1 (``d = 0``) to 0 (``d = 2π/n``,
    the whole circle), so ``d`` is found by bisection. Two classes drawn as
    such arcs around opposite directions also have the model's between-class
    cosine ``sigma(rho) = -rho_bar``.

    Example:
        >>> a = arc_angles(0.5, 6)
        >>> c = np.cos(a[:, None] - a[None, :]); round(float((c.sum() - 6) / 30), 9)
        0.5
    """
    if n < 2 or not -1.0 / (n - 1) - 1e-12 <= rho <= 1.0 + 1e-12:
        raise ValueError(f"rho={rho!r} must be in [-1/(n-1), 1] with n >= 2, got n={n!r}")
    target = (1 + (n - 1) * rho) / n

    def rho_bar(d: float) -> float:
        return 1.0 if d == 0 else (math.sin(n * d / 2) / (n * math.sin(d / 2))) ** 2

    lo, hi = 0.0, 2 * math.pi / n
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if rho_bar(mid) > target else (lo, mid)
    d = (lo + hi) / 2
    return (np.arange(n) - (n - 1) / 2) * d


class Slider(NamedTuple):
    """What :func:`spread_animation` returns: the figure, the animation, its frames' ``alpha`` and ``rho*``,
    and ``update(i)``, which draws frame ``i``."""

    fig: object
    animation: object
    alphas: tuple[float, ...]
    rhos: tuple[float, ...]
    update: object


def spread_animation(alphas: Sequence[float], *, n: int = 16, temperature: float = 0.5) -> Slider:
    """One frame per weight: ``rho*(alpha)`` on its curve (left) and the two classes on the circle (right).

    Uses the symmetric model of chapter 2 with ``K = 2`` classes of ``n``
    samples and Khosla's L_out (:func:`spreadcon.theory.model.rho_star`). On
    the circle each class is an arc (:func:`arc_angles`) around opposite
    directions, with exactly the model's mean within-class cosine ``rho*`` and
    between-class cosine ``sigma(rho*)``.
    """
    import matplotlib.pyplot as plt
    from matplotlib.animation import FuncAnimation

    from spreadcon.theory import model as theory

    if not 1 <= len(alphas) <= 20:
        raise ValueError(f"alphas: {len(alphas)} frames; give 1 to 20 (each frame is a picture in the page)")
    alphas = tuple(float(a) for a in alphas)
    rhos = tuple(theory.rho_star(a, n, 2, temperature) for a in alphas)
    grid = np.linspace(0, 1, 201)
    fig, (left, right) = plt.subplots(1, 2, figsize=(5.6, 2.8), gridspec_kw={"width_ratios": [1.45, 1]})
    left.plot(grid, [theory.rho_star(a, n, 2, temperature) for a in grid], color="k", lw=1.5)
    dot, = left.plot([], [], "o", color="C3", ms=8, clip_on=False, zorder=3)
    left.set(xlim=(0, 1), ylim=(-0.15, 1.05))
    left.set_xlabel(r"cNCE weight $\alpha$", fontsize=FONT)
    left.set_ylabel(r"within-class cosine $\rho^\star$", fontsize=FONT)
    left.tick_params(labelsize=FONT)
    title = left.set_title("", fontsize=FONT)
    t = np.linspace(0, 2 * np.pi, 200)
    right.plot(np.cos(t), np.sin(t), color="0.8", lw=1)
    right.set(xlim=(-1.25, 1.25), ylim=(-1.25, 1.25), aspect="equal")
    right.axis("off")
    ones, = right.plot([], [], "o", color="C0", ms=9, label="class 0")
    twos, = right.plot([], [], "^", color="C1", ms=6, label="class 1")
    right.legend(loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=2, fontsize=FONT, frameon=False,
                 handletextpad=0.2, columnspacing=1.0)

    def update(i: int):
        a = arc_angles(rhos[i], n)
        ones.set_data(np.cos(a), np.sin(a))
        twos.set_data(-np.cos(a), -np.sin(a))
        dot.set_data([alphas[i]], [rhos[i]])
        title.set_text(rf"$\alpha$ = {alphas[i]:.2f}: $\rho^\star$ = {rhos[i]:.2f}")
        return ones, twos, dot, title

    update(0)
    fig.tight_layout()                                   # with a title in place: every frame is this size
    anim = FuncAnimation(fig, update, frames=len(alphas), interval=600, blit=False)
    return Slider(fig, anim, alphas, rhos, update)


#: Font Awesome icons of matplotlib's player -> the same symbols as plain text, so the page needs no CDN
_ICONS = {"fa fa-minus": "−", "fa fa-fast-backward": "⏮", "fa fa-step-backward": "◀|",
          "fa fa-play fa-flip-horizontal": "◀", "fa fa-pause": "⏸", "fa fa-play": "▶",
          "fa fa-step-forward": "|▶", "fa fa-fast-forward": "⏭", "fa fa-plus": "+"}


def offline_jshtml(animation) -> str:
    """``animation.to_jshtml()`` made self-contained: no stylesheet from a CDN, button icons as text.

    matplotlib's player links Font Awesome from ``maxcdn.bootstrapcdn.com`` for
    its nine button icons; offline they would be empty buttons. The link is
    removed and each ``<i class="fa ...">`` becomes its symbol in plain text.
    """
    html = animation.to_jshtml()
    html = re.sub(r"<link[^>]*font-awesome[^>]*>", "", html)
    html = re.sub(r'<i class="(fa [^"]*)"></i>', lambda m: _ICONS.get(m.group(1), "·"), html)
    return html


def spread_slider_html(alphas: Sequence[float], *, n: int = 16, temperature: float = 0.5) -> str:
    """The HTML of :func:`spread_animation` as a slider (frames embedded as PNG, player inline, no CDN)."""
    import matplotlib.pyplot as plt

    slider = spread_animation(alphas, n=n, temperature=temperature)
    try:
        return offline_jshtml(slider.animation)
    finally:
        plt.close(slider.fig)
