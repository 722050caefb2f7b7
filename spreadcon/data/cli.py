"""``python -m spreadcon data {summary,cache}`` (CONTRACT §2).

``data summary NAME --root DIR`` prints a table for people; with ``--json``
it prints one JSON object on stdout and nothing else there:
``{"name", "splits": {split: {"n", "image_shape", "fine_counts", "coarse_counts"[, "group_counts"]}},
"n_fine", "n_coarse"}`` (plus ``task``, ``proxy``, ``description``, ``n_groups`` and the class and group names).

``data cache`` lists the decoded caches (size, dataset, sources) and
``data cache --clear [NAME]`` removes them (all, or one dataset's).

Both take ``--cache DIR`` (default ``$SPREADCON_CACHE``, else
``$XDG_CACHE_HOME/spreadcon/decoded``, else ``~/.cache/spreadcon/decoded``).

Exit codes: 0 done; 2 a bad argument; :data:`~spreadcon.data.errors.EXIT_MISSING_DATA`
(3) a dataset missing from the data root, with one line on stderr saying
where to get it; :data:`~spreadcon.data.errors.EXIT_BAD_DATA` (4) a dataset
that is there but damaged or unreadable, with one line naming the file and
the fix.

Example:
    $ python -m spreadcon data summary mnist --root ../shared/data
    $ python -m spreadcon data summary mnist --root ../shared/data --json
    $ python -m spreadcon data cache --clear cifar10
"""

from __future__ import annotations

import argparse
import json
import sys

from .cache import CACHE_ENV, cache_dir, clear_caches, human_bytes, list_caches, status_lines
from .datasets import default_root
from .errors import DataError, exit_code
from .registry import DATASETS, load

_CACHE_HELP = (f"folder for decoded caches (default ${CACHE_ENV}, else $XDG_CACHE_HOME/spreadcon/decoded, "
               "else ~/.cache/spreadcon/decoded)")


def summary(ds) -> dict:
    """The CONTRACT §2 summary of a :class:`Dataset` as a JSON-ready dict."""
    import torch

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
        "description": ds.description,
        "splits": splits,
        "n_fine": ds.n_fine,
        "n_coarse": ds.n_coarse,
        "n_groups": ds.n_groups,
        "fine_names": ds.fine_names,
        "coarse_names": ds.coarse_names,
        "group_names": ds.group_names,
    }


def summary_table(s: dict) -> str:
    """A :func:`summary` as a table for people: one column per split, one row per coarse class (and group).

    Example:
        >>> s = {"name": "toy", "task": "transfer", "description": "two classes", "n_fine": 2, "n_coarse": 1,
        ...      "coarse_names": ["all"], "splits": {"train": {"n": 5, "image_shape": [1, 2, 2],
        ...      "fine_counts": [2, 3], "coarse_counts": [5]}}}
        >>> print(summary_table(s))
        toy: two classes
        transfer; images 1x2x2; 2 fine classes -> 1 coarse class
        <BLANKLINE>
                                train
        images                      5
        per fine class (min)        2
        per fine class (max)        3
        coarse all                  5
    """
    splits = s["splits"]
    shape = "x".join(map(str, next(iter(splits.values()))["image_shape"])) if splits else "?"
    plural = lambda n, word: f"{n} {word}" + ("" if n == 1 else "es")  # noqa: E731
    classes = f"{plural(s['n_fine'], 'fine class')} -> {plural(s['n_coarse'], 'coarse class')}"
    head = [f"{s['name']}: {s.get('description', '')}".rstrip(": "),
            f"{s.get('task', '')}; images {shape}; {classes}" + (" (a PROXY, not a paper benchmark)" if s.get("proxy") else "")]
    rows: list[tuple[str, list[int]]] = [
        ("images", [v["n"] for v in splits.values()]),
        ("per fine class (min)", [min(v["fine_counts"], default=0) for v in splits.values()]),
        ("per fine class (max)", [max(v["fine_counts"], default=0) for v in splits.values()]),
    ]
    for c, name in enumerate(s["coarse_names"]):
        rows.append((f"coarse {name}", [v["coarse_counts"][c] for v in splits.values()]))
    for g, name in enumerate(s.get("group_names") or []):
        rows.append((f"group {name}", [v.get("group_counts", [0] * (g + 1))[g] for v in splits.values()]))
    label_w = max(len(r[0]) for r in rows)
    col_w = max([len(n) for n in splits] + [len(str(x)) for _, xs in rows for x in xs]) + 2
    lines = head + ["", " " * label_w + "".join(f"{n:>{col_w}}" for n in splits)]
    lines += [f"{label:<{label_w}}" + "".join(f"{x:>{col_w}}" for x in xs) for label, xs in rows]
    return "\n".join(lines)


def cache_table(folder, entries) -> str:
    """The ``data cache`` listing: one line per cache with its size, dataset and sources."""
    lines = [f"decoded caches in {folder} (override: --cache DIR or ${CACHE_ENV}):"]
    if not entries:
        return lines[0] + " none"
    w = max(len(e.name) for e in entries)
    for e in entries:
        src = ", ".join(e.sources) if e.sources else "sources unknown (no .json beside it)"
        lines.append(f"  {e.name:<{w}}  {human_bytes(e.bytes):>9}  {e.created[:16]:<16}  from {src}")
    lines.append(f"total {human_bytes(sum(e.bytes for e in entries))} in {len(entries)} cache(s); "
                 "`python -m spreadcon data cache --clear [NAME]` removes them")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m spreadcon data", description="inspect datasets and their caches")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("summary", help="split sizes and class counts (a table, or one JSON object with --json)")
    p.add_argument("name", help=f"one of: {', '.join(DATASETS)}")
    p.add_argument("--root", default=None, help="data root (default $SPREADCON_DATA or ~/.cache/spreadcon)")
    p.add_argument("--cache", default=None, metavar="DIR", help=_CACHE_HELP)
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout instead of the table")
    p.add_argument("--seed", type=int, default=0, help="seed of the validation hold-out")
    p.add_argument("--image-size", type=int, default=None, help="fixed image size (streaming datasets)")
    p.add_argument("--download", action="store_true", help="download the dataset into --root if it is missing")
    c = sub.add_parser("cache", help="list the decoded caches, or remove them with --clear")
    c.add_argument("--cache", default=None, metavar="DIR", help=_CACHE_HELP)
    c.add_argument("--clear", nargs="?", const="", default=None, metavar="NAME",
                   help="remove all caches, or one dataset's or cache's (e.g. cifar10; cifar100u shares cifar100's)")
    c.add_argument("--json", action="store_true", help="print the caches as one JSON object")
    return parser


def _cache_command(args) -> int:
    folder = cache_dir(args.cache)
    if args.clear is not None:
        gone = clear_caches(args.clear or None, args.cache)
        if args.json:
            print(json.dumps({"cache_dir": str(folder), "removed": [e.as_dict() for e in gone]}))
        elif gone:
            print(f"removed {len(gone)} cache(s), {human_bytes(sum(e.bytes for e in gone))}, from {folder}: "
                  + ", ".join(e.name for e in gone))
        else:
            what = f"named {args.clear!r} " if args.clear else ""
            print(f"no cache {what}in {folder}; nothing removed")
        return 0
    entries = list_caches(args.cache)
    if args.json:
        print(json.dumps({"cache_dir": str(folder), "caches": [e.as_dict() for e in entries]}))
        return 0
    print(cache_table(folder, entries))
    legacy = default_root() / ".cache"  # where earlier versions put caches when the data root was writable
    old = list_caches(legacy) if legacy != folder else []
    if old:
        print(f"older caches in the data root: {human_bytes(sum(e.bytes for e in old))} in {legacy}; "
              f"`python -m spreadcon data cache --cache {legacy} --clear` removes them")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "cache":
        return _cache_command(args)
    if args.name not in DATASETS:
        print(f"spreadcon data: unknown dataset {args.name!r}; valid: {', '.join(DATASETS)}", file=sys.stderr)
        return 2
    try:
        with status_lines():  # a command for people: say where a first decode went, even into a pipe
            ds = load(args.name, args.root, seed=args.seed, image_size=args.image_size, download=args.download,
                      cache=args.cache)
    except DataError as e:
        print(f"spreadcon data: {' '.join(str(e).split())}", file=sys.stderr)  # one line, whatever the cause says
        return exit_code(e)
    except ValueError as e:  # a bad argument for this dataset (e.g. --image-size)
        print(f"spreadcon data: {e}", file=sys.stderr)
        return 2
    s = summary(ds)
    print(json.dumps(s) if args.json else summary_table(s))
    return 0


if __name__ == "__main__":
    sys.exit(main())
