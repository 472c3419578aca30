"""``make demo``: the whole node round trip on loopback, in one command.

Starts a receiving PACS (dcmtk ``storescp``) and the node (embedded default model) on free
loopback ports, writes a synthetic two-view chest study, sends it with dcmtk ``storescu``, waits
for the SR at the PACS, prints the report text and stops everything. Exit code 0 on success.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian

from plugin.node.config import Destination, NodeConfig, Source
from plugin.node.log import setup_logging
from plugin.node.scp import echo
from plugin.node.service import NodeService

PACS_AE = "DEMOPACS"
NODE_AE = "UARNODE"
TIMEOUT_S = 300.0  # the first run starts a worker and loads the model
DEMO_SEED = 10  # the synthetic case sent: edema, atelectasis and a support device


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise FileNotFoundError(f"{name} not found: install dcmtk (make system-deps)")
    return path


def report_lines(sr: Dataset) -> Iterator[str]:
    """Section headings and TEXT items of an SR content tree, in document order."""

    def walk(items: list[Dataset], depth: int) -> Iterator[str]:
        for item in items:
            if item.get("RelationshipType") in ("HAS OBS CONTEXT", "HAS CONCEPT MOD"):
                continue
            name = item.ConceptNameCodeSequence[0].CodeMeaning if "ConceptNameCodeSequence" in item else ""
            if item.ValueType == "TEXT":
                yield f"{'  ' * depth}{name}: {item.TextValue}"
            elif item.ValueType == "CONTAINER":
                yield f"{'  ' * depth}{name}"
                yield from walk(list(item.get("ContentSequence", [])), depth + 1)

    title = sr.ConceptNameCodeSequence[0].CodeMeaning
    yield title
    yield from walk(list(sr.get("ContentSequence", [])), 1)


def _wait_for_sr(node: NodeService, pacs_dir: Path) -> Path:
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        srs = sorted(pacs_dir.glob("SR*.dcm"))
        if srs:
            return srs[0]
        if node.pool.last_fatal:
            raise RuntimeError(f"the app worker cannot start: {node.pool.last_fatal}")
        counts = node.queue.counts()
        if counts["rejected"] or counts["failed"]:
            [study] = node.queue.studies(["rejected", "failed"], limit=1)
            raise RuntimeError(f"the study was {study['state']}: {study['reason']}")
        time.sleep(0.2)
    raise TimeoutError(f"no SR at the PACS after {TIMEOUT_S:g} s")


def main(argv: list[str] | None = None) -> int:
    """Run the demo; returns the exit code."""
    from uar.generator import ReportGenerator, default_checkpoint_path
    from uar.synthetic.dicom import write_study
    from uar.synthetic.sampling import sample_case

    parser = argparse.ArgumentParser(prog="python -m plugin.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="checkpoint to use instead of the embedded default model")
    args = parser.parse_args(argv)
    storescu, storescp = _tool("storescu"), _tool("storescp")
    if args.model is None and not default_checkpoint_path().is_file():
        ReportGenerator.load(None)  # raises the generator's own FileNotFoundError with the fix
    setup_logging("kv")
    with tempfile.TemporaryDirectory(prefix="uar-demo-") as tmp:
        root = Path(tmp)
        pacs_dir, pacs_port = root / "pacs", _free_port()
        pacs_dir.mkdir()
        pacs = subprocess.Popen(
            [storescp, "-aet", PACS_AE, "-od", str(pacs_dir), "-fe", ".dcm", str(pacs_port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        cfg = NodeConfig(
            ae_title=NODE_AE,
            bind="127.0.0.1",
            port=_free_port(),
            sources=(Source(PACS_AE, host="127.0.0.1"),),
            storage_dir=str(root / "node"),
            idle_timeout_s=1.0,
            model_path=args.model,
            destinations=(Destination(name="pacs", ae_title=PACS_AE, host="127.0.0.1", port=pacs_port),),
            log_format="kv",
        )
        node = NodeService(cfg)
        node.start()
        try:
            deadline = time.monotonic() + 20
            while echo("127.0.0.1", pacs_port, PACS_AE) != 0:
                if time.monotonic() > deadline:
                    raise TimeoutError("storescp did not start")
                time.sleep(0.1)
            # a case with findings that the embedded model reads as within its input domain (about 7 %
            # of synthetic studies sent as 512 px DICOM are not, docs/ood.md; seed 7 was one of them)
            study = write_study(
                root / "study",
                sample_case(np.random.default_rng(DEMO_SEED)),
                DEMO_SEED,
                transfer_syntax=ExplicitVRLittleEndian,
            )
            print(f"demo: sending a synthetic two-view study to {NODE_AE}@127.0.0.1:{cfg.port}", flush=True)
            t0 = time.monotonic()
            sent = subprocess.run(
                [storescu, "-aet", PACS_AE, "-aec", NODE_AE, "127.0.0.1", str(cfg.port)]
                + [str(study.frontal), str(study.lateral)],
                capture_output=True,
                text=True,
                timeout=120,
            )
            if sent.returncode != 0:
                raise RuntimeError(f"storescu failed: {sent.stderr.strip()}")
            sr_path = _wait_for_sr(node, pacs_dir)
            sr = pydicom.dcmread(sr_path)
            print(f"\ndemo: SR received by {PACS_AE} after {time.monotonic() - t0:.1f} s", flush=True)
            print(f"  SeriesDescription: {sr.get('SeriesDescription', '')}")
            print(f"  same study: {sr.StudyInstanceUID == study.study_uid}\n")
            print("\n".join(report_lines(sr)), flush=True)
        finally:
            node.stop()
            pacs.terminate()
            pacs.wait(10)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (FileNotFoundError, RuntimeError, TimeoutError) as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        sys.exit(1)
