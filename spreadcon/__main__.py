"""Command line: ``python -m spreadcon {data,run,reproduce,bench} ...``.

Each subcommand lives in its own module, which exposes ``main(argv) -> int``;
this file only dispatches, so ``python -m spreadcon data ...`` never imports
the training stack.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "data": ("spreadcon.data.cli", "inspect datasets: `data summary NAME --root DIR`"),
    "run": ("spreadcon.runs.cli", "train and evaluate one (dataset, method, preset, seed)"),
    "reproduce": ("spreadcon.runs.reproduce", "run an experiment grid through papermill"),
    "bench": ("spreadcon.bench", "speed benchmarks (`bench --json`)"),
}


def _usage() -> str:
    lines = ["usage: python -m spreadcon COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<10} {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help"}:
        print(_usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"spreadcon: unknown command {name!r}; valid: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
