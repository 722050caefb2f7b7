"""spreadcon.book.figures: what each figure contains (its axes, titles, labels and pixels), and chapter 2's
visible L_spread cell against the package's SpreadLoss."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.patches import FancyArrowPatch  # noqa: E402

from spreadcon.book import figures  # noqa: E402
from spreadcon.data import Dataset, Split  # noqa: E402
from spreadcon.losses import SpreadLoss  # noqa: E402
from spreadcon.methods import get_method  # noqa: E402
from spreadcon.theory import model as theory  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _dataset(channels=3, n_per_fine=6, groups=False, seed=0):
    """2 coarse classes ("a": fines 0-1, "b": fines 2-4), distinct random images, optional groups 0-3."""
    g = torch.Generator().manual_seed(seed)
    fine = torch.arange(5).repeat_interleave(n_per_fine)
    coarse = (fine >= 2).long()
    n = len(fine)
    images = torch.randint(0, 256, (n, channels, 6, 5), generator=g, dtype=torch.uint8)
    group = (2 * coarse + (torch.arange(n) % 3 == 0).long()) if groups else None
    split = Split(fine=fine, coarse=coarse, group=group, images=images)
    return Dataset(name="toy", task="robustness" if groups else "transfer", image_shape=(channels, 6, 5),
                   fine_names=["f0", "f1", "f2", "f3", "f4"], coarse_names=["a", "b"], mean=(0.5,) * channels,
                   std=(0.25,) * channels, grayscale_aug=False,
                   splits={"train": split, "val": split.subset(torch.arange(4)), "test": split.subset(torch.arange(0, n, 2))},
                   group_names=["a, 0", "a, 1", "b, 0", "b, 1"] if groups else [])


def _tiles(ax, width):
    """The images one row of a grid shows, as uint8 (k, H, W[, C]) cut from the axes' image array."""
    arr = np.asarray(ax.images[0].get_array())
    k = arr.shape[1] // width
    assert arr.shape[1] == k * width
    return np.stack([arr[:, j * width:(j + 1) * width] for j in range(k)])


def _matches(tile, images):
    """Indices of ``images`` (uint8 (N, C, H, W)) equal to ``tile`` ((H, W) or (H, W, C))."""
    hwc = images.permute(0, 2, 3, 1).numpy()
    if tile.ndim == 2:
        hwc = hwc[..., 0]
    return [i for i in range(len(hwc)) if np.array_equal(hwc[i], tile)]


def _smallest_font(fig):
    fig.canvas.draw()
    sizes = [t.get_fontsize() for t in fig.findobj(matplotlib.text.Text) if t.get_visible() and t.get_text().strip()]
    return min(sizes)


# --------------------------------------------------------------------------- sample_grid


@pytest.mark.parametrize("channels", [1, 3])
def test_sample_grid_rows_are_images_of_their_fine_class_under_their_coarse_class(channels):
    ds = _dataset(channels)
    fig = figures.sample_grid(ds, per_fine=3, seed=1)
    train = ds.splits["train"]
    assert len(fig.axes) == ds.n_fine
    by_fine = {ax.get_ylabel(): ax for ax in fig.axes}
    assert sorted(by_fine) == ds.fine_names
    for name, ax in by_fine.items():
        f = ds.fine_names.index(name)
        tiles = _tiles(ax, 5)
        assert tiles.shape == ((3, 6, 5) if channels == 1 else (3, 6, 5, 3))
        found = [_matches(t, train.images) for t in tiles]
        assert all(len(m) == 1 for m in found)                     # every tile is one image of the split
        idx = [m[0] for m in found]
        assert len(set(idx)) == 3 and all(int(train.fine[i]) == f for i in idx)
        column = ax.get_subplotspec().colspan.start
        assert column == int(train.coarse[idx[0]])                  # the column of the fine class's coarse class
    titled = [(ax.get_subplotspec().colspan.start, ax.get_title(loc="left")) for ax in fig.axes if ax.get_title(loc="left")]
    assert sorted(titled) == [(0, "a"), (1, "b")]
    assert by_fine["f0"].get_title(loc="left") == "a" and by_fine["f2"].get_title(loc="left") == "b"
    assert (by_fine["f0"].images[0].get_cmap().name == "gray") == (channels == 1)
    assert fig.get_figwidth() <= figures.PAGE_WIDTH and _smallest_font(fig) >= 9


def test_sample_grid_selects_coarse_classes_and_stacks_groups_in_columns():
    ds = _dataset()
    fig = figures.sample_grid(ds, per_fine=2, coarse=["b"], fines_per_coarse=2)
    assert [ax.get_ylabel() for ax in fig.axes] == ["f2", "f3"]
    assert [ax.get_title(loc="left") for ax in fig.axes] == ["b", ""]
    fig = figures.sample_grid(ds, per_fine=2, columns=1)
    rows = {ax.get_ylabel(): (ax.get_subplotspec().rowspan.start, ax.get_subplotspec().colspan.start) for ax in fig.axes}
    assert rows == {"f0": (0, 0), "f1": (1, 0), "f2": (2, 0), "f3": (3, 0), "f4": (4, 0)}
    assert {ax.get_ylabel(): ax.get_title(loc="left") for ax in fig.axes if ax.get_title(loc="left")} == {"f0": "a", "f2": "b"}


def test_sample_grid_draws_other_images_with_another_seed_and_rejects_bad_arguments():
    ds = _dataset()
    a = figures.sample_grid(ds, per_fine=3, seed=0).axes[0].images[0].get_array()
    b = figures.sample_grid(ds, per_fine=3, seed=5).axes[0].images[0].get_array()
    assert not np.array_equal(a, b)
    with pytest.raises(ValueError, match="coarse='c'"):
        figures.sample_grid(ds, coarse=["c"])
    with pytest.raises(ValueError, match="per_fine=0"):
        figures.sample_grid(ds, per_fine=0)


def test_sample_grid_of_real_mnist_shows_each_digit_under_its_coarse_class(data_root):
    from spreadcon.data import load

    ds = load("mnist", data_root)
    fig = figures.sample_grid(ds, per_fine=4)
    train = ds.splits["train"]
    assert len(fig.axes) == 10
    assert sorted(ax.get_title(loc="left") for ax in fig.axes if ax.get_title(loc="left")) == ["digit<5", "digit>=5"]
    for ax in fig.axes:
        digit = int(ax.get_ylabel())
        tiles = _tiles(ax, 28)
        assert tiles.shape == (4, 28, 28)
        pool = train.images[train.fine == digit]
        assert all(_matches(t, pool) for t in tiles)
        assert ax.get_subplotspec().colspan.start == int(digit >= 5)


# --------------------------------------------------------------------------- proxy_grid


def test_proxy_grid_has_a_row_per_group_with_its_training_size():
    ds = _dataset(groups=True)
    fig = figures.proxy_grid(ds, per_group=2, split="test")
    train_counts = torch.bincount(ds.splits["train"].group, minlength=4).tolist()
    assert len(fig.axes) == 4
    test = ds.splits["test"]
    for g, ax in enumerate(fig.axes):
        name, size = ax.get_ylabel().split("\n")
        assert name == ds.group_names[g]
        assert size.startswith(f"{train_counts[g]:,} in training (")
        for t in _tiles(ax, 5):                                  # images of that group, from the split asked for
            assert [int(test.group[i]) for i in _matches(t, test.images)] == [g]
    assert _smallest_font(fig) >= 9


def test_proxy_grid_says_so_where_a_group_has_no_images():
    ds = _dataset(groups=True)
    ds.splits["val"] = ds.splits["train"].subset(ds.splits["train"].group != 1)
    fig = figures.proxy_grid(ds, per_group=2, split="val")
    assert [len(ax.images) for ax in fig.axes] == [1, 0, 1, 1]
    assert [t.get_text() for t in fig.axes[1].texts] == ["no images in this split"]


def test_proxy_grid_refuses_a_dataset_without_groups():
    with pytest.raises(ValueError, match="no groups"):
        figures.proxy_grid(_dataset())


def test_proxy_grid_of_real_mnist_cifar_counts_its_groups(data_root):
    from spreadcon.data import load

    ds = load("mnist-cifar", data_root)
    fig = figures.proxy_grid(ds, per_group=3)
    counts = torch.bincount(ds.splits["train"].group, minlength=4).tolist()
    assert [ax.get_ylabel().split("\n")[1].split(" ")[0] for ax in fig.axes] == [f"{c:,}" for c in counts]
    assert [_tiles(ax, 32).shape for ax in fig.axes] == [(3, 32, 32, 3)] * 4


# --------------------------------------------------------------------------- Thanos drawn


def test_thanos_graph_is_the_method_table():
    boxes, edges = figures.thanos_graph()
    backbones = get_method("thanos").backbones
    assert backbones == ("spread", "autoencoder")
    for i, b in enumerate(backbones, start=1):
        assert b in boxes[f"enc{i}"].text
        assert [k for k in boxes if k.startswith(f"{b}:")] == [f"{b}:{t}" for t in get_method(b).terms]
        assert {d for s, d in edges if s == f"z{i}"} == {"cat"} | {f"{b}:{t}" for t in get_method(b).terms}
    into = lambda name: sorted(s for s, d in edges if d == name)  # noqa: E731
    assert into("autoencoder:recon") == ["z2"]          # the decoder reads the autoencoder's z only: no label
    assert "no label" in boxes["autoencoder:recon"].text
    assert into("cat") == ["z1", "z2"] and into("probe") == ["cat"]
    assert into("enc1") == into("enc2") == ["x"]
    assert "cNCE" in boxes["spread:spread"].text and "SupCon" in boxes["spread:spread"].text


def test_thanos_diagram_draws_every_box_and_every_arrow_of_the_graph():
    boxes, edges = figures.thanos_graph()
    fig = figures.thanos_diagram()
    (ax,) = fig.axes
    texts = {t.get_gid(): t.get_text() for t in ax.texts if t.get_gid()}
    assert texts == {name: b.text for name, b in boxes.items()}
    arrows = sorted(p.get_gid() for p in ax.patches if isinstance(p, FancyArrowPatch))
    assert arrows == sorted(f"{s}->{d}" for s, d in edges)
    assert fig.get_figwidth() <= figures.PAGE_WIDTH and _smallest_font(fig) >= 9


@pytest.mark.parametrize("dpi", [72, 150])
def test_thanos_arrows_run_from_box_edge_to_box_edge_at_any_dpi(dpi):
    """The page draws at another dpi than the figure was laid out at; arrows clipped to the text boxes
    of the first drawing then pointed into empty space (and the concatenate -> probe arrow vanished)."""
    fig = figures.thanos_diagram()
    fig.set_dpi(dpi)
    fig.canvas.draw()
    (ax,) = fig.axes
    boxes = {t.get_gid(): t.get_bbox_patch().get_window_extent().transformed(ax.transData.inverted())
             for t in ax.texts if t.get_gid()}
    for arrow in (p for p in ax.patches if isinstance(p, FancyArrowPatch)):
        src, dst = arrow.get_gid().split("->")
        for (x, y), box in zip(arrow._posA_posB, (boxes[src], boxes[dst])):
            gap = max(box.x0 - x, x - box.x1, box.y0 - y, y - box.y1)   # inches outside the box (< 0: inside)
            assert 0 <= gap < 0.1, (arrow.get_gid(), gap)


def test_thanos_diagram_follows_the_method_it_is_given():
    boxes, _ = figures.thanos_graph("thanos-quirks")
    assert "spread-quirks" in boxes["enc1"].text
    with pytest.raises(ValueError, match="'supcon' has 0 backbones"):
        figures.thanos_graph("supcon")


# --------------------------------------------------------------------------- the alpha slider


@pytest.mark.parametrize("rho,n", [(1.0, 16), (0.5, 16), (0.0, 7), (-1 / 15, 16), (0.9, 3)])
def test_arc_angles_realise_the_symmetric_models_cosines(rho, n):
    a = figures.arc_angles(rho, n)
    cos = np.cos(a[:, None] - a[None, :])
    assert abs((cos.sum() - n) / (n * (n - 1)) - rho) < 1e-9
    between = -np.cos(a[:, None] - a[None, :]).mean()           # the other class: the same arc, opposite
    assert abs(between - theory.between_class_cosine(rho, n, 2)) < 1e-9


def test_arc_angles_rejects_an_infeasible_cosine():
    with pytest.raises(ValueError, match="rho=-0.5"):
        figures.arc_angles(-0.5, 16)


def test_each_frame_of_the_slider_shows_rho_star_of_its_alpha():
    alphas = [0.0, 0.3, 1.0]
    s = figures.spread_animation(alphas, n=8, temperature=0.5)
    assert s.rhos == tuple(theory.rho_star(a, 8, 2, 0.5) for a in alphas)
    left, right = s.fig.axes
    for i, (a, rho) in enumerate(zip(alphas, s.rhos)):
        s.update(i)
        dots = [ln for ln in left.lines if ln.get_marker() == "o"]
        assert [(float(ln.get_xdata()[0]), float(ln.get_ydata()[0])) for ln in dots] == [(a, rho)]
        ones = next(ln for ln in right.lines if ln.get_label() == "class 0")
        x, y = np.asarray(ones.get_xdata()), np.asarray(ones.get_ydata())
        assert len(x) == 8 and np.allclose(x**2 + y**2, 1)
        cos = x[:, None] * x[None, :] + y[:, None] * y[None, :]
        assert abs((cos.sum() - 8) / 56 - rho) < 1e-9
        assert f"{rho:.2f}" in left.get_title()
    assert s.fig.get_figwidth() <= figures.PAGE_WIDTH and _smallest_font(s.fig) >= 9


def test_slider_html_works_offline():
    html = figures.spread_slider_html([0.0, 0.5], n=8)
    assert not re.search(r"https?://", html)                    # nothing fetched: no CDN stylesheet, no script src
    assert not re.search(r"<script[^>]*\ssrc=", html) and "<link" not in html
    assert 'class="fa' not in html
    assert len(re.findall(r'frames\[\d+\] = "data:image/png;base64,', html)) == 2
    buttons = re.findall(r"<button[^>]*>\s*([^<]*?)\s*</button>", html)
    assert len(buttons) == 9 and all(buttons)


def test_slider_refuses_more_than_twenty_frames():
    with pytest.raises(ValueError, match="21 frames"):
        figures.spread_animation(np.linspace(0, 1, 21))


# --------------------------------------------------------------------------- L_spread on the page


def _cell(chapter: str, marker: str) -> str:
    """The source of the one code cell of ``book/<chapter>.md`` that contains ``marker``."""
    text = (REPO / "book" / f"{chapter}.md").read_text()
    cells = re.findall(r"```\{code-cell\}[^\n]*\n(.*?)\n```", text, flags=re.S)
    hits = [c for c in cells if marker in c]
    assert len(hits) == 1, f"{len(hits)} cells of {chapter}.md contain {marker!r}"
    return hits[0]


def _chapter_l_spread():
    source = _cell("02_spread", "# L_spread, written from the equations")
    code = [line for line in source.splitlines() if line.strip() and not line.startswith(":")]
    assert len(code) <= 18, f"the chapter's L_spread has {len(code)} lines"
    assert "spreadcon" not in source                             # from the equations, not a call into the package
    namespace = {"torch": torch}
    exec(compile(source, "02_spread.md", "exec"), namespace)
    return namespace["l_spread"]


CASES = {
    "three classes": (8, 2, [0, 1, 2, 0, 1, 2, 0, 1]),
    "one class": (6, 2, [0] * 6),
    "a singleton class": (5, 2, [0, 0, 1, 1, 2]),
    "three views, singletons": (4, 3, [3, 1, 1, 7]),
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("alpha,tau", [(0.0, 0.5), (0.3, 0.1), (0.5, 0.5), (1.0, 0.2)])
def test_chapter_2s_l_spread_equals_the_packages_spread_loss(case, alpha, tau):
    l_spread = _chapter_l_spread()
    b, v, labels = CASES[case]
    g = torch.Generator().manual_seed(len(labels) + v)
    z = torch.randn(b, v, 7, generator=g, dtype=torch.float64) * torch.rand(b, v, 1, generator=g, dtype=torch.float64).add(0.5)
    y = torch.tensor(labels)
    mine = l_spread(z, y, alpha, tau)
    assert mine.dtype == torch.float64 and mine.ndim == 0
    assert abs(float(mine) - float(SpreadLoss(alpha, tau)(z, y))) < 1e-10
