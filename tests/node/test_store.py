"""Durable store and SQLite queue: atomic writes, idempotency, safe names, ENOSPC, restart recovery."""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from plugin.node import store as store_mod
from plugin.node.queue import JobQueue
from plugin.node.store import InstanceStore, is_valid_uid, study_key


def test_uid_grammar() -> None:
    assert is_valid_uid("1.2.840.10008.5.1.4.1.1.1")
    assert is_valid_uid("0.1.2")
    for bad in ("", "1..2", "01.2", "1.2.", "../../etc/passwd", "1.2/3", "1" * 65, None, 1.2):
        assert not is_valid_uid(bad), bad


def test_put_is_durable_named_by_uid_and_idempotent(tmp_path: Path) -> None:
    st = InstanceStore(tmp_path / "s")
    key = study_key("SENDER", "1.2.3")
    first = st.put(key, "1.2.3.4", b"DICM-data-1")
    assert first.created and first.path.read_bytes() == b"DICM-data-1"
    assert first.path == st.root / "incoming" / key / "1.2.3.4.dcm"
    again = st.put(key, "1.2.3.4", b"other bytes")
    assert not again.created and again.path.read_bytes() == b"DICM-data-1"
    assert list((st.root / "tmp").iterdir()) == []
    with pytest.raises(ValueError, match="UID grammar"):
        st.put(key, "../../../escape", b"x")
    assert not (tmp_path / "escape.dcm").exists()


def test_study_key_is_a_plain_hash_for_hostile_ae_titles() -> None:
    key = study_key("../../..", "1.2.3")
    assert len(key) == 24 and all(c in "0123456789abcdef" for c in key)
    assert key != study_key("SENDER", "1.2.3")


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs (we run as root in CI). Where mounting is not permitted, ENOSPC is injected instead:
    ``os.write`` inside the store raises ``OSError(ENOSPC)`` after a first partial write, which is what
    a full disk does."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True
    )
    if mounted.returncode == 0:
        yield mnt
        subprocess.run(["umount", "-l", str(mnt)], check=True)
        return
    real_write = os.write

    def full_disk_write(fd: int, data: bytes) -> int:
        if len(data) > 512 * 1024:
            real_write(fd, bytes(data[:4096]))
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    mp = pytest.MonkeyPatch()
    mp.setattr(store_mod.os, "write", full_disk_write)
    yield mnt
    mp.undo()


def test_full_disk_leaves_nothing_partial(tiny_fs: Path) -> None:
    st = InstanceStore(tiny_fs / "store")
    key = study_key("SENDER", "1.2.3")
    st.put(key, "1.2.3.1", b"x" * 100_000)
    with pytest.raises(OSError) as info:
        st.put(key, "1.2.3.2", b"y" * 2_000_000)
    assert info.value.errno == errno.ENOSPC
    assert sorted(p.name for p in st.incoming_dir(key).iterdir()) == ["1.2.3.1.dcm"]
    assert list((st.root / "tmp").iterdir()) == []


def test_queue_lifecycle_and_recovery(tmp_path: Path) -> None:
    q = JobQueue(tmp_path / "node.db")
    assert q._conn().execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert q._conn().execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    a = q.add_instance("k1", "SENDER", "1.2.3", "1.2.3.1", "1.2.840.10008.5.1.4.1.1.1", tmp_path / "a")
    b = q.add_instance("k1", "SENDER", "1.2.3", "1.2.3.2", "1.2.840.10008.5.1.4.1.1.1", tmp_path / "b")
    dup = q.add_instance("k1", "SENDER", "1.2.3", "1.2.3.2", "1.2.840.10008.5.1.4.1.1.1", tmp_path / "b")
    assert a.new_study and b.new_instance and not b.new_study and not dup.new_instance
    assert q.promote_idle(60.0) == []  # not idle yet
    assert q.promote_idle(0.0, busy={a.study_id}) == []  # an association is still sending
    assert q.promote_idle(0.0) == [a.study_id]
    job = q.claim_next()
    assert job is not None and job.n_instances == 2 and job.attempt == 1
    # crash while running: a new process recovers it as queued without charging the attempt
    q2 = JobQueue(tmp_path / "node.db")
    assert q2.recover()["requeued"] == 1
    job = q2.claim_next()
    assert job is not None and job.attempt == 1 and job.run == "r2"
    assert q2.finish_failed(job.study_id, "boom", max_attempts=2, retry_delay_s=0.0) == "queued"
    job = q2.claim_next()
    assert job is not None and job.attempt == 2
    assert q2.finish_failed(job.study_id, "boom again", max_attempts=2, retry_delay_s=0.0) == "failed"
    assert [e["kind"] for e in q2.events(job.study_id)] == ["requeued", "failure", "failure"]
    # a late instance reopens a finished study for a new run
    late = q2.add_instance("k1", "SENDER", "1.2.3", "1.2.3.3", "1.2.840.10008.5.1.4.1.1.1", tmp_path / "c")
    assert late.new_instance and q2.counts()["receiving"] == 1


def test_deliveries_backoff_deadline_and_no_resend(tmp_path: Path) -> None:
    q = JobQueue(tmp_path / "node.db")
    sid = q.add_instance("k", "SENDER", "1.2", "1.2.1", "1.2.840.10008.5.1.4.1.1.1", tmp_path / "a").study_id
    q.promote_idle(0.0)
    q.claim_next()
    sr = [("sr", tmp_path / "sr.dcm", "1.2.9", "1.2.840.10008.5.1.4.1.1.88.22")]
    assert q.finish_done(sid, sr, ["pacs", "backup"], export_deadline_s=3600) == "done"
    due = q.due_deliveries("pacs")
    assert list(due) == [sid] and len(due[sid]) == 1
    out_id = due[sid][0].output_id
    assert q.mark_retry(out_id, "pacs", "no association", backoff_s=30, max_s=60) == "pending"
    assert q.due_deliveries("pacs") == {}  # waits for its backoff
    q.mark_delivered(out_id, "backup")
    q2 = JobQueue(tmp_path / "node.db")  # restart: a confirmed delivery is never due again
    assert q2.due_deliveries("backup") == {}
    assert q2.delivery_counts() == {"pending": 1, "delivered": 1, "failed": 0}
    q2._conn().execute("UPDATE deliveries SET deadline = 0, next_attempt = 0")
    assert q2.mark_retry(out_id, "pacs", "status 0xA700", backoff_s=1, max_s=1) == "failed"


def test_instances_arriving_during_a_run_trigger_another_run(tmp_path: Path) -> None:
    q = JobQueue(tmp_path / "node.db")
    sop_class = "1.2.840.10008.5.1.4.1.1.1"
    sid = q.add_instance("k", "SENDER", "1.2", "1.2.1", sop_class, tmp_path / "a").study_id
    q.promote_idle(0.0)
    first = q.claim_next()
    assert first is not None and first.n_instances == 1
    q.add_instance("k", "SENDER", "1.2", "1.2.2", sop_class, tmp_path / "b")  # arrives mid-run
    assert q.counts()["running"] == 1
    sr = [("sr", tmp_path / "sr1.dcm", "1.2.9.1", "1.2.840.10008.5.1.4.1.1.88.22")]
    assert q.finish_done(sid, sr, ["pacs"], export_deadline_s=60) == "receiving"
    q.promote_idle(0.0)
    second = q.claim_next()
    assert second is not None and second.n_instances == 2 and second.run == "r2" and second.attempt == 1
