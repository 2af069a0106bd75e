"""The built book as a reader's browser shows it: every HTML page opened in headless Chromium.

`make browser` runs this after `make html`. The HTML folder is served from 127.0.0.1 on a free
port (every other request is aborted, and Chromium resolves no other host). Each page is opened as
a first visit, at a 1280 × 900 viewport (`TAYNODE_VIEWPORT=1440x900` changes it), and given time
for MathJax, the images and the fonts; then

- **console**: no error on the console, no uncaught exception, no failed request, no request to
  another host;
- **maths**: every `math` element typeset by MathJax (holds an `mjx-container`), no TeX error, and
  no TeX left in the page's text (`\\(`, `\\[`, `$$`, `$x$`, `\\begin{`, `\\frac` …; code, preformatted
  text and MathJax's own output excepted) or in its title;
- **images**: every image loaded (`naturalWidth` > 0);
- **links**: every link into the build reaches a file, and its `#id` is an id of the target page;
- **widths**: no table or code block, as shown, wider than the article's column (4 px tolerance):
  neither sticking out of it nor scrolling sideways inside its own box. A *cell output* that
  scrolls inside its box (a wide DataFrame) is a warning, not a failure: the reader scrolls it.
  Code in a closed "Show code cell source" block is not measured.

A full-page screenshot of every page goes to `_build/screenshots/<page>.png` (`TAYNODE_SCREENSHOTS`
moves the folder). The tests exist only when `TAYNODE_BOOK_HTML` names the HTML folder, so that
`make unit` and `make slow` (`pytest tests`) collect none of them. They are skipped without
Playwright or without a Chromium (`TAYNODE_CHROMIUM`, default Debian's `/usr/bin/chromium`).
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import shutil
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

import pytest

CHROMIUM = os.environ.get("TAYNODE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",  # as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # a closed network: resolve no host but the local server, so that nothing retries connections
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]
# the narrowest desktop layout with both sidebars shown (a 688 px column; from 1440 px on it is 790 px)
_WIDTH, _HEIGHT = os.environ.get("TAYNODE_VIEWPORT", "1280x900").split("x")
VIEWPORT = {"width": int(_WIDTH), "height": int(_HEIGHT)}
WIDTH_TOLERANCE_PX = 4
TIMEOUT_MS = 60_000

# Run in each page once it has loaded: wait for MathJax, the images and the fonts, then collect
# what the checks need. Problems come back as one line each, saying where on the page they are.
_PAGE_JS = r"""async (tol) => {
  // --- settle: images loaded eagerly, MathJax's first typesetting, the fonts
  for (const img of document.images) img.loading = 'eager';
  const mj = window.MathJax;
  if (mj && mj.startup && mj.startup.promise) await mj.startup.promise;
  await Promise.all([...document.images].map(img => img.complete ? null : new Promise(done => {
    img.addEventListener('load', done);
    img.addEventListener('error', done);
  })));
  await document.fonts.ready;

  const where = el => {
    const section = el.closest('section');
    const heading = section && section.querySelector('h1, h2, h3, h4, h5, h6');
    return heading ? 'in section "' + heading.textContent.replace(/#\s*$/, '').trim().slice(0, 60) + '"'
                   : 'in <' + el.tagName.toLowerCase() + '>';
  };
  const words = (text, n) => {
    const line = (text || '').trim().split('\n')[0].replace(/\s+/g, ' ');
    return '"' + (line.length > n ? line.slice(0, n) + '…' : line) + '"';
  };
  const shown = el => el.checkVisibility({visibilityProperty: true, contentVisibilityAuto: true});

  // --- maths: typeset, no TeX errors, no TeX left in the text or the title
  const tex = new RegExp([
    String.raw`\\[()\[\]]`, String.raw`\$\$`, String.raw`\$[^\s$]([^$\n]*[^\s$])?\$`, String.raw`\\begin\{`,
    String.raw`\\(frac|math[a-z]+|[lr]Vert|int|sum|cdot|times|approx|[lg]eq?|lambda|theta|partial|nabla|sqrt)\b`,
  ].join('|'));
  const maths = [];
  for (const el of document.querySelectorAll('span.math, div.math'))
    if (!el.querySelector('mjx-container')) maths.push('not typeset: ' + words(el.textContent, 80) + ' ' + where(el));
  // TeX errors (mjx-merror) and undefined commands (shown in red by MathJax's noundefined package)
  const typeset = mj && mj.startup && mj.startup.document ? Array.from(mj.startup.document.math) : [];
  for (const item of typeset) {
    const root = item.typesetRoot;
    const error = root && root.querySelector('mjx-merror');
    const undefinedCommand = root && root.querySelector('mjx-mtext[style*="color: red"]');
    if (error) maths.push('TeX error ' + words(error.getAttribute('data-mjx-error') || '', 60) + ' in '
                          + words(item.math, 80) + ' ' + where(root));
    else if (undefinedCommand) maths.push('undefined TeX command in ' + words(item.math, 80) + ' ' + where(root));
  }
  if (tex.test(document.title)) maths.push('raw TeX in the page title (browser tab): ' + words(document.title, 100));
  const notProse = 'script, style, noscript, textarea, pre, code, kbd, samp, .highlight, mjx-container, .math';
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const el = node.parentElement;
    if (!el || el.closest(notProse) || !tex.test(node.textContent)) continue;
    maths.push('raw TeX ' + words(node.textContent.match(tex)[0], 20) + ' in ' + words(node.textContent, 100)
               + ' (<' + el.tagName.toLowerCase() + '> ' + where(el) + ')');
  }

  // --- images
  const images = [...document.images].filter(img => img.naturalWidth === 0).map(img =>
    'did not load: ' + (img.getAttribute('src') || '(no src)').slice(0, 120) + ' (' + where(img) + ')');

  // --- links and the ids a link may point to
  const links = [...document.querySelectorAll('a[href]')].map(a => [a.href, words(a.textContent, 60)]);
  const ids = [...document.querySelectorAll('[id]')].map(el => el.id)
    .concat([...document.querySelectorAll('a[name]')].map(a => a.name));

  // --- tables and code blocks wider than the article column
  const column = document.querySelector('article.bd-article') || document.querySelector('main') || document.body;
  const style = getComputedStyle(column);
  const colLeft = column.getBoundingClientRect().left + column.clientLeft + parseFloat(style.paddingLeft);
  const colWidth = column.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
  const scrolls = el => ['auto', 'scroll'].includes(getComputedStyle(el).overflowX);
  const widths = [];
  for (const el of column.querySelectorAll('table, pre')) {
    if (!shown(el) || el.closest('mjx-container')) continue;
    const rect = el.getBoundingClientRect();
    const needs = Math.max(el.scrollWidth, rect.width);
    const sticksOut = rect.left + needs > colLeft + colWidth + tol;
    const scrollsInside = el.scrollWidth > el.clientWidth + tol;
    if (!sticksOut && !scrollsInside) continue;
    let scroller = null;
    for (let box = el; box && box !== column; box = box.parentElement) if (scrolls(box)) { scroller = box; break; }
    const kind = el.closest('.cell_output, .output') ? 'cell output'
               : el.closest('.cell_input') ? 'code cell'
               : el.tagName === 'TABLE' ? 'table' : 'code block';
    const visible = scroller ? Math.min(scroller.clientWidth, colWidth) : colWidth;
    widths.push({
      item: kind + ' needs ' + Math.round(needs) + ' px, shows ' + Math.round(visible) + ' px of a '
            + Math.round(colWidth) + ' px column' + (scroller ? ', scrolls sideways' : ', runs over the margin')
            + ': ' + words(el.innerText, 70) + ' (' + where(el) + ')',
      scrolledOutput: kind === 'cell output' && scroller !== null,
    });
  }
  return {maths, images, links, ids, widths};
}"""


@dataclass
class Visit:
    """What one page showed in the browser: the problems each check found, and what links need."""

    console: list[str] = field(default_factory=list)
    maths: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)
    links: list[tuple[str, str]] = field(default_factory=list)  # (path in the build + #id, link text)
    ids: set[str] = field(default_factory=set)
    widths: list[str] = field(default_factory=list)
    wide_outputs: list[str] = field(default_factory=list)  # scroll inside their own box: warnings
    screenshot: Path | None = None


def _pages(html: Path) -> list[str]:
    """Every HTML page of the build, as its path without `.html` (`book/01_taylor_mode`)."""
    if not html.is_dir():
        return []
    files = (p.relative_to(html) for p in html.rglob("*.html"))
    return sorted(p.with_suffix("").as_posix() for p in files if p.parts[0] not in {"_static", "_sources", "_images"})


def _redirect(file: Path) -> str | None:
    """Where a page that only redirects (`<meta http-equiv="Refresh" ...>`, the root index) leads."""
    head = file.read_text(errors="replace")[:2000]
    found = re.search(r'http-equiv="refresh"\s+content="\d+;\s*url=([^"]+)"', head, re.IGNORECASE)
    return found.group(1) if found else None


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    """The build folder, without a log line per request. `/favicon.ico`, which a browser asks
    every site for, is an empty answer when the build has none (on the published site it is the
    host's business, not the book's)."""

    def do_GET(self):
        if self.path == "/favicon.ico" and not (Path(self.directory) / "favicon.ico").is_file():
            self.send_response(204)
            self.end_headers()
            return
        super().do_GET()

    def log_message(self, format, *args):
        pass


def _serve(html: Path) -> http.server.ThreadingHTTPServer:
    handler = functools.partial(_QuietHandler, directory=str(html))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)  # port 0: a free port
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _in_build(href: str, origin: str) -> str:
    """`http://127.0.0.1:port/book/x.html#id` → `book/x.html#id`; a link elsewhere → ''."""
    parts = urlsplit(href)
    if f"{parts.scheme}://{parts.netloc}" != origin:
        return ""
    return unquote(parts.path).lstrip("/") + (f"#{unquote(parts.fragment)}" if parts.fragment else "")


def _visit_all(html: Path, pages: list[str], shots: Path, profile: Path) -> dict[str, Visit]:
    """Open every page once, in one browser; collect what the checks need; save the screenshots."""
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="Playwright is not installed (`make setup` installs it from requirements.lock)"
    )
    if not shutil.which(CHROMIUM):
        pytest.skip(f"no Chromium at {CHROMIUM}: `apt-get install chromium` (Debian), or set TAYNODE_CHROMIUM")

    server = _serve(html)
    origin = f"http://127.0.0.1:{server.server_address[1]}"
    visits = {name: Visit() for name in pages}
    now: list[Visit] = [Visit()]  # the page being visited, for the event handlers

    def on_route(route):
        if route.request.url.startswith(origin + "/"):
            route.continue_()
        else:
            now[0].console.append(f"request to another host, blocked: {route.request.url[:120]}")
            route.abort("blockedbyclient")

    def on_console(message):
        if message.type == "error":
            now[0].console.append(f"console error: {message.text[:300]}")

    def on_response(response):
        if response.status >= 400:
            now[0].console.append(f"HTTP {response.status}: {response.url.removeprefix(origin)}")

    def on_failed(request):
        if not request.url.startswith(origin + "/"):
            return  # reported by on_route
        now[0].console.append(f"request failed: {request.url.removeprefix(origin)} ({request.failure})")

    try:
        with sync_api.sync_playwright() as pw:
            context = pw.chromium.launch_persistent_context(
                str(profile), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS, viewport=VIEWPORT
            )
            context.set_default_timeout(TIMEOUT_MS)
            context.route("**/*", on_route)
            # each page as a reader's first visit: nothing kept from the pages before it
            context.add_init_script("try { localStorage.clear(); sessionStorage.clear(); } catch (e) {}")
            page = context.pages[0] if context.pages else context.new_page()
            page.on("console", on_console)
            page.on("pageerror", lambda error: now[0].console.append(f"uncaught exception: {error}"[:300]))
            page.on("requestfailed", on_failed)
            page.on("response", on_response)
            for name, visit in visits.items():
                now[0] = visit
                target = _redirect(html / f"{name}.html")
                if target is not None:  # a redirect: its target is checked as a link (and as a page)
                    visit.links = [(_in_build(urljoin(f"{origin}/{name}.html", target), origin), '"(redirect)"')]
                    continue
                page.goto(f"{origin}/{name}.html", wait_until="load")
                found = page.evaluate(_PAGE_JS, WIDTH_TOLERANCE_PX)
                page.wait_for_load_state("networkidle")
                visit.maths, visit.images, visit.ids = found["maths"], found["images"], set(found["ids"])
                visit.links = [(_in_build(href, origin), text) for href, text in found["links"]]
                for wide in found["widths"]:
                    (visit.wide_outputs if wide["scrolledOutput"] else visit.widths).append(wide["item"])
                visit.screenshot = shots / f"{name}.png"
                visit.screenshot.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(visit.screenshot), full_page=True)
            context.close()
    finally:
        server.shutdown()
        server.server_close()
    return visits


def _broken_links(visit: Visit, visits: dict[str, Visit], html: Path) -> list[str]:
    """Links into the build that reach no file, or an `#id` their target page does not have."""
    out = set()
    for target, text in visit.links:
        if not target:
            continue
        path, _, anchor = target.partition("#")
        file = html / path
        if file.is_dir():
            file = file / "index.html"
        if not file.is_file():
            out.add(f"link {text} to a missing page: {target}")
            continue
        page = file.relative_to(html).with_suffix("").as_posix()
        if anchor and file.suffix == ".html" and page in visits and anchor not in visits[page].ids:
            out.add(f"link {text} to a missing anchor: {target}")
    return sorted(out)


def _report(page: str, what: str, problems: list[str]):
    assert not problems, f"{page}.html: {len(problems)} {what}:\n  " + "\n  ".join(problems)


if os.environ.get("TAYNODE_BOOK_HTML"):  # `make browser`; absent from `pytest tests`
    HTML = Path(os.environ["TAYNODE_BOOK_HTML"]).resolve()
    PAGES = _pages(HTML)
    SCREENSHOTS = Path(os.environ.get("TAYNODE_SCREENSHOTS", "_build/screenshots")).resolve()

    @pytest.fixture(scope="module")
    def visits(tmp_path_factory):
        if not PAGES:
            pytest.fail(f"no HTML pages in {HTML}: build the book first (`make html`)")
        return _visit_all(HTML, PAGES, SCREENSHOTS, tmp_path_factory.mktemp("chromium-profile"))

    def test_html_has_pages():
        assert PAGES, f"no HTML pages in {HTML}: build the book first (`make html`)"

    @pytest.mark.parametrize("page", PAGES)
    def test_console(visits, page):
        _report(page, "console errors or failed requests", visits[page].console)

    @pytest.mark.parametrize("page", PAGES)
    def test_maths_rendered(visits, page):
        _report(page, "places where maths is left as TeX", visits[page].maths)

    @pytest.mark.parametrize("page", PAGES)
    def test_images_load(visits, page):
        _report(page, "images that did not load", visits[page].images)

    @pytest.mark.parametrize("page", PAGES)
    def test_internal_links(visits, page):
        _report(page, "broken internal links", _broken_links(visits[page], visits, HTML))

    @pytest.mark.parametrize("page", PAGES)
    def test_fits_column(visits, page):
        for item in visits[page].wide_outputs:
            warnings.warn(f"{page}.html: {item}", UserWarning, stacklevel=1)
        _report(page, "tables or code blocks wider than the column", visits[page].widths)

    def test_checks_find_planted_defects(tmp_path):
        """The checks themselves, on two small pages beside the build's MathJax: one clean page,
        one with a defect of every kind (each must be found, and nothing on the clean page)."""
        site = tmp_path / "site"
        site.mkdir()
        (site / "_static").symlink_to(HTML / "_static")
        head = (
            '<script>window.MathJax = {"options": {"processHtmlClass": "math"}}</script>'
            '<script defer src="_static/mathjax/tex-mml-chtml.js"></script>'
        )
        column = '<article class="bd-article" style="width: 500px; overflow: visible">{}</article>'
        (site / "good.html").write_text(
            f"<html><head><title>Good</title>{head}</head><body>"
            + column.format(
                '<section id="top"><h1>Good</h1><p>Costs <span class="math">\\(x^2\\)</span>; '
                '<code>$HOME</code>; <a href="bad.html#here">a link</a></p><pre>short</pre></section>'
            )
            + "</body></html>"
        )
        (site / "bad.html").write_text(
            f"<html><head><title>The \\(R_K\\) page</title>{head}</head><body>"
            + column.format(
                '<section id="here"><h1>Bad</h1><p>Raw $x^2$ here; <span class="math">\\(\\nosuch\\)</span>, '
                '<span class="math">\\({x\\)</span>.</p>'
                '<img src="missing.png" alt="lost"><img src="http://example.com/x.png" alt="far">'
                '<a href="nowhere.html">gone</a> <a href="good.html#nope">no anchor</a>'
                f'<pre style="overflow: visible">{"x" * 300}</pre><script>console.error("planted")</script></section>'
            )
            + "</body></html>"
        )
        found = _visit_all(site, ["bad", "good"], tmp_path / "shots", tmp_path / "profile")
        good, bad = found["good"], found["bad"]
        assert (good.console, good.maths, good.images, good.widths) == ([], [], [], [])
        assert _broken_links(good, found, site) == []
        assert any("planted" in item for item in bad.console)
        assert any("example.com" in item and "blocked" in item for item in bad.console)
        assert any("page title" in item for item in bad.maths)
        assert any('raw TeX "$x^2$"' in item for item in bad.maths)
        assert any('undefined TeX command in "\\nosuch"' in item for item in bad.maths)
        assert any('not typeset: "\\({x\\)"' in item for item in bad.maths)
        assert len(bad.images) == 2
        assert sorted(item.split(":")[0] for item in _broken_links(bad, found, site)) == [
            'link "gone" to a missing page',
            'link "no anchor" to a missing anchor',
        ]
        assert len(bad.widths) == 1 and "runs over the margin" in bad.widths[0]

    def test_screenshots(visits, capsys):
        shots = [visit.screenshot for visit in visits.values() if visit.screenshot is not None]
        with capsys.disabled():
            print(f"\nscreenshots of {len(shots)} pages:", *(f"  {shot}" for shot in shots), sep="\n")
        assert shots and all(shot.is_file() and shot.stat().st_size > 0 for shot in shots)
