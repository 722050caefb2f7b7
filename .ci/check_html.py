"""Check the built HTML: every page in the TOC exists, executed chapters carry
outputs and no error tracebacks, and MathJax is served locally."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml

html = Path(sys.argv[1] if len(sys.argv) > 1 else "_build/html")
root = Path(__file__).resolve().parents[1]
toc = yaml.safe_load((root / "_toc.yml").read_text())
pages = [toc["root"]] + [c["file"] for part in toc.get("parts", []) for c in part["chapters"]]
problems = []
for page in pages:
    out = html / f"{page}.html"
    if not out.is_file():
        problems.append(f"missing page {out}")
        continue
    text = out.read_text(errors="replace")
    if 'class="math' in text and "mathjax/tex-chtml-full.js" not in text:
        problems.append(f"{out}: has math but MathJax is not the local copy")
    if re.search(r"cdn\.jsdelivr\.net/npm/mathjax", text):
        problems.append(f"{out}: loads MathJax from a CDN")
    if "Traceback (most recent call last)" in text or 'class="output traceback' in text:
        problems.append(f"{out}: contains an error traceback")
    if (root / f"{page}.ipynb").is_file() and "cell_output" not in text:
        problems.append(f"{out}: notebook page has no executed output")
    source = root / f"{page}.ipynb"
    if source.is_file() and "matplotlib" in source.read_text() and "_images/" not in text:
        problems.append(f"{out}: the notebook plots, but the page has no figure image")
    if "&lt;Figure size" in text:
        problems.append(f"{out}: a figure rendered as text (no image/png output; is MPLBACKEND set?)")
    if re.search(r"<p>\|[^<]*\|\s*\|?(-{3}|\u2014)", text):
        problems.append(f"{out}: a Markdown table rendered as plain text")
if not (html / "_static" / "mathjax" / "tex-chtml-full.js").is_file():
    problems.append("MathJax missing from _build/html/_static/mathjax")
if problems:
    print("HTML check failed:\n  " + "\n  ".join(problems))
    sys.exit(1)
print(f"HTML check passed: {len(pages)} pages under {html}")
