"""The objects of one group of commits, built in memory and stored as one git pack.

libgit2 stores each object as a loose file (a temporary file, a link, an unlink, a directory), holding
the GIL throughout: five objects per change made the group's publisher the bottleneck of every write.
Here a group's blobs, trees and commits are hashed in memory and written as one pack file and its
index (two files per group, whatever its size), byte for byte the objects libgit2 would have written.

Crash safety is git's own: the pack is complete (written, then renamed into ``objects/pack``, index
last, which is what makes git and libgit2 see it) before the branch names any of its objects. A
process killed before that leaves at most a temporary file or a pack nothing refers to, which git's
gc removes; the branch still names the last complete commit. Power losses too: both files are flushed
(at once) before their renames and the folder after both (``durable``), before the branch moves.

Many small packs slow object lookups down, so every so many packs git merges them into a geometric
progression (``git repack --geometric=2 -d``), in its own process, alongside the writers.

Objects are stored, not compressed (``zlib_stored``): zlib cost the one core that serves every write
more than anything else of a commit did.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import struct
import tempfile
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path

import pygit2

from tenancy.service.core import durable

COMMIT, TREE, BLOB = 1, 2, 3
_TYPE_NAMES = {COMMIT: b"commit", TREE: b"tree", BLOB: b"blob"}
TREE_MODE = 0o40000
BLOB_MODE = 0o100644
EMPTY_TREE = b""

TreeEntries = dict[bytes, tuple[int, bytes]]  # name -> (mode, raw object id), as stored
# A tree's data and where each entry's 20-byte id sits in it, by name: trees that differ only in ids
# share the same offsets (never changed once made).
TreeLayout = tuple[bytes, dict[bytes, int]]


def object_id(kind: int, data: bytes) -> bytes:
    """The raw (20-byte) id git gives an object of ``kind`` with ``data``."""
    return hashlib.sha1(b"%s %d\0" % (_TYPE_NAMES[kind], len(data)) + data, usedforsecurity=False).digest()


def parse_tree(data: bytes) -> TreeEntries:
    entries: TreeEntries = {}
    position, end = 0, len(data)
    while position < end:
        space = data.index(b" ", position)
        nul = data.index(b"\0", space)
        entries[data[space + 1 : nul]] = (int(data[position:space], 8), data[nul + 1 : nul + 21])
        position = nul + 21
    return entries


def id_offsets(data: bytes) -> dict[bytes, int]:
    """Where each entry's raw id starts in the tree ``data``, by name."""
    offsets: dict[bytes, int] = {}
    position, end = 0, len(data)
    while position < end:
        space = data.index(b" ", position)
        nul = data.index(b"\0", space)
        offsets[data[space + 1 : nul]] = nul + 1
        position = nul + 21
    return offsets


def serialize_tree(entries: TreeEntries) -> bytes:
    """Git's tree format and order (a folder sorts as if its name ended in ``/``), modes in octal
    without leading zeros, as libgit2's tree builder writes them."""

    def key(item: tuple[bytes, tuple[int, bytes]]) -> bytes:
        name, (mode, _) = item
        return name + b"/" if mode == TREE_MODE else name

    return b"".join(
        b"%o %s\0%s" % (mode, name, raw) for name, (mode, raw) in sorted(entries.items(), key=key)
    )


def signature_line(role: bytes, signature: pygit2.Signature) -> bytes:
    """``author``/``committer`` header of a commit, as libgit2 writes a signature."""
    offset = signature.offset
    sign = b"-" if offset < 0 else b"+"
    offset = abs(offset)
    return b"%s %s <%s> %d %s%02d%02d\n" % (
        role,
        signature.raw_name,
        signature.raw_email,
        signature.time,
        sign,
        offset // 60,
        offset % 60,
    )


def commit_data(
    tree: bytes, parents: Iterable[bytes], author: pygit2.Signature, committer: pygit2.Signature, message: str
) -> bytes:
    head = b"tree %s\n" % tree.hex().encode()
    head += b"".join(b"parent %s\n" % parent.hex().encode() for parent in parents)
    return (
        head
        + signature_line(b"author", author)
        + signature_line(b"committer", committer)
        + b"\n"
        + (message.encode("utf-8"))
    )


class ObjectBatch:
    """Objects in memory, by raw id, until ``write_pack`` stores them all at once."""

    def __init__(
        self,
        read: Callable[[bytes], bytes],
        trees: dict[bytes, TreeEntries] | None = None,
        layouts: dict[bytes, TreeLayout | None] | None = None,
    ) -> None:
        """``read``: the raw data of an object already in the repository (by raw id). ``trees``: trees
        parsed before, by raw id (a cache the caller keeps across batches: each group's trees are the
        next group's base); the trees this batch parses or builds are added to it. ``layouts``: the
        same for trees' data and id offsets (``_edit``'s fast path)."""
        self._read = read
        self._trees: dict[bytes, TreeEntries] = {} if trees is None else trees
        self._layouts: dict[bytes, TreeLayout | None] = {} if layouts is None else layouts
        self.objects: dict[bytes, tuple[int, bytes]] = {}

    def add(self, kind: int, data: bytes) -> bytes:
        raw = object_id(kind, data)
        self.objects.setdefault(raw, (kind, data))
        return raw

    def tree(self, raw: bytes) -> TreeEntries:
        """The entries of tree ``raw``: the caller's to change (a copy of the parsed tree)."""
        return dict(self._parsed(raw))

    def _parsed(self, raw: bytes) -> TreeEntries:
        entries = self._trees.get(raw)
        if entries is None:
            found = self.objects.get(raw)
            entries = parse_tree(found[1] if found is not None else self._read(raw))
            self._trees[raw] = entries
        return entries

    def _add_tree(self, entries: TreeEntries, layout: TreeLayout | None = None) -> bytes:
        """``layout``: the tree's data and offsets, when made without ``serialize_tree``."""
        raw = self.add(TREE, serialize_tree(entries) if layout is None else layout[0])
        self._trees.setdefault(raw, entries)  # never changed after this
        if layout is not None:
            self._layouts.setdefault(raw, layout)
        return raw

    def edit_tree(self, tree: bytes | None, parts: list[str], blob: bytes | None) -> bytes:
        """The tree ``tree`` with the file at ``parts`` set to ``blob`` (removed when None); folders
        left empty disappear, as with ``git rm``; the empty tree when nothing is left."""
        edited = self._edit(tree, [part.encode() for part in parts], blob)
        return edited if edited is not None else self.add(TREE, EMPTY_TREE)

    def _edit(self, tree: bytes | None, parts: list[bytes], blob: bytes | None) -> bytes | None:
        entries = self.tree(tree) if tree is not None else {}
        head, rest = parts[0], parts[1:]
        before = entries.get(head)
        if not rest:
            if blob is None:
                entries.pop(head, None)
            else:
                entries[head] = (BLOB_MODE, blob)
        else:
            below = before[1] if before is not None and before[0] == TREE_MODE else None
            edited = self._edit(below, rest, blob)
            if edited is None:
                entries.pop(head, None)
            else:
                entries[head] = (TREE_MODE, edited)
        if not entries:
            return None
        after = entries.get(head)
        if tree is not None and before is not None and after is not None and before[0] == after[0]:
            # Only an id changes (a tenant's file, or the folder above it): the same bytes with the new
            # id in place, instead of sorting and formatting every entry again (0.8 ms a tree at 1,000
            # tenants, three trees a commit, under the commit lock).
            layout = self._layout(tree)
            if layout is not None:
                data, offsets = layout
                at = offsets[head]
                return self._add_tree(entries, (data[:at] + after[1] + data[at + 20 :], offsets))
        return self._add_tree(entries)

    def _layout(self, raw: bytes) -> TreeLayout | None:
        """The tree's data and id offsets; None when its data is not as ``serialize_tree`` writes it
        (a tree another tool wrote, say with a zero-padded mode): then it is built again in full, as
        libgit2 would, not edited in place."""
        if raw in self._layouts:
            return self._layouts[raw]
        found = self.objects.get(raw)
        if found is not None:
            data = found[1]  # built here: canonical
        else:
            data = self._read(raw)
            if serialize_tree(parse_tree(data)) != data:
                self._layouts[raw] = None
                return None
        layout = self._layouts[raw] = (data, id_offsets(data))
        return layout

    def blob_at(self, tree: bytes, path: str) -> bytes | None:
        """The raw id of the blob at ``path`` under ``tree`` (None if there is none)."""
        entry = entry_at(self._parsed, tree, path)
        return entry[1] if entry is not None and entry[0] != TREE_MODE else None

    def write_pack(self, pack_dir: Path, *, flush_folder: bool = True) -> Path | None:
        """Store every object as one pack (and its index) in ``pack_dir``; the pack's path (None when
        there was nothing to store). Visible to git once the index is in place, which comes last.
        ``flush_folder=False``: the caller flushes ``pack_dir`` (the names) before anything refers to
        the objects (the tenants repository, at once with the branch's lock file)."""
        if not self.objects:
            return None
        body = bytearray(b"PACK" + struct.pack(">II", 2, len(self.objects)))
        index: list[tuple[bytes, int, int]] = []  # raw id, crc32 of the entry, offset in the pack
        for raw, (kind, data) in self.objects.items():
            offset = len(body)
            size = len(data)
            header = bytearray()
            byte = (kind << 4) | (size & 0x0F)
            size >>= 4
            while size:
                header.append(byte | 0x80)
                byte = size & 0x7F
                size >>= 7
            header.append(byte)
            entry = bytes(header) + zlib_stored(data)
            body += entry
            index.append((raw, zlib.crc32(entry), offset))
        pack_sum = hashlib.sha1(body, usedforsecurity=False).digest()
        body += pack_sum
        index.sort()
        fanout = [0] * 256
        for raw, _, _ in index:
            fanout[raw[0]] += 1
        total = 0
        for first in range(256):
            total += fanout[first]
            fanout[first] = total
        idx = bytearray(b"\377tOc" + struct.pack(">I", 2))
        idx += struct.pack(">256I", *fanout)
        idx += b"".join(raw for raw, _, _ in index)
        idx += b"".join(struct.pack(">I", crc) for _, crc, _ in index)
        idx += b"".join(struct.pack(">I", offset) for _, _, offset in index)  # packs stay far below 2 GiB
        idx += pack_sum
        idx += hashlib.sha1(idx, usedforsecurity=False).digest()
        name = f"pack-{pack_sum.hex()}"
        pack_path = pack_dir / f"{name}.pack"
        _write_files(pack_dir, [(pack_path, bytes(body)), (pack_dir / f"{name}.idx", bytes(idx))])
        if flush_folder:
            durable.sync_folders([pack_dir])  # both names, before anything refers to the objects
        return pack_path


def entry_at(
    tree_entries: Callable[[bytes], TreeEntries], tree: bytes, path: str
) -> tuple[int, bytes] | None:
    """The entry (mode, raw id) at ``path`` under ``tree`` (None if there is none), each tree's
    entries given by ``tree_entries`` (by raw id)."""
    entries = tree_entries(tree)
    *folders, name = path.encode().split(b"/")
    for folder in folders:
        entry = entries.get(folder)
        if entry is None or entry[0] != TREE_MODE:
            return None
        entries = tree_entries(entry[1])
    return entries.get(name)


_STORED_BLOCK_BYTES = 0xFFFF  # the most one stored deflate block holds
_ZLIB_HEADER = b"\x78\x01"  # deflate with a 32 KiB window, "fastest" level, header check included


def zlib_stored(data: bytes) -> bytes:
    """``data`` as a zlib stream (RFC 1950) of stored deflate blocks (RFC 1951): what git and libgit2
    inflate like any other stream, at the cost of a copy and a checksum. zlib's deflate allocates and
    clears about 256 KiB of state per call, whatever the level (level 0 too): 60-100 us per change here
    (five small objects), about 0.8 ms at 1,000 tenants (the folder's tree is 40 KB), on the one core
    that serves every write. The price is disk: git deltifies and compresses what it can when it
    merges packs, but copies an object it finds no delta for as it is, so packs hold about a fifth
    more bytes (200 changes: 97 KB against 80 KB after ``git repack -a -d``), a few MB at most for
    a repository of small YAML files."""
    last = max(len(data) - 1, 0) // _STORED_BLOCK_BYTES  # an empty object is one empty final block
    parts = [_ZLIB_HEADER]
    for number in range(last + 1):
        block = data[number * _STORED_BLOCK_BYTES : (number + 1) * _STORED_BLOCK_BYTES]
        size = len(block)
        parts.append(struct.pack("<BHH", number == last, size, size ^ 0xFFFF))  # BFINAL, BTYPE 00
        parts.append(block)
    parts.append(struct.pack(">I", zlib.adler32(data)))
    return b"".join(parts)


def _write_files(folder: Path, files: list[tuple[Path, bytes]]) -> None:
    """Each file's data at its path, in order, read-only as git makes its packs, each appearing whole
    or not at all: written under temporary names, flushed to the disk together, then renamed (the
    folder is the caller's to flush)."""
    staged: list[str] = []
    try:
        descriptors: list[int] = []
        try:
            for _, data in files:
                descriptor, temporary = tempfile.mkstemp(prefix="tmp_pack_", dir=folder)
                descriptors.append(descriptor)
                staged.append(temporary)
                view = memoryview(data)
                while view:
                    view = view[os.write(descriptor, view) :]
            durable.fsync_together(descriptors)
        finally:
            for descriptor in descriptors:
                os.close(descriptor)
        for temporary, (path, _) in zip(staged, files, strict=True):
            os.chmod(temporary, 0o444)
            os.rename(temporary, path)
    except BaseException:
        for temporary in staged:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
        raise
