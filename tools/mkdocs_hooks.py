"""MkDocs hooks: pages of the site that are files elsewhere in the repository.

``benchmarks/README.md`` becomes the page ``benchmarks/index.md`` and ``CHANGELOG.md`` the page
``changelog.md``; each page stays in its file's folder, so the relative links and images in the file
(``results/mnist_node/pareto.png``) point to the same files in the site, which are added with it.
A link to a file that does not exist is left to MkDocs, whose strict build then fails on it.
"""
import re
from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[1]
PAGES = {"benchmarks/README.md": "benchmarks/index.md", "CHANGELOG.md": "changelog.md"}
LINK = re.compile(r"\]\(([^)\s]+)\)")


def linked_files(source: Path):
    """The existing files that ``source`` links to by a relative path, relative to the repository root."""
    for target in LINK.findall(source.read_text(encoding="utf-8")):
        path = target.split("#", 1)[0]
        if not path or "://" in path or path.startswith(("/", "mailto:")):
            continue
        resolved = (source.parent / path).resolve()
        if resolved.is_file() and ROOT in resolved.parents:
            yield resolved.relative_to(ROOT).as_posix()


def on_files(files, config):
    for source, page in PAGES.items():
        files.append(File.generated(config, page, abs_src_path=str(ROOT / source)))
        for rel in linked_files(ROOT / source):
            if files.get_file_from_path(rel) is None:
                files.append(File.generated(config, rel, abs_src_path=str(ROOT / rel)))
    return files
