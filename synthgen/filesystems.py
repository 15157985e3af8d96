"""Which filesystem a path lives on, for the choices that depend on it (SQLite's journal mode).

SQLite's WAL mode keeps its index in shared memory, which only processes on one host can share: on a network
filesystem (NFS, SMB, Lustre, GPFS, CephFS, BeeGFS, FUSE mounts) a WAL database written from two nodes is
corrupted. Linux names each mount's type in /proc/self/mountinfo; elsewhere the type is unknown and WAL is kept.
"""

from __future__ import annotations

import os
from pathlib import Path

MOUNTINFO = Path("/proc/self/mountinfo")
NETWORK_TYPES = frozenset({"nfs", "nfs4", "cifs", "smb3", "smbfs", "lustre", "gpfs", "ceph", "beegfs", "9p",
                           "afs", "glusterfs", "orangefs", "pvfs2", "ocfs2", "gfs2"})


def filesystem_type(path: Path) -> str | None:
    """The type of the filesystem `path` (or its nearest existing parent) is on, e.g. 'ext4' or 'nfs4'."""
    try:
        lines = MOUNTINFO.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    target = os.path.realpath(path)
    best, found = -1, None
    for line in lines:
        left, _, right = line.partition(" - ")
        fields, kind = left.split(" "), right.split(" ", 1)[0]
        if len(fields) < 5 or not kind:
            continue
        mount = fields[4].replace("\\040", " ").replace("\\011", "\t").replace("\\134", "\\")
        inside = target == mount or target.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= best:  # the innermost mount; a later one at the same point shadows earlier
            best, found = len(mount), kind
    return found


def is_network_filesystem(path: Path) -> bool:
    """Whether `path` is on a filesystem shared between hosts (where SQLite's WAL mode is unsafe)."""
    kind = filesystem_type(path) or ""
    return kind in NETWORK_TYPES or kind.startswith("fuse")
