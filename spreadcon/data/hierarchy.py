"""Coarse-label maps: which coarse class each fine class belongs to.

Every map is a list ``coarse_of[fine_id] -> coarse_id`` plus the names, so a
fine class maps to exactly one coarse class by construction.

| dataset | coarse classes | rule |
|---|---|---|
| ``mnist`` | ``digit<5``, ``digit>=5`` | digit 0–4 → 0, 5–9 → 1 |
| ``cifar10`` | ``vehicle``, ``animal`` | {airplane, automobile, ship, truck} → 0, the rest → 1 |
| ``cifar100`` | the 20 official superclasses | the table on the CIFAR web page (``CIFAR100_SUPERCLASSES``) |
| ``tinyimagenet`` | 18 WordNet-hypernym classes | ``tinyimagenet_coarse.tsv``, made by ``make_tinyimagenet_coarse.py`` |
| ``tinyimagenet``, ``hierarchy="official"`` | the official code's 52 coarse ids | ``tinyimagenet_coarse_official.tsv``, the thanos-code table |

Example:
    >>> coarse_of, names = cifar10_coarse()
    >>> [names[coarse_of[i]] for i in (0, 3)]
    ['vehicle', 'animal']
"""

from __future__ import annotations

from pathlib import Path

from .errors import CorruptDataset

MNIST_FINE = [str(d) for d in range(10)]
MNIST_COARSE = ["digit<5", "digit>=5"]

CIFAR10_FINE = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR10_VEHICLES = ("airplane", "automobile", "ship", "truck")
CIFAR10_COARSE = ["vehicle", "animal"]

# The official CIFAR-100 superclasses (coarse label names in `meta`, official
# order = coarse ids 0-19) and their five classes each.
CIFAR100_SUPERCLASSES: dict[str, list[str]] = {
    "aquatic_mammals": ["beaver", "dolphin", "otter", "seal", "whale"],
    "fish": ["aquarium_fish", "flatfish", "ray", "shark", "trout"],
    "flowers": ["orchid", "poppy", "rose", "sunflower", "tulip"],
    "food_containers": ["bottle", "bowl", "can", "cup", "plate"],
    "fruit_and_vegetables": ["apple", "mushroom", "orange", "pear", "sweet_pepper"],
    "household_electrical_devices": ["clock", "keyboard", "lamp", "telephone", "television"],
    "household_furniture": ["bed", "chair", "couch", "table", "wardrobe"],
    "insects": ["bee", "beetle", "butterfly", "caterpillar", "cockroach"],
    "large_carnivores": ["bear", "leopard", "lion", "tiger", "wolf"],
    "large_man-made_outdoor_things": ["bridge", "castle", "house", "road", "skyscraper"],
    "large_natural_outdoor_scenes": ["cloud", "forest", "mountain", "plain", "sea"],
    "large_omnivores_and_herbivores": ["camel", "cattle", "chimpanzee", "elephant", "kangaroo"],
    "medium_mammals": ["fox", "porcupine", "possum", "raccoon", "skunk"],
    "non-insect_invertebrates": ["crab", "lobster", "snail", "spider", "worm"],
    "people": ["baby", "boy", "girl", "man", "woman"],
    "reptiles": ["crocodile", "dinosaur", "lizard", "snake", "turtle"],
    "small_mammals": ["hamster", "mouse", "rabbit", "shrew", "squirrel"],
    "trees": ["maple_tree", "oak_tree", "palm_tree", "pine_tree", "willow_tree"],
    "vehicles_1": ["bicycle", "bus", "motorcycle", "pickup_truck", "train"],
    "vehicles_2": ["lawn_mower", "rocket", "streetcar", "tank", "tractor"],
}
# Official fine label ids are the fine names in alphabetical order.
CIFAR100_FINE = sorted(name for names in CIFAR100_SUPERCLASSES.values() for name in names)
CIFAR100_COARSE = list(CIFAR100_SUPERCLASSES)

TINYIMAGENET_TABLE = Path(__file__).with_name("tinyimagenet_coarse.tsv")
#: The official thanos-code's TinyImageNet map (a data table; its header names the source).
TINYIMAGENET_OFFICIAL_TABLE = Path(__file__).with_name("tinyimagenet_coarse_official.tsv")
#: The TinyImageNet coarse maps :func:`tinyimagenet_coarse` offers; the first is the default.
TINYIMAGENET_HIERARCHIES = ("wordnet", "official")


def mnist_coarse() -> tuple[list[int], list[str]]:
    """MNIST: digit < 5 → 0, digit >= 5 → 1."""
    return [int(d >= 5) for d in range(10)], list(MNIST_COARSE)


def cifar10_coarse() -> tuple[list[int], list[str]]:
    """CIFAR-10: vehicles {airplane, automobile, ship, truck} → 0, animals → 1."""
    return [0 if name in CIFAR10_VEHICLES else 1 for name in CIFAR10_FINE], list(CIFAR10_COARSE)


def cifar100_coarse() -> tuple[list[int], list[str]]:
    """CIFAR-100: each of the 100 classes (alphabetical ids) → its official superclass id."""
    owner = {fine: c for c, names in enumerate(CIFAR100_SUPERCLASSES.values()) for fine in names}
    return [owner[name] for name in CIFAR100_FINE], list(CIFAR100_COARSE)


def tinyimagenet_table(path: str | Path = TINYIMAGENET_TABLE) -> list[tuple[str, str, str]]:
    """Rows ``(wnid, fine_name, coarse_name)`` of the committed TinyImageNet table (official wnid order)."""
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    if not lines or lines[0].split("\t") != ["wnid", "fine_name", "coarse_name"]:
        raise ValueError(f"path={str(path)!r} is not a wnid/fine_name/coarse_name table")
    return [tuple(line.split("\t")) for line in lines[1:] if line]  # type: ignore[misc]


def tinyimagenet_official_table(path: str | Path = TINYIMAGENET_OFFICIAL_TABLE) -> list[tuple[str, str, int]]:
    """Rows ``(wnid, fine_name, official_coarse_id)`` of the official thanos-code map (sorted wnid order).

    Lines starting with ``#`` (the table's source) are skipped.
    """
    with open(path, encoding="utf-8") as f:
        lines = [line for line in f.read().splitlines() if line and not line.startswith("#")]
    if not lines or lines[0].split("\t") != ["wnid", "fine_name", "official_coarse_id"]:
        raise ValueError(f"path={str(path)!r} is not a wnid/fine_name/official_coarse_id table")
    rows = [line.split("\t") for line in lines[1:]]
    if any(len(r) != 3 or not r[2].isdigit() for r in rows):
        raise ValueError(f"path={str(path)!r} has a row that is not 'wnid<TAB>name<TAB>integer id'")
    return [(w, name, int(c)) for w, name, c in rows]


def tinyimagenet_coarse(wnids: list[str] | None = None, hierarchy: str = "wordnet") -> tuple[list[int], list[str]]:
    """TinyImageNet: wnid → coarse id.

    Args:
        wnids: the fine classes in label order (default: the WordNet table's order,
            which is the official ``wnids.txt`` order).
        hierarchy: ``"wordnet"`` (default): the book's 18 WordNet-hypernym classes
            (``tinyimagenet_coarse.tsv``); coarse ids follow the coarse names' first
            appearance in the table. ``"official"``: the official thanos-code's map
            (``tinyimagenet_coarse_official.tsv``), which numbers 67 coarse ids and uses
            52 of them (16 hold a single fine class); the 52 used ids become 0..51 in
            ascending order, named ``official-<id>``, so the partition of the 200
            classes is exactly the official one (the official model's head also has
            15 outputs no image ever has).

    Raises:
        ValueError: an unknown ``hierarchy``, or a wnid the table does not list.

    Example:
        >>> coarse_of, names = tinyimagenet_coarse(hierarchy="official")
        >>> len(coarse_of), len(names), names[:2]
        (200, 52, ['official-0', 'official-2'])
    """
    if hierarchy not in TINYIMAGENET_HIERARCHIES:
        raise ValueError(f"hierarchy={hierarchy!r} is not a TinyImageNet coarse map; valid: "
                         f"{', '.join(TINYIMAGENET_HIERARCHIES)}")
    rows = tinyimagenet_table()
    if hierarchy == "official":
        official = {wnid: c for wnid, _, c in tinyimagenet_official_table()}
        used = sorted(set(official.values()))
        by_wnid = {wnid: used.index(c) for wnid, c in official.items()}
        coarse_names = [f"official-{c}" for c in used]
        table = TINYIMAGENET_OFFICIAL_TABLE
    else:
        coarse_names = []
        for _, _, coarse in rows:
            if coarse not in coarse_names:
                coarse_names.append(coarse)
        by_wnid = {wnid: coarse_names.index(coarse) for wnid, _, coarse in rows}
        table = TINYIMAGENET_TABLE
    order = [wnid for wnid, _, _ in rows] if wnids is None else wnids
    missing = [w for w in order if w not in by_wnid]
    if missing:
        raise ValueError(f"wnids={missing[:3]!r}... are not in {table.name}")
    return [by_wnid[w] for w in order], coarse_names


def read_mapping(path: str | Path) -> dict[str, str]:
    """A user hierarchy for the ``folder`` dataset: lines ``fine<TAB or ,>coarse``.

    Blank lines and lines starting with ``#`` are skipped. A line that is not
    two names split by one tab (or one comma), or a fine class listed twice
    with different coarse classes, raises :class:`CorruptDataset` with the
    file, the line number and the fix.
    """
    mapping: dict[str, str] = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = [p.strip() for p in (line.split("\t") if "\t" in line else line.split(","))]
            if len(parts) != 2 or not all(parts):
                raise CorruptDataset(
                    f"{path} line {n} is {line!r}; expected 'fine<TAB>coarse': put one tab (or one comma) "
                    "between the fine class (its folder name) and its coarse class"
                )
            fine, coarse = parts
            if mapping.get(fine, coarse) != coarse:
                raise CorruptDataset(
                    f"{path} line {n}: fine class {fine!r} maps to two coarse classes "
                    f"({mapping[fine]!r} and {coarse!r}); keep one of the two lines"
                )
            mapping[fine] = coarse
    return mapping
