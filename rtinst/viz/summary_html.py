"""The executed summary notebook as one self-contained HTML page (``results/summary.html``).

nbconvert's HTMLExporter without code, ``In``/``Out`` prompts or the CDN scripts (require.js,
MathJax: the page has no widgets or formulas, and it must open offline); images are already
embedded as data URIs by the notebook. On top: a table of contents linking every h1-h3
heading, and CSS that keeps wide tables inside the page width (they scroll sideways).
"""

from __future__ import annotations

from pathlib import Path

from rtinst.io import atomic_write_text

PAGE_CSS = """
body { max-width: 1400px; margin: 0 auto; padding: 0 1.5em; }
nav.rtinst-toc { border: 1px solid #ccc; background: #fafafa; padding: 0.5em 1.5em;
                 margin: 1em 0; font-family: sans-serif; font-size: 14px; }
nav.rtinst-toc ul { margin: 0.2em 0; padding-left: 1.2em; }
nav.rtinst-toc li.toc-h3 { margin-left: 1.2em; font-size: 0.95em; }
.jp-RenderedHTMLCommon table, .jp-OutputArea-output table { display: block; max-width: 100%;
    overflow-x: auto; font-size: 11px; }
.jp-RenderedHTMLCommon td, .jp-RenderedHTMLCommon th { white-space: nowrap; padding: 0.2em 0.5em; }
.jp-OutputArea-output pre { white-space: pre-wrap; word-break: break-word; }
img { max-width: 100%; height: auto; }
.jp-InputPrompt, .jp-OutputPrompt { display: none; }
"""


def _strip_external_scripts(soup) -> None:
    for tag in soup.find_all("script", src=True):
        if tag["src"].startswith(("http://", "https://")):
            tag.decompose()
    for tag in soup.find_all("link", href=True):
        if tag["href"].startswith(("http://", "https://")):
            tag.decompose()


def _add_toc(soup) -> list[tuple[int, str, str]]:
    """A list of links to every h1-h3 (by their nbconvert ids), inserted after the first h1."""
    headings = []
    for i, h in enumerate(soup.find_all(["h1", "h2", "h3"])):
        for a in h.find_all("a", class_="anchor-link"):
            a.decompose()  # the pilcrow link nbconvert appends to each heading
        if not h.get("id"):
            h["id"] = f"section-{i}"
        headings.append((int(h.name[1]), h["id"], h.get_text(strip=True)))
    if not headings:
        return headings
    nav = soup.new_tag("nav", attrs={"class": "rtinst-toc"})
    title = soup.new_tag("strong")
    title.string = "Contents"
    nav.append(title)
    ul = soup.new_tag("ul")
    for level, anchor, text in headings[1:]:
        li = soup.new_tag("li", attrs={"class": f"toc-h{level}"})
        link = soup.new_tag("a", href=f"#{anchor}")
        link.string = text
        li.append(link)
        ul.append(li)
    nav.append(ul)
    first = soup.find("h1")
    # after the first h1's cell, so the page opens with its title and intro, then the contents
    cell = first.find_parent("div", class_="jp-Cell") or first
    cell.insert_after(nav)
    return headings


def summary_html(notebook_node) -> str:
    """The page for an executed notebook (an nbformat node)."""
    from bs4 import BeautifulSoup
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(exclude_input=True, exclude_input_prompt=True,
                            exclude_output_prompt=True)
    body, _ = exporter.from_notebook_node(notebook_node)
    soup = BeautifulSoup(body, "html.parser")
    _strip_external_scripts(soup)
    _add_toc(soup)
    style = soup.new_tag("style")
    style.string = PAGE_CSS
    (soup.head or soup).append(style)
    return str(soup)


def render_summary_html(notebook: str | Path, html: str | Path) -> Path:
    """Render the executed notebook file to ``html`` (atomically)."""
    import nbformat

    atomic_write_text(Path(html), summary_html(nbformat.read(str(notebook), 4)))
    return Path(html)
