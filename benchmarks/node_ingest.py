"""Node ingest rate against dcmtk storescp, and studies per minute end to end, from one run.

Same sender (dcmtk storescu, one association, the files' own transfer syntax), same files
(synthetic two-view studies, Explicit VR LE, ``--size`` pixels square), same disk:

1. ingest: storescu -> dcmtk storescp (writes files, no fsync; default options, and tuned with
   the largest PDU and bit-preserving writes) and storescu -> the node with no
   workers (validates, fsyncs each file and its folder, commits each instance to SQLite with
   synchronous=FULL), alternating, ``--rounds`` times each; images/s from the median round;
2. end to end: the node with ``--workers`` app workers and a storescp destination; the studies
   are sent over 4 parallel associations; studies/min from the first C-STORE to the last SR
   confirmed by the destination (model load included as it happens once per worker start,
   reported separately).

Usage: python benchmarks/node_ingest.py [--studies 20] [--size 1024] [--model PATH]
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from pydicom.uid import ExplicitVRLittleEndian

from plugin.node.config import Destination, NodeConfig, Source
from plugin.node.scp import echo
from plugin.node.service import NodeService
from uar.synthetic.dicom import write_study
from uar.synthetic.sampling import sample_case


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait(pred, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.05)


def send(port: int, aec: str, files: list[Path]) -> float:
    """storescu all ``files`` in one association; returns seconds."""
    t0 = time.perf_counter()
    subprocess.run(
        ["storescu", "-aet", "BENCH", "-aec", aec, "127.0.0.1", str(port), *map(str, files)],
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - t0


def storescp_round(files: list[Path], root: Path, tuned: bool) -> float:
    out = root / "storescp"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    port = free_port()
    proc = subprocess.Popen(
        ["storescp", "-aet", "DCMTK", "-od", str(out), str(port)], stderr=subprocess.DEVNULL
    )
    try:
        wait(lambda: echo("127.0.0.1", port, "DCMTK") == 0, 20, "storescp start")
        return send(port, "DCMTK", files)
    finally:
        proc.terminate()
        proc.wait(10)


def node_cfg(root: Path, **kw) -> NodeConfig:
    return NodeConfig(
        ae_title="UARNODE",
        bind="127.0.0.1",
        port=free_port(),
        sources=(Source("BENCH"),),
        storage_dir=str(root),
        min_free_mb=0,
        log_format="kv",
        **kw,
    )


def node_round(files: list[Path], root: Path) -> float:
    shutil.rmtree(root, ignore_errors=True)
    node = NodeService(node_cfg(root, workers=0, idle_timeout_s=3600))
    node.start()
    try:
        return send(node.cfg.port, "UARNODE", files)
    finally:
        node.stop()


def end_to_end(studies: list[list[Path]], root: Path, workers: int, model: str | None) -> dict[str, float]:
    dest_dir = root / "dest"
    dest_dir.mkdir(parents=True)
    dport = free_port()
    dest = subprocess.Popen(
        ["storescp", "-aet", "DEST", "-od", str(dest_dir), "-fe", ".dcm", str(dport)],
        stderr=subprocess.DEVNULL,
    )
    cfg = node_cfg(
        root / "node",
        workers=workers,
        idle_timeout_s=1.0,
        model_path=model,
        destinations=(Destination(name="dest", ae_title="DEST", host="127.0.0.1", port=dport),),
    )
    node = NodeService(cfg)
    node.start()
    try:
        wait(lambda: echo("127.0.0.1", dport, "DEST") == 0, 20, "storescp start")
        t_ready = time.perf_counter()
        wait(lambda: len(node.pool.idle()) == workers, 600, "workers loading the model")
        load_s = time.perf_counter() - t_ready
        t0 = time.perf_counter()
        groups = [[f for s in studies[i::4] for f in s] for i in range(4)]
        threads = [threading.Thread(target=send, args=(cfg.port, "UARNODE", g)) for g in groups if g]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wait(lambda: len(list(dest_dir.glob("SR*.dcm"))) >= len(studies), 3600, "all SRs")
        total = time.perf_counter() - t0
    finally:
        node.stop()
        dest.terminate()
        dest.wait(10)
    return {"seconds": total, "studies_per_min": 60 * len(studies) / total, "model_load_s": load_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--studies", type=int, default=20)
    ap.add_argument("--size", type=int, default=1024, help="image side in pixels")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--model", default=None, help="checkpoint; default: the embedded default model")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="uar-bench-node-") as tmp:
        root = Path(tmp)
        studies = []
        for i in range(args.studies):
            s = write_study(
                root / "in" / f"{i:03d}",
                sample_case(np.random.default_rng(i)),
                i,
                size=args.size,
                transfer_syntax=ExplicitVRLittleEndian,
            )
            studies.append([s.frontal, s.lateral])
        files = [f for s in studies for f in s]
        mb = sum(f.stat().st_size for f in files) / 2**20
        dcmtk, tuned, ours = [], [], []
        for _ in range(args.rounds):
            dcmtk.append(storescp_round(files, root / "r", tuned=False))
            tuned.append(storescp_round(files, root / "r", tuned=True))
            ours.append(node_round(files, root / "n"))
        rate_dcmtk = len(files) / statistics.median(dcmtk)
        rate_tuned = len(files) / statistics.median(tuned)
        rate_node = len(files) / statistics.median(ours)
        e2e = end_to_end(studies, root / "e2e", args.workers, args.model)
    rounds = lambda ts: ", ".join(f"{t:.2f}s" for t in ts)  # noqa: E731
    print(f"files: {len(files)} images ({mb:.1f} MiB, {args.size}x{args.size}, Explicit VR LE)")
    print(f"ingest dcmtk storescp : {rate_dcmtk:7.1f} images/s (rounds {rounds(dcmtk)})")
    print(f"  ... -pdu 131072 +B  : {rate_tuned:7.1f} images/s (rounds {rounds(tuned)})")
    print(f"ingest UAR node       : {rate_node:7.1f} images/s (rounds {rounds(ours)})")
    print(f"node / dcmtk          : {rate_node / rate_dcmtk:7.2f}  (target >= 0.50)")
    print(f"node / dcmtk tuned    : {rate_node / rate_tuned:7.2f}")
    print(
        f"end to end            : {e2e['studies_per_min']:7.1f} studies/min ({args.studies} studies, "
        f"{args.workers} worker(s), {e2e['seconds']:.1f} s; model load {e2e['model_load_s']:.1f} s excluded)"
    )


if __name__ == "__main__":
    main()
