"""Expose to a fresh environment the installed dependencies of a wheel, and nothing else.

``tools/check_wheel.sh`` checks the wheel from a fresh virtual environment. Installing torch a
second time there costs about 6 GB of disk (torch's CUDA libraries), more than CI can spare. This
script instead resolves, in the environment that runs it, the closure of the wheel's
``Requires-Dist`` (markers evaluated, extras of the wheel not taken), and links the top-level files
and folders of each distribution in it into ``DEST``. A ``.pth`` file naming ``DEST`` then makes
exactly those distributions, and not the test or example extras, importable in the fresh
environment; ``pip check`` there confirms that they satisfy the wheel's requirements.

Usage: python tools/link_deps.py WHEEL DEST
"""

from __future__ import annotations

import email
import sys
import zipfile
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name


def wheel_requirements(wheel: Path) -> list[Requirement]:
    """The ``Requires-Dist`` entries of ``wheel`` that apply without extras on this interpreter."""
    with zipfile.ZipFile(wheel) as archive:
        names = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        if len(names) != 1:
            raise SystemExit(f"{wheel}: expected one .dist-info/METADATA, found {len(names)}")
        message = email.message_from_bytes(archive.read(names[0]))
    requirements = [Requirement(text) for text in message.get_all("Requires-Dist") or []]
    return [r for r in requirements if applies(r, set())]


def applies(requirement: Requirement, extras: set[str]) -> bool:
    """Whether ``requirement`` holds on this interpreter when ``extras`` of its owner are asked for."""
    marker = requirement.marker
    return marker is None or any(marker.evaluate({"extra": extra}) for extra in extras or {""})


def closure(requirements: list[Requirement]) -> dict[str, metadata.Distribution]:
    """The installed distributions that ``requirements`` reach, by canonical name."""
    found: dict[str, metadata.Distribution] = {}
    pending = list(requirements)
    while pending:
        requirement = pending.pop()
        name = canonicalize_name(requirement.name)
        if name in found:
            continue
        try:
            dist = metadata.distribution(requirement.name)
        except metadata.PackageNotFoundError:
            raise SystemExit(f"{requirement} is required but not installed in {sys.prefix}") from None
        found[name] = dist
        for text in dist.requires or []:
            nested = Requirement(text)
            if applies(nested, set(requirement.extras)):
                pending.append(nested)
    return found


def top_level_entries(dist: metadata.Distribution) -> set[Path]:
    """The files and folders that ``dist`` installed directly in its site-packages folder."""
    if dist.files is None:
        raise SystemExit(f"{dist.metadata['Name']} has no RECORD; cannot tell which files are its own")
    entries = set()
    for file in dist.files:
        first = file.parts[0]
        if first in ("..", "__pycache__"):
            continue  # scripts installed into bin/, byte-code caches
        entries.add(Path(dist.locate_file(first)))
    return entries


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        raise SystemExit(__doc__)
    wheel, dest = Path(argv[0]), Path(argv[1])
    dest.mkdir(parents=True, exist_ok=True)
    dists = closure(wheel_requirements(wheel))
    for dist in dists.values():
        for entry in top_level_entries(dist):
            link = dest / entry.name
            if not link.exists():
                link.symlink_to(entry, target_is_directory=entry.is_dir())
    print("linked " + ", ".join(sorted(f"{d.metadata['Name']} {d.version}" for d in dists.values())))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
