"""Typed configuration of the DICOM node, read from a YAML file plus command-line overrides.

Example ``node.yaml`` (every key is optional; see docs/node.md)::

    ae_title: UARNODE
    bind: 0.0.0.0
    port: 11112
    sources: [{ae_title: ORTHANC, host: 127.0.0.1}]
    destinations:
      - {name: pacs, ae_title: ORTHANC, host: 127.0.0.1, port: 4242}
      - {name: cloud, type: dicomweb, url: https://dicom.example.org/dicom-web,
         auth: {type: bearer, token_file: /etc/uar/token}, ca: /etc/uar/ca.pem}
    storage_dir: /var/lib/uar-node
    idle_timeout_s: 5
    model_path: null
    ood_policy: withhold   # or flag: studies outside the model's validated input domain (docs/ood.md)
"""

from __future__ import annotations

import base64
import ipaddress
import re
import ssl
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from uar.data.dicom_guard import DicomLimits

# AE titles: up to 16 characters of the DICOM default repertoire, no backslash or control characters.
_AE_RE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")


def check_ae_title(value: str, what: str) -> str:
    """Return ``value`` stripped, or raise ``ValueError`` if it is not a valid AE title (PS3.5 AE VR)."""
    title = str(value).strip()
    if not _AE_RE.match(title):
        raise ValueError(f"{what}: {value!r} is not a valid AE title (1-16 printable characters, no '\\')")
    return title


@dataclass(frozen=True)
class Source:
    """A calling AE allowed to send to the node (MIG "source"); ``host`` optionally pins its IP address."""

    ae_title: str
    host: str | None = None


@dataclass(frozen=True)
class Destination:
    """A C-STORE SCP that receives the node's SRs (MIG "destination"); ``type: dimse`` in YAML."""

    name: str
    ae_title: str
    host: str
    port: int
    type: str = "dimse"


@dataclass(frozen=True)
class DicomWebAuth:
    """HTTP authentication of a DICOMweb destination: ``basic`` (username + password) or ``bearer`` (token).

    Secrets may be given inline or, better, as files (``password_file``, ``token_file``: the first
    line is read at each request, so a rotated token is picked up without a restart).
    """

    type: str
    username: str | None = None
    password: str | None = None
    password_file: str | None = None
    token: str | None = None
    token_file: str | None = None

    def __post_init__(self) -> None:
        if self.type == "basic":
            if not self.username or (self.password is None) == (self.password_file is None):
                raise ValueError("auth basic needs username and one of password / password_file")
        elif self.type == "bearer":
            if (self.token is None) == (self.token_file is None):
                raise ValueError("auth bearer needs one of token / token_file")
        else:
            raise ValueError(f"auth type must be 'basic' or 'bearer', got {self.type!r}")

    def __repr__(self) -> str:
        return f"DicomWebAuth(type={self.type!r}, username={self.username!r}, secrets hidden)"

    def header(self) -> str:
        """The ``Authorization`` header value."""

        def secret(inline: str | None, path: str | None) -> str:
            if inline is not None:
                return inline
            assert path is not None
            return Path(path).read_text(encoding="utf-8").splitlines()[0].strip()

        if self.type == "bearer":
            return f"Bearer {secret(self.token, self.token_file)}"
        pair = f"{self.username}:{secret(self.password, self.password_file)}".encode()
        return f"Basic {base64.b64encode(pair).decode('ascii')}"


@dataclass(frozen=True)
class DicomWebDestination:
    """A DICOMweb STOW-RS service (PS3.18 10.5) that receives the node's SRs; ``type: dicomweb`` in YAML.

    ``url`` is the service root (``https://pacs/dicom-web``); the node POSTs to ``{url}/studies``.
    ``ca``: CA bundle (PEM) that signs the server's certificate (default: the system's trust store).
    Credentials are only sent over https, or over http to a loopback address.
    """

    name: str
    url: str
    type: str = "dicomweb"
    auth: DicomWebAuth | None = None
    ca: str | None = None

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                f"destination {self.name}: url must be http(s)://host[:port]/path, got {self.url!r}"
            )
        if parts.username or parts.password or parts.query or parts.fragment:
            raise ValueError(f"destination {self.name}: no credentials, query or fragment in url (use auth)")
        if self.auth is not None and parts.scheme == "http" and not _is_loopback(parts.hostname):
            raise ValueError(f"destination {self.name}: credentials over plain http; use an https url")
        if self.ca is not None and parts.scheme != "https":
            raise ValueError(f"destination {self.name}: ca is only used with an https url")

    @property
    def stow_url(self) -> str:
        """``{url}/studies``: the STOW-RS target (the study is named by the instances themselves)."""
        return self.url.rstrip("/") + "/studies"

    def ssl_context(self) -> ssl.SSLContext:
        """Verifying TLS context (hostname checked) trusting ``ca`` or the system store."""
        return ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.ca)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class TLSConfig:
    """Optional DICOM TLS (PS3.15 Annex B): certificate and key; ``ca`` turns on peer-certificate checks."""

    cert: str
    key: str
    ca: str | None = None

    def server_context(self) -> ssl.SSLContext:
        """``ssl.SSLContext`` for the storage SCP; requires client certificates when ``ca`` is set."""
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.cert, self.key)
        if self.ca:
            ctx.load_verify_locations(self.ca)
            ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx

    def client_context(self) -> ssl.SSLContext:
        """``ssl.SSLContext`` for exports (the node's certificate as client certificate, ``ca`` as trust)."""
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.ca)
        ctx.check_hostname = False
        ctx.load_cert_chain(self.cert, self.key)
        return ctx


@dataclass(frozen=True)
class NodeConfig:
    """Everything the node needs; times in seconds, sizes in MiB."""

    ae_title: str = "UARNODE"
    bind: str = "0.0.0.0"
    port: int = 11112
    require_called_aet: bool = True  # the association must name ``ae_title`` as called AE
    sources: tuple[Source, ...] = ()  # calling-AE whitelist; empty accepts any calling AE
    max_associations: int = 10  # concurrent established associations
    max_associations_per_peer: int = 0  # established associations per peer IP; 0 = only max_associations
    max_pending_connections: int = 64  # connections that have not yet sent their A-ASSOCIATE-RQ
    max_pending_per_peer: int = 8  # the same, per peer IP
    first_pdu_timeout_s: float = 5.0  # time a new connection has to deliver its A-ASSOCIATE-RQ
    max_associate_rq_kb: int = 128  # longest A-ASSOCIATE-RQ PDU accepted (KiB)
    association_idle_timeout_s: float = 60.0  # an association silent this long is aborted
    max_pdu: int = 0  # maximum P-DATA PDU we receive; 0 = unlimited (bounded by max_dataset_mb)
    max_dataset_mb: int = 64  # longest data set (after inflating a deflated one) accepted (MiB)
    max_inflate_ratio: float = 100.0  # inflated / deflated size above 1 MiB inflated
    max_elements: int = 20000  # data elements per data set, nested ones included
    max_sequence_items: int = 5000  # sequence items and pixel data fragments per data set
    max_sequence_depth: int = 12  # sequence nesting per data set
    tls: TLSConfig | None = None
    storage_dir: str = "uar-node-data"
    min_free_mb: int = 64  # refuse instances with 0xA700 below this much free disk
    idle_timeout_s: float = 5.0  # a study is complete after this long without instances
    workers: int = 1  # app worker processes, each loads the model once; 0 = store and queue only
    study_timeout_s: float = 600.0  # a run longer than this is killed and counted as a failure
    max_attempts: int = 3  # runs of one study before it moves to failed/
    retry_delay_s: float = 2.0  # pause before retrying a failed run (times the attempt number)
    model_path: str | None = None  # None = the embedded default model
    runner: str = "app"  # "app": in-process worker processes; "map": one MAP container per study
    map_image: str | None = None  # MAP image of ``runner: map`` (e.g. uar-report-node-map:0.1.0)
    map_docker_host: str | None = None  # DOCKER_HOST of the MAP containers; None = docker's default
    map_run_args: tuple[str, ...] = ()  # extra ``docker run`` options (e.g. ["--cpus", "2"])
    app: dict[str, Any] | None = None  # plugin.settings.AppSettings keys (beam_size, write_pdf, ...)
    ood_policy: str | None = None  # "withhold" | "flag"; None = the app setting (default withhold)
    destinations: tuple[Destination | DicomWebDestination, ...] = ()
    export_calling_ae: str | None = None  # calling AE for exports; None = ``ae_title``
    export_deadline_s: float = 86400.0  # give up on a delivery after this long
    export_backoff_s: float = 1.0  # first retry delay, doubled per attempt
    export_backoff_max_s: float = 60.0
    export_timeout_s: float = 30.0  # connection / DIMSE timeout of export associations
    metrics_bind: str = "127.0.0.1"
    metrics_port: int = 0  # 0 = no metrics HTTP server
    log_format: str = "json"  # "json" or "kv"
    shutdown_grace_s: float = 30.0  # on SIGTERM, wait this long for running studies

    def __post_init__(self) -> None:
        check_ae_title(self.ae_title, "ae_title")
        if self.export_calling_ae is not None:
            check_ae_title(self.export_calling_ae, "export_calling_ae")
        for s in self.sources:
            check_ae_title(s.ae_title, "sources[].ae_title")
        names = [d.name for d in self.destinations]
        if len(set(names)) != len(names):
            raise ValueError(f"destination names must be unique, got {names}")
        for d in self.destinations:
            if isinstance(d, Destination):
                if d.type != "dimse":
                    raise ValueError(
                        f"destination {d.name}: type must be 'dimse' or 'dicomweb', got {d.type!r}"
                    )
                check_ae_title(d.ae_title, f"destinations[{d.name}].ae_title")
            if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", d.name):
                raise ValueError(f"destination name {d.name!r}: use letters, digits, '_', '-', '.'")
        if not 0 <= self.port < 65536 or not 0 <= self.metrics_port < 65536:
            raise ValueError("port and metrics_port must be in 0..65535")
        if self.idle_timeout_s < 0 or self.study_timeout_s <= 0 or self.export_deadline_s <= 0:
            raise ValueError("idle_timeout_s must be >= 0, study_timeout_s and export_deadline_s > 0")
        if self.workers < 0 or self.max_attempts < 1 or self.max_associations < 1:
            raise ValueError("workers must be >= 0, max_attempts and max_associations >= 1")
        if self.runner not in ("app", "map"):
            raise ValueError(f"runner must be 'app' or 'map', got {self.runner!r}")
        if self.runner == "map" and not self.map_image:
            raise ValueError("runner 'map' needs map_image (the MAP image to run per study)")
        if self.ood_policy is not None and self.ood_policy not in ("withhold", "flag"):
            raise ValueError(f"ood_policy must be 'withhold' or 'flag', got {self.ood_policy!r}")
        positive = (
            self.max_pending_connections,
            self.max_pending_per_peer,
            self.max_associate_rq_kb,
            self.max_dataset_mb,
            self.max_elements,
            self.max_sequence_items,
            self.max_sequence_depth,
        )
        if min(positive) < 1 or self.first_pdu_timeout_s <= 0 or self.association_idle_timeout_s <= 0:
            raise ValueError("the connection and data set limits must be positive")
        if self.max_associations_per_peer < 0 or self.max_pdu < 0 or self.max_inflate_ratio < 1:
            raise ValueError("max_associations_per_peer and max_pdu must be >= 0, max_inflate_ratio >= 1")
        if self.log_format not in ("json", "kv"):
            raise ValueError(f"log_format must be 'json' or 'kv', got {self.log_format!r}")

    @property
    def dicom_limits(self) -> DicomLimits:
        """The per-data-set limits (:class:`uar.data.dicom_guard.DicomLimits`) of this config."""
        return DicomLimits(
            max_bytes=self.max_dataset_mb * 2**20,
            max_inflate_ratio=self.max_inflate_ratio,
            max_elements=self.max_elements,
            max_items=self.max_sequence_items,
            max_depth=self.max_sequence_depth,
        )

    @property
    def storage(self) -> Path:
        """``storage_dir`` as a ``Path``."""
        return Path(self.storage_dir)

    @property
    def app_settings(self) -> dict[str, Any]:
        """The app's settings mapping: ``app`` with ``ood_policy`` applied when set."""
        settings = dict(self.app or {})
        if self.ood_policy is not None:
            settings["ood_policy"] = self.ood_policy
        return settings

    @property
    def scu_ae_title(self) -> str:
        """Calling AE title of export associations."""
        return self.export_calling_ae or self.ae_title


def _from_mapping(data: dict[str, Any]) -> dict[str, Any]:
    """Turn plain YAML values into the nested dataclasses of :class:`NodeConfig`."""
    known = {f.name for f in fields(NodeConfig)}
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"unknown node config keys: {sorted(unknown)}")
    out = dict(data)
    if "sources" in out:
        out["sources"] = tuple(
            Source(ae_title=s) if isinstance(s, str) else Source(**s) for s in out["sources"] or ()
        )
    if "destinations" in out:
        out["destinations"] = tuple(_destination(d) for d in out["destinations"] or ())
    if "map_run_args" in out:
        out["map_run_args"] = tuple(str(a) for a in out["map_run_args"] or ())
    if out.get("tls") is not None:
        out["tls"] = TLSConfig(**out["tls"])
    return out


def _destination(d: Any) -> Destination | DicomWebDestination:
    """A ``destinations`` entry: ``type: dicomweb`` (with ``url``) or DIMSE (``type: dimse`` or absent)."""
    if isinstance(d, Destination | DicomWebDestination):
        return d
    if not isinstance(d, dict):
        raise ValueError(f"a destination must be a mapping, got {type(d).__name__}")
    if d.get("type", "dimse") == "dicomweb":
        d = dict(d)
        if isinstance(d.get("auth"), dict):
            d["auth"] = DicomWebAuth(**d["auth"])
        return DicomWebDestination(**d)
    return Destination(**d)


def load_config(path: str | Path | None = None, **overrides: Any) -> NodeConfig:
    """Read ``path`` (YAML mapping, may be None) and apply ``overrides`` (``None`` values are ignored)."""
    data: dict[str, Any] = {}
    if path is not None:
        text = Path(path).read_text(encoding="utf-8")
        loaded = yaml.safe_load(text) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: the node config must be a YAML mapping")
        data = loaded
    cfg = NodeConfig(**_from_mapping(data))
    changes = {k: v for k, v in overrides.items() if v is not None}
    return replace(cfg, **_from_mapping(changes)) if changes else cfg


def dump_config(cfg: NodeConfig) -> dict[str, Any]:
    """Plain mapping of ``cfg`` that :func:`load_config` reads back (for writing ``node.yaml``)."""

    def plain(value: Any) -> Any:
        if isinstance(value, tuple):
            return [plain(v) for v in value]
        if hasattr(value, "__dataclass_fields__"):
            return {f.name: plain(getattr(value, f.name)) for f in fields(value)}
        return value

    return {f.name: plain(getattr(cfg, f.name)) for f in fields(cfg)}


def write_config(cfg: NodeConfig, path: str | Path) -> Path:
    """Write ``cfg`` as YAML to ``path`` and return it."""
    path = Path(path)
    path.write_text(yaml.safe_dump(dump_config(cfg), sort_keys=False), encoding="utf-8")
    return path
