"""``python -m spreadcon data summary NAME --root DIR`` (CONTRACT §2).

Prints one JSON object on stdout and nothing else there:
``{"name", "splits": {split: {"n", "image_shape", "fine_counts", "coarse_counts"[, "group_counts"]}},
"n_fine", "n_coarse"}`` (plus ``n_groups``, ``task``, ``proxy``). A missing or
unreadable dataset exits with status 1 and one line on stderr saying where to
get it; bad arguments exit with status 2.

Example:
    $ python -m spreadcon data summary mnist --root ../shared/data
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from .datasets import DATASETS, CorruptDataset, DatasetNotFound, load


def summary(ds) -> dict:
    """The CONTRACT §2 summary of a :class:`Dataset` as a JSON-ready dict."""
    splits = {}
    for name, split in ds.splits.items():
        entry = {
            "n": len(split),
            "image_shape": list(ds.image_shape),
            "fine_counts": torch.bincount(split.fine, minlength=ds.n_fine).tolist(),
            "coarse_counts": torch.bincount(split.coarse, minlength=ds.n_coarse).tolist(),
        }
        if split.group is not None:
            entry["group_counts"] = torch.bincount(split.group, minlength=ds.n_groups).tolist()
        splits[name] = entry
    return {
        "name": ds.name,
        "task": ds.task,
        "proxy": ds.proxy,
        "splits": splits,
        "n_fine": ds.n_fine,
        "n_coarse": ds.n_coarse,
        "n_groups": ds.n_groups,
        "fine_names": ds.fine_names,
        "coarse_names": ds.coarse_names,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m spreadcon data", description="inspect datasets")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("summary", help="split sizes and class counts as one JSON object")
    p.add_argument("name", help=f"one of: {', '.join(DATASETS)}")
    p.add_argument("--root", default=None, help="data root (default $SPREADCON_DATA or ~/.cache/spreadcon)")
    p.add_argument("--seed", type=int, default=0, help="seed of the validation hold-out")
    p.add_argument("--image-size", type=int, default=None, help="fixed image size (streaming datasets)")
    p.add_argument("--download", action="store_true", help="download the dataset if it is missing")
    args = parser.parse_args(argv)
    if args.name not in DATASETS:
        print(f"spreadcon data: unknown dataset {args.name!r}; valid: {', '.join(DATASETS)}", file=sys.stderr)
        return 2
    try:
        ds = load(args.name, args.root, seed=args.seed, image_size=args.image_size, download=args.download)
    except (DatasetNotFound, CorruptDataset) as e:
        print(f"spreadcon data: {e}", file=sys.stderr)
        return 1
    print(json.dumps(summary(ds)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
