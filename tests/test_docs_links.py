"""Links between the repository's Markdown pages resolve: every relative link names a file or
folder that git tracks, and every `#anchor` names a heading of its target page (GitHub's
heading slugs), so a page that is reorganized cannot leave a reader at a dead link."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"(?ms)^```.*?^```")
CODE = re.compile(r"`[^`\n]*`")  # inline code is not a link, e.g. `norm[D](q[:100])`


def github_slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in FENCE.sub("", markdown).splitlines():
        m = re.match(r"#{1,6} (.+)", line)
        if not m:
            continue
        slug = github_slug(m.group(1))
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def tracked_pages() -> list[Path]:
    files = subprocess.run(["git", "ls-files", "*.md"], cwd=REPO, capture_output=True, text=True,
                           check=True).stdout.split()
    # run folders hold generated pages; their links are the generator's business
    return [REPO / f for f in files if not f.startswith("results/runs/")]


def dead_links(page: Path, root: Path = REPO) -> list[str]:
    dead = []
    for target in LINK.findall(CODE.sub("", FENCE.sub("", page.read_text()))):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            dead.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest.read_text()):
            dead.append(f"{target}: no heading with that anchor in {dest.relative_to(root)}")
    return dead


def test_slug_matches_github():
    assert github_slug("The tiny scale: the synthetic data's `easy` level") == \
        "the-tiny-scale-the-synthetic-datas-easy-level"
    assert github_slug("Ready for a GPU lease (none lent yet)") == "ready-for-a-gpu-lease-none-lent-yet"
    assert anchors("# A\n## A\n```\n# not a heading\n```\n") == {"a", "a-1"}


def test_dead_link_is_reported(tmp_path):
    (tmp_path / "b.md").write_text("# Only heading\n")
    page = tmp_path / "a.md"
    page.write_text("[ok](b.md#only-heading) [gone](c.md) [wrong](b.md#other) [web](https://x.org)\n")
    assert dead_links(page, root=tmp_path) == ["c.md: no such file",
                                               "b.md#other: no heading with that anchor in b.md"]


@pytest.mark.parametrize("page", tracked_pages(), ids=lambda p: str(p.relative_to(REPO)))
def test_links_resolve(page):
    assert dead_links(page) == []
