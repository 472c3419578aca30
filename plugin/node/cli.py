"""``uar node``: run the DICOM node, show its queue, C-ECHO a peer.

Registered through the ``uar.commands`` entry point (``node = plugin.node.cli:register``);
``python -m plugin.node ...`` runs the same commands without the ``uar`` dispatcher.
"""

from __future__ import annotations

import argparse
import json
import logging
import sqlite3
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from plugin.node.config import load_config
from plugin.node.queue import INPUT_DOMAIN_EVENT


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``node run|status|echo`` to the ``uar`` parser."""
    add_commands(
        subparsers.add_parser("node", help="DICOM node: receive studies, run the app, send SRs back")
    )


def add_commands(node: argparse.ArgumentParser) -> None:
    """Add the ``run``, ``status`` and ``echo`` sub-commands to ``node``."""
    sub = node.add_subparsers(dest="node_command", required=True, metavar="SUBCOMMAND")

    run = sub.add_parser("run", help="run the node until SIGTERM / SIGINT")
    run.add_argument("--config", type=Path, help="node.yaml (see docs/node.md)")
    run.add_argument("--ae-title", help="the node's AE title")
    run.add_argument("--bind", help="listen address, e.g. 0.0.0.0")
    run.add_argument("--port", type=int, help="DICOM port")
    run.add_argument("--storage", dest="storage_dir", help="storage folder (instances, queue DB, outputs)")
    run.add_argument("--model", dest="model_path", help="checkpoint (.safetensors); default: embedded model")
    run.add_argument("--idle-timeout", dest="idle_timeout_s", type=float, help="study idle timeout, seconds")
    run.add_argument("--workers", type=int, help="app worker processes")
    run.add_argument("--metrics-port", type=int, help="Prometheus metrics HTTP port (0 = off)")
    run.add_argument("--log-format", choices=("json", "kv"), help="structured log format")
    run.set_defaults(func=cmd_run)

    status = sub.add_parser("status", help="studies and deliveries in the node's queue")
    src = status.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", type=Path, help="node.yaml (its storage_dir is read)")
    src.add_argument("--storage", type=Path, help="storage folder of the node")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument("--limit", type=int, default=20, help="studies listed (newest first)")
    status.set_defaults(func=cmd_status)

    echo = sub.add_parser("echo", help="send C-ECHO to a DICOM peer")
    echo.add_argument("host")
    echo.add_argument("port", type=int)
    echo.add_argument("--aec", default="ANY-SCP", help="called AE title")
    echo.add_argument("--aet", default="UARECHO", help="calling AE title")
    echo.set_defaults(func=cmd_echo)


def cmd_run(args: argparse.Namespace) -> int:
    """``uar node run``: start the node and block until a signal stops it."""
    from plugin.node.log import setup_logging
    from plugin.node.service import NodeService

    overrides = {
        k: getattr(args, k)
        for k in ("ae_title", "bind", "port", "storage_dir", "model_path", "idle_timeout_s", "workers")
    }
    overrides["metrics_port"] = args.metrics_port
    overrides["log_format"] = args.log_format
    cfg = load_config(args.config, **overrides)
    setup_logging(cfg.log_format, logging.DEBUG if getattr(args, "verbose", False) else logging.INFO)
    try:
        node = NodeService(cfg)
    except RuntimeError as exc:
        print(f"uar node run: error: {exc}", file=sys.stderr)
        return 1
    node.run_forever()
    return 0


def _age(now: float, t: float | None) -> str:
    if t is None:
        return "-"
    s = max(now - t, 0.0)
    return f"{s:.0f}s" if s < 120 else f"{s / 60:.0f}m" if s < 7200 else f"{s / 3600:.1f}h"


def status_report(db_path: Path, limit: int = 20) -> dict[str, Any]:
    """Counts per state, the oldest age per state, studies per input-domain verdict (the latest run
    of each study the model read) and the newest studies, read from the queue DB."""
    if not db_path.is_file():
        raise FileNotFoundError(f"no node queue at {db_path} (has the node run with this storage_dir?)")
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30)
    db.row_factory = sqlite3.Row
    now = time.time()
    try:
        age_col = {
            "receiving": "first_received",
            "queued": "queued_at",
            "running": "started_at",
            "done": "finished_at",
            "rejected": "finished_at",
            "failed": "finished_at",
        }
        states = {}
        for state, col in age_col.items():
            row = db.execute(f"SELECT COUNT(*), MIN({col}) FROM studies WHERE state = ?", (state,)).fetchone()
            states[state] = {"count": int(row[0]), "oldest_age_s": None if row[1] is None else now - row[1]}
        domain = dict.fromkeys(("in_domain", "out_of_domain", "unchecked"), 0)
        for verdict, count in db.execute(
            "SELECT detail, COUNT(*) FROM events e WHERE kind = ? AND id = (SELECT MAX(id) FROM events"
            " WHERE study_id = e.study_id AND kind = ?) GROUP BY detail",
            (INPUT_DOMAIN_EVENT, INPUT_DOMAIN_EVENT),
        ):
            domain[verdict] = int(count)
        deliveries = {
            r[0]: {"count": int(r[1]), "oldest_age_s": now - r[2]}
            for r in db.execute("SELECT state, COUNT(*), MIN(next_attempt) FROM deliveries GROUP BY state")
        }
        studies = []
        for r in db.execute(
            "SELECT s.*, (SELECT COUNT(*) FROM deliveries d JOIN outputs o ON o.id = d.output_id"
            " WHERE o.study_id = s.id AND d.state = 'delivered') AS delivered,"
            " (SELECT COUNT(*) FROM deliveries d JOIN outputs o ON o.id = d.output_id"
            " WHERE o.study_id = s.id AND d.state = 'pending') AS pending"
            " FROM studies s ORDER BY s.last_received DESC LIMIT ?",
            (limit,),
        ):
            t = r[age_col[r["state"]]]
            studies.append(
                {
                    "id": r["id"],
                    "state": r["state"],
                    "age_s": None if t is None else now - t,
                    "instances": r["n_instances"],
                    "attempts": r["attempts"],
                    "delivered": r["delivered"],
                    "pending": r["pending"],
                    "reason": r["reason"],
                }
            )
    finally:
        db.close()
    return {"studies": states, "deliveries": deliveries, "input_domain": domain, "recent": studies}


def cmd_status(args: argparse.Namespace) -> int:
    """``uar node status``: print the queue (no PHI: ids, states, ages, reasons)."""
    storage = args.storage if args.storage else load_config(args.config).storage
    report = status_report(Path(storage) / "node.db", args.limit)
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    now = time.time()
    parts = [
        f"{s} {v['count']}" + (f" (oldest {_age(now, now - v['oldest_age_s'])})" if v["count"] else "")
        for s, v in report["studies"].items()
    ]
    print("studies:    " + ", ".join(parts))
    dparts = [f"{s} {v['count']}" for s, v in sorted(report["deliveries"].items())]
    print("deliveries: " + (", ".join(dparts) or "none"))
    print("input domain: " + ", ".join(f"{k} {v}" for k, v in report["input_domain"].items()))
    if report["recent"]:
        print(f"{'id':>6} {'state':<10} {'age':>6} {'inst':>5} {'tries':>5} {'sent':>5} {'wait':>5}  reason")
        for s in report["recent"]:
            age = _age(now, None if s["age_s"] is None else now - s["age_s"])
            print(
                f"{s['id']:>6} {s['state']:<10} {age:>6} {s['instances']:>5} {s['attempts']:>5}"
                f" {s['delivered']:>5} {s['pending']:>5}  {s['reason'] or ''}"
            )
    return 0


def cmd_echo(args: argparse.Namespace) -> int:
    """``uar node echo HOST PORT``: exit 0 if the peer answers C-ECHO with Success."""
    from plugin.node.scp import echo

    status = echo(args.host, args.port, args.aec, args.aet)
    print("C-ECHO " + ("no association" if status < 0 else f"status 0x{status:04X}"))
    return 0 if status == 0 else 1


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m plugin.node``: the ``uar node`` commands without the ``uar`` dispatcher."""
    parser = argparse.ArgumentParser(prog="python -m plugin.node", description="the uar node commands")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    add_commands(parser)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (FileNotFoundError, ValueError) as exc:
        print(f"uar node: error: {exc}", file=sys.stderr)
        return 2
