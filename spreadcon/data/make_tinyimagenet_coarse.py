"""Derive the TinyImageNet 200 → coarse table from WordNet hypernyms.

This script made ``tinyimagenet_coarse.tsv``; loading never runs it. It needs
WordNet 3.0's ``data.noun`` (Debian: ``apt-get install -y wordnet-base``, which
puts it at ``/usr/share/wordnet/data.noun``) and the official ``wnids.txt`` /
``words.txt`` from TinyImageNet.

The rule:

1. Build the noun hypernym graph from ``data.noun`` (pointers ``@`` hypernym
   and ``@i`` instance hypernym). A TinyImageNet wnid ``nXXXXXXXX`` is the
   WordNet 3.0 noun synset at byte offset ``XXXXXXXX``.
2. ``COARSE`` below is a fixed, ordered list of (coarse name, anchor synsets).
   For each wnid, find its hypernym distance (shortest path up the graph, 0 for
   the synset itself) to every anchor synset.
3. The wnid's coarse class is the one owning the *nearest* anchor; ties go to
   the earlier entry of ``COARSE``. The last entry (``artifact`` / ``entity``)
   catches everything, so every wnid gets exactly one coarse class.

Run: ``python -m spreadcon.data.make_tinyimagenet_coarse WNIDS WORDS
[--wordnet /usr/share/wordnet/data.noun] > tinyimagenet_coarse.tsv``
"""

from __future__ import annotations

import argparse
import sys
from collections import deque

# (coarse name, anchor synset ids). Order breaks ties between equally near anchors.
COARSE: list[tuple[str, list[str]]] = [
    ("dog", ["n02084071"]),  # dog, domestic dog
    ("cat", ["n02120997"]),  # feline
    ("bird", ["n01503061"]),  # bird
    ("insect", ["n02159955"]),  # insect
    ("other_invertebrate", ["n01905661"]),  # invertebrate
    ("reptile_amphibian_fish", ["n01661091", "n01627424", "n02512053"]),  # reptile, amphibian, fish
    ("mammal", ["n01861778"]),  # mammal
    ("fruit_vegetable", ["n07705711", "n13134947", "n07707451"]),  # produce, fruit (botanical), vegetable
    ("food", ["n07555863", "n00021265", "n07566340"]),  # food/solid food, food/nutrient, foodstuff
    ("vehicle", ["n04524313", "n03100490"]),  # vehicle, conveyance/transport
    ("clothing", ["n03051540", "n03381126", "n03380867", "n03502509"]),  # clothing, footwear (x2), headdress
    ("furniture", ["n03405725"]),  # furniture, piece of furniture
    ("building_structure", ["n04341686"]),  # structure, construction
    ("container", ["n03094503"]),  # container
    ("landscape", ["n09287968"]),  # geological formation
    ("device", ["n03183080"]),  # device
    ("instrumentality", ["n03575240"]),  # instrumentality, instrumentation
    ("artifact", ["n00021939", "n00001740"]),  # artifact; entity (catch-all)
]


def read_hypernyms(data_noun: str) -> dict[str, list[str]]:
    """Map each noun synset id ``n<offset>`` to its (instance) hypernym ids."""
    graph: dict[str, list[str]] = {}
    with open(data_noun, encoding="latin-1") as f:
        for line in f:
            if line.startswith("  "):  # licence header
                continue
            head = line.split("|", 1)[0].split()
            offset, n_words = head[0], int(head[3], 16)
            pos = 4 + 2 * n_words
            n_ptr = int(head[pos])
            parents = []
            for k in range(n_ptr):
                symbol, target, target_pos = head[pos + 1 + 4 * k : pos + 4 + 4 * k]
                if symbol in {"@", "@i"} and target_pos == "n":
                    parents.append("n" + target)
            graph["n" + offset] = parents
    return graph


def distances_up(graph: dict[str, list[str]], wnid: str) -> dict[str, int]:
    """Shortest hypernym distance from ``wnid`` to each of its ancestors (itself: 0)."""
    dist = {wnid: 0}
    queue = deque([wnid])
    while queue:
        node = queue.popleft()
        for parent in graph.get(node, []):
            if parent not in dist:
                dist[parent] = dist[node] + 1
                queue.append(parent)
    return dist


def assign(graph: dict[str, list[str]], wnid: str) -> str:
    """The coarse name of the nearest listed anchor (ties: earlier in ``COARSE``)."""
    if wnid not in graph:
        raise ValueError(f"wnid={wnid!r} is not a WordNet 3.0 noun synset")
    dist = distances_up(graph, wnid)
    best = None
    for rank, (name, anchors) in enumerate(COARSE):
        for anchor in anchors:
            if anchor in dist and (best is None or (dist[anchor], rank) < best[:2]):
                best = (dist[anchor], rank, name)
    if best is None:
        raise ValueError(f"wnid={wnid!r} reaches none of the COARSE anchors")
    return best[2]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("wnids")
    parser.add_argument("words")
    parser.add_argument("--wordnet", default="/usr/share/wordnet/data.noun")
    args = parser.parse_args(argv)
    graph = read_hypernyms(args.wordnet)
    with open(args.words, encoding="utf-8") as f:
        words = dict(line.rstrip("\n").split("\t", 1) for line in f if "\t" in line)
    with open(args.wnids, encoding="utf-8") as f:
        wnids = f.read().split()
    print("wnid\tfine_name\tcoarse_name")
    for wnid in wnids:
        fine = words[wnid].split(",")[0].strip()
        print(f"{wnid}\t{fine}\t{assign(graph, wnid)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
