"""How reading an HTML page scales with nesting depth (issue 15).

    .venv/bin/python benchmarks/html_depth.py

For N nested elements it prints, in seconds:
  default    the whole read (read_document) of N nested <div>s under the default limits: refused
             by the pre-parse scan at depth 2000, however deep the page is
  scan       check_html_shape alone over the whole page, the depth limit raised (it must read
             all N tags)
  build      lexbor's tree build alone, limits raised; for <div>s it is quadratic (each block
             start tag looks down the stack of open elements), which is why the scan runs first,
             so it is only run up to 32k
  walk       the text extraction itself (one walk over the built tree), limits raised
For <span>s, which lexbor nests in linear time, build and walk run at every N: the walk's time
grows with N, not with N times the depth.
"""

from __future__ import annotations

import time

from selectolax.lexbor import LexborHTMLParser

from pipeline.ingest.readers import InputError, Limits, _tree_text, check_html_shape, read_document

RAISED = Limits(max_html_depth=10**7, max_html_elements=10**7)
SIZES = (8_000, 32_000, 64_000, 200_000)
MAX_DIV_BUILD = 32_000


def page(tag: str, n: int) -> str:
    return (f"<html><head><title>Nested</title></head><body>{f'<{tag}>' * n}"
            f"The committee noted the report and agreed its recommendations.{f'</{tag}>' * n}</body></html>")


def seconds(fn) -> tuple[float, object]:
    start = time.perf_counter()
    try:
        result = fn()
    except InputError as exc:
        result = exc
    return time.perf_counter() - start, result


def row(tag: str, n: int) -> str:
    html = page(tag, n)
    default_s, outcome = seconds(lambda: read_document("page.html", html.encode(), Limits()))
    scan_s, _ = seconds(lambda: check_html_shape(html, RAISED))
    cells = [f"{tag:>4} {n:>7}", f"{default_s:8.3f}", f"{scan_s:7.3f}"]
    if tag == "div" and n > MAX_DIV_BUILD:
        cells += [f"{'-':>7}", f"{'-':>7}"]
    else:
        build_s, tree = seconds(lambda: LexborHTMLParser(html))
        walk_s, text = seconds(lambda: _tree_text(tree, RAISED))
        assert "noted the report" in text
        cells += [f"{build_s:7.3f}", f"{walk_s:7.3f}"]
    reason = str(outcome) if isinstance(outcome, InputError) else "read"
    return "  ".join(cells) + f"  {reason}"


def main() -> None:
    print(f"{'tag':>4} {'N':>7}  {'default':>8}  {'scan':>7}  {'build':>7}  {'walk':>7}  default outcome")
    for tag in ("div", "span"):
        for n in SIZES:
            print(row(tag, n), flush=True)
    wide = "<html><body>" + "<p>Item text</p>" * 200_000 + "</body></html>"
    build_s, tree = seconds(lambda: LexborHTMLParser(wide))
    walk_s, _ = seconds(lambda: _tree_text(tree, RAISED))
    scan_s, _ = seconds(lambda: check_html_shape(wide, RAISED))
    print(f"200,000 sibling <p>s (not nested): scan {scan_s:.3f} s, build {build_s:.3f} s, walk {walk_s:.3f} s")


if __name__ == "__main__":
    main()
