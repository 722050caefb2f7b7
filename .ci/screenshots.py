"""Screenshot every page of the built book, full length, with the network off.

    python .ci/screenshots.py _build/html _build/screenshots

Each ``*.html`` page under the HTML folder (Sphinx's genindex/search pages left out) is opened in
headless Chromium (``$CHROMIUM``, else ``/usr/bin/chromium``; Playwright drives it) at 1100 px
wide and saved as ``<page>.png``, the whole page. Every request that leaves the book's own
files is refused and listed: a page that needs the network would show it here. The console's
JavaScript errors are listed too (the offline alpha slider of chapter 2 must raise none).
Exit 1 if any page asked for the network or raised a JavaScript error.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

SKIP = {"genindex.html", "search.html", "py-modindex.html"}
#: JavaScript errors of the theme, not of the book: Jupyter Book 1 writes sphinx-thebe's settings script
#: into every page twice, so the second ``const THEBE_JS_URL`` throws. Thebe itself is never started
#: (no launch button), so nothing depends on it. Listed, not failed on.
KNOWN = ("Identifier 'THEBE_JS_URL' has already been declared",)


def main(html: Path, out: Path) -> int:
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    pages = sorted(p for p in html.rglob("*.html") if p.name not in SKIP and "_static" not in p.parts)
    bad = 0
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=os.environ.get("CHROMIUM", "/usr/bin/chromium"),
                                     args=["--no-sandbox"])
        for page_path in pages:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            refused: list[str] = []
            errors: list[str] = []
            page.route("**/*", lambda route: route.continue_() if route.request.url.startswith("file:")
                       else (refused.append(route.request.url), route.abort()))
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(page_path.resolve().as_uri(), wait_until="load")
            page.wait_for_timeout(300)
            name = str(page_path.relative_to(html).with_suffix(".png")).replace(os.sep, "__")
            page.screenshot(path=str(out / name), full_page=True)
            height = page.evaluate("document.documentElement.scrollHeight")
            print(f"{out / name}  ({height} px)")
            for url in refused:
                print(f"  network request refused: {url}")
            mine = [e for e in errors if not any(k in e for k in KNOWN)]
            for err in mine:
                print(f"  JavaScript error: {err}")
            if len(mine) < len(errors):
                print(f"  ({len(errors) - len(mine)} known theme error(s) ignored: {', '.join(KNOWN)})")
            bad += bool(refused or mine)
            page.close()
        browser.close()
    return 1 if bad else 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
