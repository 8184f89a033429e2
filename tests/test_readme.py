"""The README stays a page a newcomer reads in five minutes, and no link in the documentation
points at a file that is not there."""
import re

from conftest import ROOT

README_BUDGET = 12 * 1024  # bytes: what it is, a picture, the two commands, the everyday commands, links
DOCS = [ROOT / "README.md", ROOT / "BENCHMARKS.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_the_readme_fits_its_budget_and_opens_with_the_two_commands():
    text = (ROOT / "README.md").read_text()
    assert len(text.encode()) <= README_BUDGET, f"README.md is {len(text.encode())} bytes; move detail to docs/"
    first_screen = text[:text.index("## Colorize your photos")]
    assert "pip install -r requirements.txt && python main.py" in first_screen
    assert "python -m pytest -q -n auto tests" in first_screen and "![" in first_screen


def test_every_relative_link_of_the_documentation_resolves():
    missing = []
    for page in DOCS:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"[a-z]+://|#|mailto:", target):
                continue
            if not (page.parent / target.split("#")[0]).exists():
                missing.append(f"{page.relative_to(ROOT)} -> {target}")
    assert not missing, missing


def test_the_readme_names_no_folder_that_only_exists_beside_this_repository():
    assert "../shared" not in (ROOT / "README.md").read_text()
