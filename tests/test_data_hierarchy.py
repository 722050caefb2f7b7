"""Coarse-label maps: one coarse class per fine class, matching the issue's tables."""

from __future__ import annotations

from collections import Counter

import pytest

from spreadcon.data import hierarchy


def test_mnist_map_is_digit_below_five():
    coarse_of, names = hierarchy.mnist_coarse()
    assert names == ["digit<5", "digit>=5"]
    assert coarse_of == [0, 0, 0, 0, 0, 1, 1, 1, 1, 1]


def test_cifar10_map_is_vehicles_vs_animals():
    coarse_of, names = hierarchy.cifar10_coarse()
    vehicles = {hierarchy.CIFAR10_FINE[i] for i, c in enumerate(coarse_of) if names[c] == "vehicle"}
    assert vehicles == {"airplane", "automobile", "ship", "truck"}
    assert Counter(coarse_of) == {0: 4, 1: 6}


def test_cifar100_map_has_twenty_superclasses_of_five():
    coarse_of, names = hierarchy.cifar100_coarse()
    assert len(coarse_of) == 100 and len(names) == 20
    assert sorted(Counter(coarse_of).values()) == [5] * 20
    fine = hierarchy.CIFAR100_FINE
    assert fine == sorted(fine) and len(set(fine)) == 100  # official ids are alphabetical
    assert names[coarse_of[fine.index("whale")]] == "aquatic_mammals"
    assert names[coarse_of[fine.index("lawn_mower")]] == "vehicles_2"
    assert names[coarse_of[fine.index("maple_tree")]] == "trees"


def test_tinyimagenet_table_covers_200_wnids_once():
    rows = hierarchy.tinyimagenet_table()
    wnids = [r[0] for r in rows]
    assert len(rows) == 200 and len(set(wnids)) == 200
    assert all(w.startswith("n") and len(w) == 9 for w in wnids)
    coarse_of, names = hierarchy.tinyimagenet_coarse()
    assert len(coarse_of) == 200 and 10 <= len(names) <= 20
    assert set(coarse_of) == set(range(len(names)))  # every coarse class is used
    by_fine = {r[1]: r[2] for r in rows}
    # spot checks of the hypernym rule (nearest listed ancestor)
    assert by_fine["golden retriever"] == "dog"
    assert by_fine["Egyptian cat"] == "cat"
    assert by_fine["king penguin"] == "bird"
    assert by_fine["school bus"] == "vehicle"
    assert by_fine["lemon"] == "fruit_vegetable"
    assert by_fine["pizza"] == "food"


def test_tinyimagenet_coarse_follows_given_order():
    rows = hierarchy.tinyimagenet_table()
    order = [rows[5][0], rows[0][0]]
    full, _ = hierarchy.tinyimagenet_coarse()
    assert hierarchy.tinyimagenet_coarse(order)[0] == [full[5], full[0]]
    with pytest.raises(ValueError, match="wnids"):
        hierarchy.tinyimagenet_coarse(["n00000000"])


def test_read_mapping(tmp_path):
    p = tmp_path / "m.tsv"
    p.write_text("# fine\tcoarse\na\tx\nb, x\n\nc\ty\n")
    assert hierarchy.read_mapping(p) == {"a": "x", "b": "x", "c": "y"}
    p.write_text("a\tx\na\ty\n")
    with pytest.raises(ValueError, match="two coarse"):
        hierarchy.read_mapping(p)
    p.write_text("a\tx\ty\n")
    with pytest.raises(ValueError, match="line 1"):
        hierarchy.read_mapping(p)


def test_wordnet_rule_picks_nearest_anchor():
    """The table-making rule on a toy hypernym graph: nearest anchor wins, ties go to the earlier entry."""
    from spreadcon.data import make_tinyimagenet_coarse as m

    graph = {"n1": ["n2"], "n2": ["n02084071"], "n02084071": ["n01861778"], "n01861778": ["n00001740"], "n00001740": []}
    assert m.assign(graph, "n1") == "dog"  # dog (distance 2) beats mammal (3)
    assert m.assign(graph, "n01861778") == "mammal"
    assert m.assign(graph, "n00001740") == "artifact"  # only the catch-all
    with pytest.raises(ValueError, match="wnid"):
        m.assign(graph, "n9")
