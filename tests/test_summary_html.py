"""results/summary.html: one self-contained page with a table of contents, no prompts, and
wide tables kept inside the page."""

import base64
import re

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from rtinst.viz.summary_html import render_summary_html

PNG = base64.b64encode(bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082")).decode()


def test_summary_page_toc_no_prompts_self_contained(tmp_path):
    nb = new_notebook(cells=[
        new_markdown_cell("# Title\n\nintro"),
        new_code_cell("1", execution_count=7, outputs=[new_output(
            "execute_result", {"text/plain": "1", "text/html": "<table><tr><td>wide</td></tr></table>"},
            execution_count=7)]),
        new_markdown_cell("## Claims"),
        new_code_cell("img", execution_count=8, outputs=[new_output(
            "display_data", {"image/png": PNG, "text/plain": "<Image>"})]),
        new_code_cell("md", execution_count=9, outputs=[new_output(
            "display_data", {"text/markdown": "### fastinst/table1", "text/plain": "md"})]),
    ])
    nbformat.write(nb, tmp_path / "s.ipynb")
    html = render_summary_html(tmp_path / "s.ipynb", tmp_path / "s.html").read_text()
    assert not re.search(r"(Out|In)(&nbsp;| )?\[[0-9]", html)  # no In [7] / Out[7] prompts
    assert not re.search(r'src="https?://', html)  # opens offline: no CDN scripts
    assert f"data:image/png;base64,{PNG}" in html  # the image is in the page
    toc = html[html.index('<nav class="rtinst-toc"'):html.index("</nav>")]
    links = re.findall(r'href="#([^"]+)"', toc)
    assert len(links) == 2  # the h2 and the h3 from a markdown output (the h1 is the title)
    for anchor in links:
        assert f'id="{anchor}"' in html
    assert html.index("intro") < html.index('<nav class="rtinst-toc"') < html.index("Claims</h2>")
    assert "overflow-x: auto" in html and "max-width: 100%" in html
