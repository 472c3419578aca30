"""Soak: legitimate studies per minute while a hostile peer keeps opening idle and junk connections.

Two phases of ``--seconds`` each, each against a fresh node process (``python -m plugin.node run``,
no app workers unless ``--workers``, so the network path is what is measured):

1. undisturbed: a legitimate sender (dcmtk ``storescu``, one association per two-view study made
   from the real CR/DX files with new UIDs) sends studies back to back;
2. under attack: the same sender, while hostile threads on other loopback addresses (127.0.0.2-4)
   keep opening connections that stay idle, send random bytes, close at once, or announce a 4 GiB
   A-ASSOCIATE-RQ.

Prints studies/min of both phases, their ratio (target >= 0.90), the node's peak RSS (VmHWM) and CPU
time per phase, how many hostile connections were made and the CPU time the attackers themselves
used.

A hostile peer on the network spends its own CPU, not the node's; here it shares the node's two
cores (the harsher case). ``--attacker-nice 19`` runs the attacker processes at that nice level, so
that their own loops take only what the node and the sender leave.

Usage: python benchmarks/node_soak.py [--seconds 30] [--attackers 3] [--attacker-nice 0] [--dicom-dir DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import os
import random
import resource
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pydicom
from pydicom.uid import generate_uid

from plugin.node.config import NodeConfig, Source, write_config
from plugin.node.scp import echo

REPO = Path(__file__).resolve().parents[1]
FILES = ("dwv__gdcm-CR-MONO1-10-chest.dcm", "highdicom__dx_image.dcm")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_studies(dicom_dir: Path, out: Path, n: int) -> list[list[Path]]:
    """``n`` two-view studies from the real files, new Study / Series / SOP Instance UIDs."""
    bases = [pydicom.dcmread(dicom_dir / name) for name in FILES]
    studies = []
    for i in range(n):
        study_uid, paths = generate_uid(), []
        for j, base in enumerate(bases):
            base.StudyInstanceUID = study_uid
            base.SeriesInstanceUID = generate_uid()
            base.SOPInstanceUID = generate_uid()
            base.file_meta.MediaStorageSOPInstanceUID = base.SOPInstanceUID
            path = out / f"s{i:04d}_{j}.dcm"
            base.save_as(path, enforce_file_format=True)
            paths.append(path)
        studies.append(paths)
    return studies


def start_node(root: Path, workers: int) -> tuple[subprocess.Popen, int]:
    port = free_port()
    cfg = NodeConfig(
        ae_title="UARNODE",
        bind="127.0.0.1",
        port=port,
        sources=(Source("SOAK"),),
        storage_dir=str(root / "storage"),
        min_free_mb=0,
        workers=workers,
        idle_timeout_s=1.0,
    )
    config = write_config(cfg, root / "node.yaml")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    log = (root / "node.log").open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "plugin.node", "run", "--config", str(config)],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while echo("127.0.0.1", port, "UARNODE", "SOAK", timeout_s=2) != 0:
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError("the node did not start")
        time.sleep(0.2)
    return proc, port


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (/proc/PID/stat, in seconds)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Attacker(mp.Process):
    """Keeps opening hostile connections from ``source`` until stopped; counts them.

    A separate process, so that the attacker's own CPU use does not hold the GIL of the
    legitimate sender's loop (the node is what is measured, not this script).
    """

    def __init__(self, port: int, source: str, seed: int, nice: int = 0) -> None:
        super().__init__(daemon=True)
        self.port, self.source, self.nice = port, source, nice
        self.rng = random.Random(seed)
        self.stop = mp.Event()
        self.count = mp.Value("q", 0)
        self.cpu = mp.Value("d", 0.0)

    @property
    def connections(self) -> int:
        """Hostile connections made so far."""
        return int(self.count.value)

    def _connect(self) -> socket.socket | None:
        s = socket.socket()
        try:
            s.bind((self.source, 0))
            s.settimeout(2)
            s.connect(("127.0.0.1", self.port))
        except OSError:
            s.close()
            return None
        with self.count.get_lock():
            self.count.value += 1
        return s

    def run(self) -> None:
        os.nice(self.nice)
        try:
            self._attack()
        finally:
            usage = resource.getrusage(resource.RUSAGE_SELF)
            self.cpu.value = usage.ru_utime + usage.ru_stime

    def _attack(self) -> None:
        while not self.stop.is_set():
            kind = self.rng.randrange(4)
            if kind == 0:  # idle connections held for a while
                held = [s for s in (self._connect() for _ in range(20)) if s is not None]
                self.stop.wait(3.0)
                for s in held:
                    s.close()
            elif kind == 1:  # random bytes
                for _ in range(20):
                    s = self._connect()
                    if s is not None:
                        with contextlib.suppress(OSError):
                            s.sendall(
                                bytes(self.rng.randrange(256) for _ in range(self.rng.randrange(1, 200)))
                            )
                        s.close()
            elif kind == 2:  # connect and close at once
                for _ in range(20):
                    s = self._connect()
                    if s is not None:
                        s.close()
            else:  # an A-ASSOCIATE-RQ announcing 4 GiB
                s = self._connect()
                if s is not None:
                    with contextlib.suppress(OSError):
                        s.sendall(bytes([1, 0]) + struct.pack(">L", 0xFFFFFFF0) + b"\x00" * 2**20)
                    s.close()


def phase(
    studies: list[list[Path]], root: Path, seconds: float, attackers: int, workers: int, nice: int = 0
) -> dict:
    root.mkdir(parents=True)
    proc, port = start_node(root, workers)
    threads = [Attacker(port, f"127.0.0.{2 + i}", seed=i, nice=nice) for i in range(attackers)]
    cpu0 = cpu_seconds(proc.pid)
    for t in threads:
        t.start()
    sent = failed = 0
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        paths = studies[(sent + failed) % len(studies)]
        cmd = ["storescu", "-aet", "SOAK", "-aec", "UARNODE", "127.0.0.1", str(port), *map(str, paths)]
        ok = subprocess.run(cmd, capture_output=True, timeout=60).returncode == 0
        sent, failed = sent + ok, failed + (not ok)
    elapsed = time.monotonic() - t0
    for t in threads:
        t.stop.set()
    for t in threads:
        t.join()
    rss = peak_rss_mib(proc.pid)
    node_cpu = cpu_seconds(proc.pid) - cpu0
    proc.terminate()
    proc.wait(60)
    return {
        "studies_per_min": 60.0 * sent / elapsed,
        "failed": failed,
        "peak_rss_mib": rss,
        "node_cpu_s": node_cpu,
        "node_cpu_ms_per_study": 1000 * node_cpu / max(sent, 1),
        "attacker_cpu_s": sum(t.cpu.value for t in threads),
        "hostile_connections": sum(t.connections for t in threads),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--attackers", type=int, default=3)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--attacker-nice", type=int, default=0, help="nice level of the attacker processes")
    ap.add_argument("--dicom-dir", type=Path, default=REPO.parent / "shared" / "data" / "dicom")
    args = ap.parse_args()
    dicom_dir = args.dicom_dir if args.dicom_dir.is_dir() else Path("/work/shared/data/dicom")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "studies").mkdir()
        studies = make_studies(dicom_dir, root / "studies", 150)
        calm = phase(studies, root / "calm", args.seconds, 0, args.workers)
        attacked = phase(
            studies, root / "attacked", args.seconds, args.attackers, args.workers, args.attacker_nice
        )
    ratio = attacked["studies_per_min"] / calm["studies_per_min"]
    for name, r in (("undisturbed:  ", calm), ("under attack: ", attacked)):
        print(
            f"{name}  {r['studies_per_min']:.1f} studies/min, peak RSS {r['peak_rss_mib']:.0f} MiB, "
            f"node CPU {r['node_cpu_s']:.1f} s ({r['node_cpu_ms_per_study']:.1f} ms per study), "
            f"{r['failed']} failed sends"
        )
    hostile = attacked["hostile_connections"]
    share = attacked["studies_per_min"] / calm["studies_per_min"]
    extra = attacked["node_cpu_s"] - calm["node_cpu_s"] * share  # node CPU not explained by its studies
    print(
        f"attackers:      {args.attackers} processes at nice {args.attacker_nice}, {hostile} hostile "
        f"connections ({hostile / args.seconds:.0f}/s), their own CPU {attacked['attacker_cpu_s']:.1f} s; "
        f"node CPU beyond its studies' share {extra:.1f} s ({1000 * extra / max(hostile, 1):.2f} ms per "
        f"hostile connection)"
    )
    print(f"ratio:          {ratio:.3f} (target >= 0.90)")


if __name__ == "__main__":
    main()
