"""Sphinx extension: small things the book's HTML needs.

- **A `.ipynb` download for every chapter.** sphinx-book-theme adds the ".ipynb" entry of its
  download button only for pages with a launch button (Binder, Colab, …). This extension does the
  same for every notebook page: it copies the executed notebook that MyST-NB wrote to
  `<build>/jupyter_execute/` into the HTML's `_sources/` and tells the theme where it is.
- **MathJax on every page**, so that the sidebar's chapter titles ($R_K$) render on pages that
  have no maths of their own.
- **Each inline script once.** sphinx-thebe registers its configuration script (`const
  THEBE_JS_URL = …`) once per reading of the sources, and a second copy on a page stops it with
  "Identifier 'THEBE_JS_URL' has already been declared".
- **Page titles without TeX.** A chapter titled "The $R_K$ regulariser" would show
  `The \(R_K\) regulariser` in the browser's tab; the `<title>` gets `R_K` instead.
- **Bibliography labels "Author et al. year"**, matching the author-year citations in the text
  (pybtex's default labels are alphabetic codes such as "KBJD20").
"""

from __future__ import annotations

import re
import shutil
from collections import Counter
from pathlib import Path

from pybtex.plugin import register_plugin
from pybtex.style.formatting.unsrt import Style as UnsrtStyle
from pybtex.style.labels import BaseLabelStyle


def _offer_notebook(app, pagename, templatename, context, doctree):
    if doctree is None or "kernelspec" not in app.env.metadata.get(pagename, {}):
        return
    executed = Path(app.outdir).parent / "jupyter_execute" / f"{pagename}.ipynb"
    if not executed.exists():
        return
    target = Path(app.outdir) / "_sources" / f"{pagename}.ipynb"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(executed, target)
    context["ipynb_source"] = f"{pagename}.ipynb"


class AuthorYearLabels(BaseLabelStyle):
    """Labels "Kelly et al. 2020", "Griewank and Walther 2008"; a, b, … where two would clash."""

    def format_labels(self, sorted_entries):
        labels = [self._label(entry) for entry in sorted_entries]
        counts = Counter(labels)
        seen = Counter()
        for label in labels:
            if counts[label] > 1:
                seen[label] += 1
                label = f"{label}{'abcdefghij'[seen[label] - 1]}"
            yield label

    @staticmethod
    def _label(entry):
        persons = entry.persons.get("author", [])
        names = [" ".join(p.last_names) or " ".join(p.first_names) for p in persons]
        names = [n.replace("{", "").replace("}", "") for n in names]
        if not names:
            who = entry.fields.get("title", entry.key)
        elif len(names) == 1:
            who = names[0]
        elif len(names) == 2:
            who = f"{names[0]} and {names[1]}"
        else:
            who = f"{names[0]} et al."
        return f"{who} {entry.fields.get('year', '')}".strip()


class AuthorYearStyle(UnsrtStyle):
    default_label_style = "author_year_labels"
    default_sorting_style = "author_year_title"


register_plugin("pybtex.style.labels", "author_year_labels", AuthorYearLabels)
register_plugin("pybtex.style.formatting", "author_year_unsrt", AuthorYearStyle)


def _one_of_each_script(app, pagename, templatename, context, doctree):
    seen, kept = set(), []
    for script in context.get("script_files", []):
        # an inline script is registered with filename None by some extensions, "" by others
        name = getattr(script, "filename", script) or ""
        key = (name, tuple(sorted(getattr(script, "attributes", {}).items())))
        if key not in seen:
            seen.add(key)
            kept.append(script)
    context["script_files"] = kept


_INLINE_MATH = re.compile(r"\\\((.*?)\\\)|\$([^$]+)\$")


def _plain_title(app, pagename, templatename, context, doctree):
    """`\\(R_K\\)` or `$R_K$` in the tab's title → `R_K` (the heading itself keeps its maths)."""
    if context.get("title"):
        context["title"] = _INLINE_MATH.sub(lambda m: m.group(1) or m.group(2), context["title"])


def setup(app):
    # before sphinx-book-theme draws its header buttons (priority 501)
    app.connect("html-page-context", _offer_notebook, priority=400)
    app.connect("html-page-context", _one_of_each_script, priority=900)
    app.connect("html-page-context", _plain_title, priority=900)
    app.set_html_assets_policy("always")
    return {"parallel_read_safe": True, "parallel_write_safe": True}
