"""Write a copy of the book config with execution off (CI builds from notebooks nbmake executed)."""

import sys

import yaml

src, dst = sys.argv[1], sys.argv[2]
config = yaml.safe_load(open(src))
config["execute"]["execute_notebooks"] = "off"
with open(dst, "w") as f:
    yaml.safe_dump(config, f, sort_keys=False)
