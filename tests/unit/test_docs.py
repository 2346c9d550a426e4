"""The README and docs/: generated number blocks current with results/, pages within their size, links that resolve."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from adaptive_bench import docs
from adaptive_core.config import PROJECT_ROOT

LAB_NOTES = sorted((PROJECT_ROOT / docs.LAB_NOTES).glob("*.md"))


def test_every_generated_block_is_current_and_every_page_within_its_size() -> None:
    problems = docs.check()
    assert not problems, "run `make docs`:\n" + "\n".join(problems)


def test_page_sizes() -> None:
    readme = PROJECT_ROOT / "README.md"
    assert len(readme.read_bytes()) <= 12 * 1024
    pages = sorted((PROJECT_ROOT / "docs").glob("*.md"))
    assert pages, "docs/ has no pages"
    for page in pages:
        assert len(page.read_bytes()) <= 20 * 1024, page.name
    assert docs.pages() == [readme, *pages]  # lab notes are history: not generated, no limit


def _tiny_root(tmp_path: Path) -> Path:
    """A checkout of one page with one block and the results it is written from (provenance recorded)."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "results" / "reliability").mkdir(parents=True)
    soak = json.loads((PROJECT_ROOT / "results" / "reliability" / "soak.json").read_text())
    soak["provenance"] = {
        "commit": "abc1234",
        "machine": {"platform": "Linux x86_64", "cpu_count": 2, "cpu": "test CPU", "gpus": []},
        "date": "2026-12-07T00:00:00+00:00",
        "command": ["python", "-m", "adaptive_bench.reliability", "soak"],
    }
    (tmp_path / "results" / "reliability" / "soak.json").write_text(json.dumps(soak))
    (tmp_path / "README.md").write_text("# t\n\n<!-- generated:soak -->\n<!-- /generated:soak -->\n")
    return tmp_path


def test_check_fails_on_a_hand_edit_and_make_docs_restores_the_block(tmp_path: Path, capsys) -> None:
    root = _tiny_root(tmp_path)
    assert docs.main(["--root", str(root), "--check"]) == 1  # the block is still empty
    assert docs.main(["--root", str(root)]) == 0
    text = (root / "README.md").read_text()
    assert "commit abc1234, 2026-12-07, machine: Linux x86_64, 2 CPUs (test CPU), no GPU." in text
    assert docs.main(["--root", str(root), "--check"]) == 0
    edited = re.sub(r"\| 1 \| (\d+)", lambda m: f"| 1 | {int(m.group(1)) + 1}", text, count=1)
    assert edited != text
    (root / "README.md").write_text(edited)
    capsys.readouterr()
    assert docs.main(["--root", str(root), "--check"]) == 1
    assert "block 'soak' is out of date" in capsys.readouterr().err
    assert docs.main(["--root", str(root)]) == 0
    assert (root / "README.md").read_text() == text


def test_unknown_or_unclosed_blocks_are_reported(tmp_path: Path) -> None:
    root = _tiny_root(tmp_path)
    (root / "README.md").write_text("<!-- generated:nope -->\n<!-- /generated:nope -->\n<!-- generated:soak -->\n")
    problems = docs.check(root)
    assert any("unknown generated block 'nope'" in p for p in problems)
    assert any("generated:soak has no matching" in p for p in problems)
    assert docs.main(["--root", str(root)]) == 1


def test_a_file_without_provenance_is_never_given_a_machine(tmp_path: Path) -> None:
    root = _tiny_root(tmp_path)
    soak = root / "results" / "reliability" / "soak.json"
    soak.write_text(json.dumps({k: v for k, v in json.loads(soak.read_text()).items() if k != "provenance"}))
    src = docs.Results(root).source("results/reliability/soak.json")
    assert src is not None and not src.recorded
    assert (src.commit, src.date, src.machine) == ("not recorded", "not recorded", "not recorded")  # no git here


# --- links --------------------------------------------------------------------------------------------------------

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6} (.+?)\s*$", re.M)


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.replace("`", "").strip().lower())
    return text.replace(" ", "-")


def _prose(text: str) -> str:
    """Markdown without fenced code blocks and inline code, where a link is not a link."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    return re.sub(r"`[^`\n]*`", "", text)


def _anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for h in HEADING.findall(re.sub(r"^```.*?^```", "", page.read_text(), flags=re.M | re.S)):
        slug = _slug(h)
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


@pytest.mark.parametrize("page", [*docs.pages(), *LAB_NOTES], ids=lambda p: p.relative_to(PROJECT_ROOT).as_posix())
def test_links_between_pages_resolve(page: Path) -> None:
    broken = []
    for target in LINK.findall(_prose(page.read_text())):
        if re.match(r"[a-z]+:", target):  # http(s), mailto: outside the repository
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no {dest.relative_to(PROJECT_ROOT) if PROJECT_ROOT in dest.parents else dest}")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{target}: no heading #{anchor} in {dest.name}")
    assert not broken, "\n".join(broken)


def test_slug_matches_github() -> None:
    assert _slug("`make bench-exit`") == "make-bench-exit"
    assert _slug("3. The deadline planner") == "3-the-deadline-planner"
    assert _slug("Triton 2.51 workarounds") == "triton-251-workarounds"
    assert _slug("perf_analyzer: `make perf-sweep`, `make perf-classes`") == (
        "perf_analyzer-make-perf-sweep-make-perf-classes"
    )
