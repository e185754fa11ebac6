"""Download a release file at image build time and refuse it unless its SHA-256 is the expected one.

Used by the Containerfile's tool stage (Python is already in the base image, so the stage needs no
curl). ``--sha256`` is the pinned value kept in the Containerfile; ``--checksums-url`` is the
publisher's own checksum file, checked as well when given: the build fails if either disagrees, or if
neither is given.

    python fetch_verified.py URL DEST [--sha256 HEX] [--checksums-url URL]
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import urllib.request
from pathlib import Path


def published_sha256(checksums: str, name: str) -> str:
    """The digest ``checksums`` gives for ``name``: ``<hex>  <name>`` lines, or one bare digest."""
    lines = [line.split() for line in checksums.splitlines() if line.strip()]
    if len(lines) == 1 and len(lines[0]) == 1:
        return lines[0][0].lower()
    for fields in lines:
        if len(fields) >= 2 and fields[-1].lstrip("*") == name:
            return fields[0].lower()
    raise SystemExit(f"the checksum file lists no {name}")


def fetch(url: str, dest: Path, *, sha256: str | None, checksums_url: str | None) -> str:
    if not sha256 and not checksums_url:
        raise SystemExit(f"refusing {url}: no pinned --sha256 and no --checksums-url to check it against")
    with urllib.request.urlopen(url, timeout=300) as response:
        data = response.read()
    actual = hashlib.sha256(data).hexdigest()
    expected = [sha256.lower()] if sha256 else []
    if checksums_url:
        with urllib.request.urlopen(checksums_url, timeout=60) as response:
            expected.append(published_sha256(response.read().decode(), url.rsplit("/", 1)[-1]))
    for digest in expected:
        if digest != actual:
            raise SystemExit(f"{url}: SHA-256 {actual} is not the expected {digest}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(data)
    return actual


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("dest", type=Path)
    parser.add_argument("--sha256")
    parser.add_argument("--checksums-url")
    args = parser.parse_args(argv)
    digest = fetch(args.url, args.dest, sha256=args.sha256, checksums_url=args.checksums_url)
    sys.stdout.write(f"{args.dest}: sha256 {digest} verified\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
