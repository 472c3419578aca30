"""Node configuration: YAML plus overrides, validation; Prometheus text rendering; log hygiene."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from plugin.node.config import Destination, NodeConfig, Source, load_config, write_config
from plugin.node.log import LOGGER_NAME, event, safe_ae, setup_logging, uid_hash
from plugin.node.metrics import Metrics


def test_yaml_with_overrides_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "node.yaml"
    path.write_text(
        "ae_title: CXRAI\n"
        "port: 104\n"
        "sources: [ORTHANC, {ae_title: PACS1, host: 10.0.0.5}]\n"
        "destinations: [{name: pacs, ae_title: PACS1, host: 10.0.0.5, port: 4242}]\n"
        "tls: {cert: a.pem, key: a.key}\n"
        "app: {beam_size: 1}\n"
    )
    cfg = load_config(path, port=11112, idle_timeout_s=None)
    assert cfg.ae_title == "CXRAI" and cfg.port == 11112 and cfg.idle_timeout_s == 5.0
    assert cfg.sources == (Source("ORTHANC"), Source("PACS1", "10.0.0.5"))
    assert cfg.destinations == (Destination("pacs", "PACS1", "10.0.0.5", 4242),)
    assert cfg.tls is not None and cfg.tls.ca is None and cfg.app == {"beam_size": 1}
    assert load_config(write_config(cfg, tmp_path / "again.yaml")) == cfg
    assert load_config(None) == NodeConfig()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ae_titel: X\n", "unknown node config keys"),
        ("ae_title: 'A\\\\B'\n", "not a valid AE title"),
        ("ae_title: THIS-TITLE-IS-TOO-LONG\n", "not a valid AE title"),
        ("destinations: [{name: '../x', ae_title: P, host: h, port: 1}]\n", "destination name"),
        ("workers: -1\n", "workers must be >= 0"),
        ("log_format: xml\n", "log_format"),
    ],
)
def test_invalid_configs_are_refused_with_a_clear_message(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "node.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        load_config(path)


def test_prometheus_text_format() -> None:
    m = Metrics(gauge_fn=lambda: {"uar_node_queue_depth": {(("state", "queued"),): 3.0}})
    m.inc("uar_node_instances_received_total", 2)
    m.inc("uar_node_exports_total", destination='pa"cs')
    m.observe("uar_node_app_seconds", 0.7)
    text = m.render()
    assert "# TYPE uar_node_instances_received_total counter" in text
    assert "uar_node_instances_received_total 2" in text
    assert 'uar_node_exports_total{destination="pa\\"cs"} 1' in text
    assert 'uar_node_queue_depth{state="queued"} 3' in text
    assert 'uar_node_app_seconds_bucket{le="0.5"} 0' in text
    assert 'uar_node_app_seconds_bucket{le="1"} 1' in text
    assert 'uar_node_app_seconds_bucket{le="+Inf"} 1' in text
    assert "uar_node_app_seconds_count 1" in text


def test_log_helpers_hash_uids_and_sanitise_ae_titles(capsys: pytest.CaptureFixture[str]) -> None:
    assert uid_hash("1.2.3") == uid_hash("1.2.3") and "1.2.3" not in uid_hash("1.2.3")
    assert len(uid_hash("1.2.3")) == 12
    assert safe_ae("../etc/passwd\x00") == ".._etc_passwd_"
    logger = logging.getLogger(LOGGER_NAME)
    saved = (logger.handlers[:], logger.propagate, logger.level)
    try:
        setup_logging("json")
        logger.info("plain")  # plain records render as JSON too
        event("study_done", study_id=3, seconds=1.5)
    finally:
        logger.handlers[:], logger.propagate, logger.level = saved
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert lines[-2]["event"] == "plain"
    assert lines[-1]["event"] == "study_done" and lines[-1]["study_id"] == 3 and lines[-1]["level"] == "info"
