"""Durable on-disk store of received instances.

Layout under ``storage_dir``::

    node.db                         SQLite job queue (queue.py)
    incoming/<study key>/<SOPInstanceUID>.dcm
    work/<study key>/<run>/         app output of one run, before it is accepted
    outbox/<study key>/<run>/       accepted SRs / PDFs waiting for (or done with) export
    tmp/                            temporary files before their atomic rename
    failed/<study key>/             instances of studies that kept failing

``<study key>`` is a hash of (calling AE, StudyInstanceUID); instance file names are SOP Instance
UIDs that passed the UID grammar (digits and dots only), so no received value can climb out of
the store. Every file is written to a temporary name, fsync'ed, renamed with ``os.replace`` and its
directory fsync'ed before the node answers Success.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from uar.data.dicom_guard import is_valid_uid as is_valid_uid  # re-exported for the SCP

# errno values that mean "the disk cannot take this" and map to C-STORE status 0xA700.
NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def study_key(calling_ae: str, study_uid: str) -> str:
    """Folder name of a study: 24 hex digits of SHA-256 over (calling AE, StudyInstanceUID)."""
    return hashlib.sha256(f"{calling_ae}\x00{study_uid}".encode()).hexdigest()[:24]


def fsync_dir(path: Path) -> None:
    """fsync a directory so that a rename or a new entry inside it survives power loss."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs(path: Path) -> None:
    """``mkdir -p`` that fsyncs each parent whose entry it created."""
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir()
        except FileExistsError:
            continue
        fsync_dir(d.parent)


def write_durable(path: Path, data: bytes | bytearray | memoryview, tmp_dir: Path | None = None) -> None:
    """Write ``data`` to ``path`` atomically and durably (temp file, fsync, ``os.replace``, dir fsync).

    The temporary file lives in ``tmp_dir`` (same file system; default: beside ``path``), so readers
    of ``path.parent`` never see half-written files. On any error the temporary file is removed and
    ``path`` is untouched; the ``OSError`` propagates.
    """
    tmp = (tmp_dir or path.parent) / f".{path.name}.{uuid.uuid4().hex}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def copy_durable(src: Path, dst: Path) -> None:
    """Copy file ``src`` to ``dst`` with :func:`write_durable`."""
    write_durable(dst, src.read_bytes())


@dataclass(frozen=True)
class StoredInstance:
    """Where an instance was stored and whether it was new (False = same SOP Instance UID seen before)."""

    path: Path
    created: bool


class InstanceStore:
    """The folder tree described in the module docstring."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        for name in ("incoming", "work", "outbox", "failed", "tmp"):
            make_dirs(self.root / name)
        for leftover in (self.root / "tmp").iterdir():  # temp files of writes cut short by a crash
            leftover.unlink(missing_ok=True)

    @property
    def db_path(self) -> Path:
        """The SQLite queue file."""
        return self.root / "node.db"

    def incoming_dir(self, key: str) -> Path:
        """Instances of study ``key`` waiting for (or used by) the app."""
        return self.root / "incoming" / key

    def instance_path(self, key: str, sop_uid: str) -> Path:
        """Path of one instance; ``sop_uid`` must pass :func:`is_valid_uid`."""
        if not is_valid_uid(sop_uid):
            raise ValueError("SOP Instance UID does not follow the UID grammar")
        return self.incoming_dir(key) / f"{sop_uid}.dcm"

    def put(self, key: str, sop_uid: str, encoded: bytes | bytearray | memoryview) -> StoredInstance:
        """Store one encoded instance (preamble + file meta + dataset) durably.

        A SOP Instance UID already present is not rewritten (idempotent repeat).
        Raises ``OSError`` (e.g. ``ENOSPC``) with nothing partial left behind.
        """
        path = self.instance_path(key, sop_uid)
        if path.exists():
            return StoredInstance(path, created=False)
        make_dirs(path.parent)
        write_durable(path, encoded, tmp_dir=self.root / "tmp")
        return StoredInstance(path, created=True)

    def free_mb(self) -> float:
        """Free space (MiB) available to this process on the store's file system."""
        st = os.statvfs(self.root)
        return st.f_bavail * st.f_frsize / 2**20

    def run_dirs(self, key: str, run: str) -> tuple[Path, Path]:
        """(work dir, outbox dir) of run ``run`` of study ``key``; the work dir is emptied."""
        work = self.root / "work" / key / run
        if work.exists():
            shutil.rmtree(work)
        make_dirs(work)
        return work, self.root / "outbox" / key / run

    def accept_outputs(self, files: list[Path], outbox: Path) -> list[Path]:
        """Copy app outputs durably into ``outbox`` and return their new paths."""
        make_dirs(outbox)
        out = []
        for i, src in enumerate(files):
            dst = outbox / f"{i:02d}-{Path(src).name}"
            copy_durable(Path(src), dst)
            out.append(dst)
        return out

    def move_to_failed(self, key: str) -> Path:
        """Move the instances of study ``key`` to ``failed/<key>/`` (merging with an earlier move)."""
        src = self.incoming_dir(key)
        dst = self.root / "failed" / key
        make_dirs(dst)
        if src.is_dir():
            for f in src.iterdir():
                os.replace(f, dst / f.name)
            fsync_dir(dst)
            src.rmdir()
            fsync_dir(src.parent)
        return dst

    def clean_work(self, key: str, run: str) -> None:
        """Remove the work dir of a finished run."""
        shutil.rmtree(self.root / "work" / key / run, ignore_errors=True)
