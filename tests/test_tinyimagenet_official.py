"""TinyImageNet's official coarse map (``hierarchy="official"``): the table, the loader option,
the config key that selects it, and old checkpoints that predate the key.

The references here are written straight from the official code's rule: its list
``sparse_coarse_array`` is indexed by the position of a wnid in the *sorted* wnids, and
its entries are coarse ids 0..66. The first entries and a few groups below are read off
that list (github.com/HazyResearch/thanos-code, unagi/datasets/tiny_imagenet/utils.py).
"""

from __future__ import annotations

import collections

import pytest
import torch

from spreadcon.data import hierarchy, load
from test_data_fixtures import write_tinyimagenet

# entries 0..9 of the official list, in order (sorted wnids n01443537 goldfish, ... n01774750 tarantula)
OFFICIAL_HEAD = [14, 31, 16, 16, 8, 34, 35, 0, 0, 0]


def official_by_wnid() -> dict[str, int]:
    """The slow reference: wnid -> official coarse id, by the official indexing rule."""
    rows = hierarchy.tinyimagenet_official_table()
    wnids = sorted(w for w, _, _ in hierarchy.tinyimagenet_table())
    assert [w for w, _, _ in rows] == wnids  # the table is in sorted-wnid order, as the official list
    return {w: c for w, _, c in rows}


def test_official_table_counts():
    ids = [c for _, _, c in hierarchy.tinyimagenet_official_table()]
    sizes = collections.Counter(ids)
    assert len(ids) == 200 and ids[:10] == OFFICIAL_HEAD
    assert min(ids) == 0 and max(ids) == 66          # 67 coarse ids in the official head ...
    assert len(sizes) == 52                          # ... 52 of them used
    assert sum(n == 1 for n in sizes.values()) == 16  # 16 with a single fine class


def test_official_map_is_the_official_partition():
    by_wnid = official_by_wnid()
    wnids = [w for w, _, _ in hierarchy.tinyimagenet_table()]   # wnids.txt order (the loader's label order)
    coarse_of, names = hierarchy.tinyimagenet_coarse(wnids, hierarchy="official")
    assert len(names) == 52 and len(set(coarse_of)) == 52
    for i in range(200):
        for j in range(200):  # same coarse class here exactly when the official ids agree
            assert (coarse_of[i] == coarse_of[j]) == (by_wnid[wnids[i]] == by_wnid[wnids[j]])
    for i, w in enumerate(wnids):  # and the names keep the official id
        assert names[coarse_of[i]] == f"official-{by_wnid[w]}"
    fine = {name: w for w, name, _ in hierarchy.tinyimagenet_official_table()}
    same = lambda a, b: by_wnid[fine[a]] == by_wnid[fine[b]]  # noqa: E731
    assert same("golden retriever", "Chihuahua") and same("goldfish", "jellyfish") and not same("goldfish", "lemon")


def test_wordnet_stays_the_default_and_bad_names_fail():
    assert hierarchy.tinyimagenet_coarse() == hierarchy.tinyimagenet_coarse(hierarchy="wordnet")
    assert len(hierarchy.tinyimagenet_coarse()[1]) == 18
    with pytest.raises(ValueError, match="hierarchy='imagenet'"):
        hierarchy.tinyimagenet_coarse(hierarchy="imagenet")


def test_loader_option_on_a_fixture(tmp_path):
    rows = hierarchy.tinyimagenet_table()
    wnids = [w for w, _, _ in rows[:6]]
    write_tinyimagenet(tmp_path, wnids, n_train=4, n_val=2)
    ds = load("tinyimagenet", tmp_path, cache=tmp_path / "cache", hierarchy="official")
    by_wnid = official_by_wnid()
    for split in ds.splits.values():
        got = [ds.coarse_names[c] for c in split.coarse.tolist()]
        assert got == [f"official-{by_wnid[wnids[f]]}" for f in split.fine.tolist()]
    assert "official" in ds.description
    with pytest.raises(ValueError, match="hierarchy"):
        load("tinyimagenet", tmp_path, cache=tmp_path / "cache", hierarchy="nope")


def test_loader_option_on_the_real_subset(data_root):
    ds = load("tinyimagenet", data_root, hierarchy="official")
    by_wnid = official_by_wnid()
    wnids = [w for w, _, _ in hierarchy.tinyimagenet_table()]  # == the subset's wnids.txt
    test = ds.splits["test"]
    counts = torch.bincount(test.coarse, minlength=ds.n_coarse).tolist()
    want = collections.Counter(by_wnid[w] for w in wnids)     # 50 test images per fine class
    assert ds.n_coarse == 52 and counts == [50 * want[int(n.split("-")[1])] for n in ds.coarse_names]


def test_config_key_selects_it_for_tinyimagenet_only():
    from spreadcon.presets import resolve
    from spreadcon.runs.names import resolve_run

    assert resolve("cpu", "tinyimagenet").hierarchy == "wordnet"
    cfg, name = resolve_run("cpu", "tinyimagenet", "spread", overrides={"hierarchy": "official"})
    assert cfg.hierarchy == "official" and name != "cpu"   # filed apart from the cpu records
    with pytest.raises(ValueError, match="tinyimagenet only"):
        resolve("cpu", "mnist", {"hierarchy": "official"})
    with pytest.raises(ValueError, match="hierarchy"):
        resolve("cpu", "tinyimagenet", {"hierarchy": "nope"})


def test_checkpoints_from_before_the_key_still_resume():
    from spreadcon.presets import resolve
    from spreadcon.train.checkpoint import CheckpointMismatch, check_identity

    new = resolve("cpu", "tinyimagenet").to_dict()
    old = {k: v for k, v in new.items() if k != "hierarchy"}  # written before the key existed
    check_identity("last.pt", {"config": old}, {"config": new})
    official = {**new, "hierarchy": "official"}
    with pytest.raises(CheckpointMismatch, match="hierarchy"):
        check_identity("last.pt", {"config": old}, {"config": official})


def test_an_official_map_grid_is_filed_apart(tmp_path):
    from spreadcon.runs.reproduce import plan_grid

    (run,) = plan_grid("cpu", ["tinyimagenet"], ["spread"], [0], results_dir=tmp_path,
                       overrides={"hierarchy": "official"})
    assert run.filed == "cpu.set.hierarchy-official"
    assert run.checkpoint_dir("ck").parts[1] == run.filed and run.notebook_path("runs").parts[1] == run.filed
