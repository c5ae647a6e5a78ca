"""The documentation resolves: links, images and `make` targets in README.md and docs/*.md,
and each script's --help names its docs page."""

from __future__ import annotations

import contextlib
import io
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: ``[text](target)`` and ``![alt](target)``; the target ends at a space (a title) or ``)``.
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
#: ``<img src="...">`` and ``<a href="...">``.
HTML_LINK = re.compile(r"""<(?:img|a)\b[^>]*?\b(?:src|href)=["']([^"']+)["']""", re.I)
FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.M | re.S)
INLINE_CODE = re.compile(r"`([^`]+)`")
MAKE = re.compile(r"(?:^|[\s;&|(])make\s+((?:-\S+\s+)*)([A-Za-z0-9_.-]+)")
TARGET = re.compile(r"^([A-Za-z0-9_.%-][A-Za-z0-9_.% -]*?)\s*::?(?!=)", re.M)
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.M)

#: The scripts with a command line, each with the docs page its --help must name.
SCRIPTS = ["train_visual_rl.py", "ship_teacher.py", "save_frames.py", "build_dataset.py",
           "distill_teacher.py", "gplearn_optuna.py", "symbolic_finetuning.py", "results.py",
           "play_policy.py", "evaluate_transfer.py", "report.py", "ship_policy.py",
           "make_figures.py", "space/main.py"]


def tracked_files(root: Path = ROOT) -> set[str]:
    """Paths git tracks under ``root``, relative to it, with forward slashes."""
    out = subprocess.run(["git", "ls-files", "-z"], cwd=root, check=True, capture_output=True)
    return {p for p in out.stdout.decode().split("\0") if p}


def make_targets(makefile: Path) -> set[str]:
    """The targets a Makefile defines (rules and .PHONY names)."""
    text = makefile.read_text()
    targets = set()
    for m in TARGET.finditer(text):
        targets.update(m.group(1).split())
    for line in re.findall(r"^\.PHONY\s*:(.*)$", text, re.M):
        targets.update(line.split())
    return targets


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, markup and punctuation dropped, spaces as
    dashes."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    """The anchors of a markdown page's headings (repeats numbered as GitHub does)."""
    seen: dict[str, int] = {}
    out = set()
    for m in HEADING.finditer(FENCE.sub("", text)):
        base = slug(m.group(1))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def check_page(page: Path, root: Path, tracked: set[str], targets: set[str]) -> list[str]:
    """What does not resolve in one markdown page: relative links and images that name no
    tracked file (or a missing heading), and `make` targets the Makefile lacks."""
    text = page.read_text()
    prose = FENCE.sub("", text)
    problems = []
    for target in LINK.findall(prose) + HTML_LINK.findall(prose):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):
            continue
        path, _, anchor = target.partition("#")
        if path:
            resolved = (page.parent / path).resolve()
            try:
                rel = resolved.relative_to(root.resolve()).as_posix()
            except ValueError:
                problems.append(f"{page.name}: {target} points outside the repository")
                continue
            is_dir = any(t.startswith(rel.rstrip("/") + "/") for t in tracked)
            if rel not in tracked and not is_dir:
                problems.append(f"{page.name}: {target} is not a tracked file")
                continue
        else:
            resolved = page
        if anchor and resolved.suffix == ".md" and anchor not in anchors(resolved.read_text()):
            problems.append(f"{page.name}: {target} names no heading of {resolved.name}")
    code = [m.group(0) for m in FENCE.finditer(text)] + INLINE_CODE.findall(prose)
    for snippet in code:
        for m in MAKE.finditer(snippet):
            if m.group(2) not in targets:
                problems.append(f"{page.name}: make {m.group(2)} is not a Makefile target")
    return problems


def doc_pages(root: Path = ROOT) -> list[Path]:
    """README.md and every page of docs/."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


@pytest.mark.parametrize("page", doc_pages(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_links_images_and_make_targets_resolve(page: Path):
    problems = check_page(page, ROOT, tracked_files(), make_targets(ROOT / "Makefile"))
    assert not problems, "\n".join(problems)


def test_readme_is_short():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 250


def test_checker_finds_planted_mistakes(tmp_path: Path):
    (tmp_path / "Makefile").write_text(".PHONY: demo\ndemo:\n\techo hi\ntest: demo\n")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "page.md").write_text("# Page\n\n## A section (`make demo`)\n")
    (tmp_path / "docs" / "fig.png").write_bytes(b"png")
    (tmp_path / "docs" / "untracked.md").write_text("# Untracked\n")
    page = tmp_path / "README.md"
    page.write_text(
        "# Title\n\n"
        "[fine](docs/page.md) [fine anchor](docs/page.md#a-section-make-demo) "
        "![fine](docs/fig.png) [web](https://example.com/x) [self](#title) [dir](docs/)\n"
        "`make demo` and `make test`\n\n"
        "[broken](docs/missing.md) ![broken image](docs/missing.png) "
        "[untracked](docs/untracked.md) [bad anchor](docs/page.md#no-such-heading)\n"
        "<img src=\"docs/gone.gif\">\n"
        "```bash\nmake demo\nmake no-such-target VAR=1\n```\n")
    tracked = {"README.md", "Makefile", "docs/page.md", "docs/fig.png"}
    problems = check_page(page, tmp_path, tracked, make_targets(tmp_path / "Makefile"))
    assert len(problems) == 6, problems
    for bad in ("docs/missing.md", "docs/missing.png", "docs/untracked.md", "#no-such-heading",
                "docs/gone.gif", "make no-such-target"):
        assert any(bad in p for p in problems), (bad, problems)


def test_slug_matches_github_anchors():
    assert slug("Finding a policy from the teacher (`make routes-breakout`, `make routes-pong`)") \
        == "finding-a-policy-from-the-teacher-make-routes-breakout-make-routes-pong"
    assert slug("Transfer (`evaluate_transfer.py`)") == "transfer-evaluate_transferpy"
    assert slug("Stage II-C: distillation into a symbolic forest") == \
        "stage-ii-c-distillation-into-a-symbolic-forest"


def help_text(script: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The ``--help`` output of a script, run in this process as ``python script --help``."""
    monkeypatch.setattr(sys, "argv", [script, "--help"])
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_:
        runpy.run_path(str(ROOT / script), run_name="__main__")
    assert exit_.value.code == 0
    return out.getvalue()


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_names_its_docs_page(script: str, monkeypatch: pytest.MonkeyPatch):
    text = help_text(script, monkeypatch)
    pages = re.findall(r"docs: (docs/[\w-]+\.md)", text)
    assert pages, f"{script} --help names no docs page"
    assert all(p in tracked_files() for p in pages), pages


def test_help_names_its_docs_page_through_the_real_cli():
    out = subprocess.run([sys.executable, "report.py", "--help"], cwd=ROOT, check=True,
                         capture_output=True, text=True)
    assert "docs: docs/evaluation.md" in out.stdout
