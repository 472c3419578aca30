"""Pre-association guard and bounded PDU reads for the storage SCP (pynetdicom 3.0.4).

pynetdicom creates an ``Association`` (a thread counted against ``maximum_associations``) for every
accepted TCP connection and then waits up to ``acse_timeout`` for its A-ASSOCIATE-RQ; it reads a
PDU of whatever length the peer announces into memory; with TLS it does the handshake in the
accepting thread. So empty or idle connections locked legitimate peers out, and one header
announcing 4 GiB grew the node without bound. :class:`GuardedServer` fixes that below pynetdicom:

- the TLS handshake and the whole first PDU are read in the connection's own thread, within
  ``first_pdu_timeout_s``; only an A-ASSOCIATE-RQ no longer than ``max_associate_rq_kb`` is handed
  to pynetdicom (so only real association requests ever count against ``max_associations``);
- connections that have not yet delivered their request are limited in total
  (``max_pending_connections``) and per peer IP (``max_pending_per_peer``); established
  associations per peer IP are limited by ``max_associations_per_peer`` (0 = no own limit);
- :class:`GuardedSocket` refuses (by closing the connection) any later PDU longer than the
  negotiated maximum (``max_pdu``, or the data set limit when ``max_pdu`` is 0) before reading
  it, and any data set whose fragments add up to more than ``max_dataset_mb``.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.transport import AssociationSocket, RequestHandler, ThreadedAssociationServer

from plugin.node.log import event

A_ASSOCIATE_RQ, P_DATA_TF = 0x01, 0x04
# A-ASSOCIATE-RJ: rejected-transient (2), service-provider presentation (3), local limit exceeded (2)
_RJ_LOCAL_LIMIT = bytes([0x03, 0, 0, 0, 0, 4, 0, 2, 3, 2])
_SMALL_PDU_MAX = 64 * 1024  # A-RELEASE / A-ABORT / A-ASSOCIATE-AC/RJ are a few bytes
_COMMAND_MAX = 64 * 1024  # a DIMSE command set is a few hundred bytes
LOG_EVERY_S = 10.0  # refused connections are logged at most once per this many seconds per reason
# pynetdicom runs a full gc.collect() every 60 turns of the accept loop (one per connection); in a
# process that holds the app's imports one collection takes ~0.25 s, so a peer opening 60 empty
# connections a second kept a core busy. Collect at most this often instead (seconds).
FULL_GC_EVERY_S = 10.0


@dataclass(frozen=True)
class GuardLimits:
    """The limits of :class:`GuardedServer` (see docs/node.md, Security); sizes in bytes."""

    first_pdu_timeout_s: float
    max_associate_rq: int
    max_pending: int
    max_pending_per_peer: int
    max_associations_per_peer: int
    max_pdu: int  # longest P-DATA-TF PDU accepted after association
    max_dataset: int  # longest data set (sum of its fragments)


class _RateLimitedLog:
    """``event(name, reason=...)`` at most once per :data:`LOG_EVERY_S` per reason, with a count;
    ``count(reason)`` is called for every refusal (the node's metrics)."""

    def __init__(self, count: Callable[[str], None] | None = None) -> None:
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._suppressed: Counter[str] = Counter()
        self._count = count

    def __call__(self, name: str, reason: str, **fields: Any) -> None:
        if self._count is not None:
            self._count(reason)
        now = time.monotonic()
        with self._lock:
            if now - self._last.get(reason, -LOG_EVERY_S) < LOG_EVERY_S:
                self._suppressed[reason] += 1
                return
            self._last[reason] = now
            suppressed, self._suppressed[reason] = self._suppressed[reason], 0
        event(name, logging.WARNING, reason=reason, suppressed=suppressed, **fields)


class GuardedSocket(AssociationSocket):
    """An ``AssociationSocket`` that serves the guard's first PDU, then bounds every PDU it reads.

    pynetdicom reads each PDU as ``recv(6)`` (type and length) then ``recv(length)``; a header
    announcing more than the limit raises ``OSError`` before anything is allocated, which
    pynetdicom handles as a closed connection (the association is aborted).
    """

    prefix: bytearray
    limits: GuardLimits
    refuse: _RateLimitedLog
    _body_of: int  # PDU type whose body is read next (0: a header is next)
    _dataset_bytes: int

    def arm(self, prefix: bytes, limits: GuardLimits, refuse: _RateLimitedLog) -> None:
        """Set the already-read first PDU and the limits (called once, before the reactor starts)."""
        self.prefix = bytearray(prefix)
        self.limits = limits
        self.refuse = refuse
        self._body_of = 0
        self._dataset_bytes = 0

    @property
    def ready(self) -> bool:
        """True when buffered or network data can be read."""
        return bool(self.prefix) or super().ready

    def recv(self, nr_bytes: int) -> bytearray:
        """Read ``nr_bytes`` (buffered first PDU first) and enforce the PDU and data set limits."""
        if self._body_of == 0 and nr_bytes == 6:
            data = self._read(6)
            if len(data) == 6:
                pdu_type, _, length = struct.unpack(">BBL", data)
                self._check_header(pdu_type, length)
                self._body_of = pdu_type
            return data
        data = self._read(nr_bytes)
        if self._body_of == P_DATA_TF:
            self._count_pdvs(data)
        self._body_of = 0
        return data

    def _read(self, n: int) -> bytearray:
        if self.prefix:
            head = self.prefix[:n]
            del self.prefix[:n]
            if len(head) == n:
                return head
            return head + super().recv(n - len(head))
        return super().recv(n)

    def _check_header(self, pdu_type: int, length: int) -> None:
        if pdu_type == P_DATA_TF:
            limit = self.limits.max_pdu
        elif pdu_type == A_ASSOCIATE_RQ:
            limit = self.limits.max_associate_rq
        else:
            limit = _SMALL_PDU_MAX
        if length > limit:
            self.refuse("pdu_refused", "PDU longer than the limit", limit=limit)
            raise OSError("PDU longer than the node's limit")

    def _count_pdvs(self, body: bytearray) -> None:
        """Add up data set fragments (PS3.8 9.3.5: item length, context id, control header)."""
        pos = 0
        while pos + 6 <= len(body):
            (item_len,) = struct.unpack_from(">L", body, pos)
            control = body[pos + 5]
            size = max(item_len - 2, 0)
            if control & 0x01:  # command fragment
                if size > _COMMAND_MAX:
                    raise OSError("DIMSE command set longer than the node's limit")
            else:
                self._dataset_bytes += size
                if self._dataset_bytes > self.limits.max_dataset:
                    self.refuse("dataset_refused", "data set larger than max_dataset_mb")
                    raise OSError("data set longer than the node's limit")
                if control & 0x02:  # last fragment of the data set
                    self._dataset_bytes = 0
            pos += 4 + item_len


class GuardedRequestHandler(RequestHandler):
    """pynetdicom's request handler, with the socket swapped for a :class:`GuardedSocket`."""

    server: GuardedServer

    def _create_association(self) -> Any:
        assoc = super()._create_association()
        sock = assoc.dul.socket
        sock.__class__ = GuardedSocket  # same object and state, bounded recv (no new attributes needed)
        sock.arm(self.server.take_prefix(self.request), self.server.limits, self.server.refuse)
        serve = assoc._serve_request

        def serve_checked(msg: Any, context_id: int) -> None:
            # pynetdicom drops a C-STORE-RQ without a valid Affected SOP Instance / Class UID without
            # answering; the peer would wait for ever. Answer it 0xA900 instead.
            if isinstance(msg, C_STORE) and not msg.is_valid_request:
                answer_store(assoc, msg, context_id, INVALID_REQUEST_STATUS, "malformed C-STORE request")
                self.server.count_store_refused(INVALID_REQUEST_STATUS)
                return
            # pynetdicom aborts the association for a SOP class it has no service class for
            # (e.g. a private UID); answer 0x0122 for any class other than the context's own.
            context = assoc._accepted_cx.get(context_id)
            if (
                isinstance(msg, C_STORE)
                and context is not None
                and msg.AffectedSOPClassUID != context.abstract_syntax
            ):
                answer_store(
                    assoc, msg, context_id, SOP_CLASS_NOT_SUPPORTED, "SOP class differs from the context"
                )
                self.server.count_store_refused(SOP_CLASS_NOT_SUPPORTED)
                return
            serve(msg, context_id)

        assoc._serve_request = serve_checked
        return assoc


INVALID_REQUEST_STATUS = 0xA900  # data set does not match SOP class (PS3.4 B.2.3)
SOP_CLASS_NOT_SUPPORTED = 0x0122  # refused: SOP class not supported (PS3.7 C.5.2)


def answer_store(assoc: Any, msg: C_STORE, context_id: int, status: int, reason: str) -> None:
    """Answer a C-STORE-RQ with failure ``status`` ourselves, or abort when it has no Message ID."""
    if msg.MessageID is None:
        assoc.abort()
        return
    rsp = C_STORE()
    rsp.MessageIDBeingRespondedTo = msg.MessageID
    rsp.Status = status
    with contextlib.suppress(TypeError, ValueError):
        rsp.AffectedSOPClassUID = msg.AffectedSOPClassUID
    event("instance_refused", logging.WARNING, status=f"0x{status:04X}", reason=reason)
    assoc.dimse.send_msg(rsp, context_id)


class GuardedServer(ThreadedAssociationServer):
    """``ThreadedAssociationServer`` with the pre-association guard of the module docstring."""

    daemon_threads = True
    # listen() backlog: socketserver's default of 5 lets a burst of hostile connects fill the
    # accept queue, so a legitimate peer's SYN is dropped and retried a second later
    request_queue_size = 256

    def __init__(
        self,
        *args: Any,
        limits: GuardLimits,
        on_refused: Callable[[str], None] | None = None,
        on_store_refused: Callable[[int], None] | None = None,
        **kwargs: Any,
    ) -> None:
        """``on_refused(reason)``: called for every refused connection or PDU;
        ``on_store_refused(status)``: for every C-STORE the guard answers itself with a failure."""
        self.limits = limits
        self.refuse = _RateLimitedLog(on_refused)
        self._on_store_refused = on_store_refused
        self._guard_lock = threading.Lock()
        self._pending: Counter[str] = Counter()
        self._prefixes: dict[int, bytes] = {}
        self._last_gc = time.monotonic()
        kwargs.setdefault("request_handler", GuardedRequestHandler)
        super().__init__(*args, **kwargs)

    def service_actions(self) -> None:
        """Called by ``serve_forever`` after every connection and poll: a full garbage collection
        (what pynetdicom does to free ended associations) at most every :data:`FULL_GC_EVERY_S`."""
        now = time.monotonic()
        if now - self._last_gc >= FULL_GC_EVERY_S:
            self._last_gc = now
            gc.collect()

    def count_store_refused(self, status: int) -> None:
        """Report a C-STORE answered by the guard with failure ``status``."""
        if self._on_store_refused is not None:
            self._on_store_refused(status)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """An exception while handing a connection over: an event, not a traceback on stderr."""
        self.refuse("connection_error", "error while setting up an association")

    def pending(self) -> int:
        """Connections accepted that have not yet delivered their A-ASSOCIATE-RQ."""
        with self._guard_lock:
            return sum(self._pending.values())

    def take_prefix(self, request: Any) -> bytes:
        """The first PDU the guard read from ``request``."""
        with self._guard_lock:
            return self._prefixes.pop(id(request), b"")

    def get_request(self) -> tuple[Any, Any]:
        """Accept without doing the TLS handshake here (it happens in the connection's thread)."""
        client, address = self.socket.accept()  # type: ignore[union-attr]
        if self.ssl_context:
            client = self.ssl_context.wrap_socket(client, server_side=True, do_handshake_on_connect=False)
        return client, address

    def verify_request(self, request: Any, client_address: Any) -> bool:
        """Admit the connection to the guard unless the pending limits are reached (then close it)."""
        host = str(client_address[0])
        with self._guard_lock:
            total = sum(self._pending.values())
            if total >= self.limits.max_pending:
                reason = "too many pending connections"
            elif self._pending[host] >= self.limits.max_pending_per_peer:
                reason = "too many pending connections from one peer"
            else:
                self._pending[host] += 1
                return True
        self.refuse("connection_refused", reason)
        return False

    def finish_request(self, request: Any, client_address: Any) -> None:
        """Read the first PDU within the time limit, then hand the connection to pynetdicom."""
        host = str(client_address[0])
        try:
            first = self._first_pdu(request)
        finally:
            with self._guard_lock:
                self._pending[host] -= 1
                if self._pending[host] <= 0:
                    del self._pending[host]
        if first is None:
            self._close(request)
            return
        if self.limits.max_associations_per_peer and self._associations_of(host) >= (
            self.limits.max_associations_per_peer
        ):
            self.refuse("association_refused", "too many associations from one peer")
            with contextlib.suppress(OSError):
                request.sendall(_RJ_LOCAL_LIMIT)
            self._close(request)
            return
        with self._guard_lock:
            self._prefixes[id(request)] = first
        try:
            super().finish_request(request, client_address)
        finally:
            with self._guard_lock:
                self._prefixes.pop(id(request), None)

    def _associations_of(self, host: str) -> int:
        n = 0
        for assoc in self.active_associations:
            try:
                if assoc.requestor.address == host:
                    n += 1
            except Exception:  # an association that is just ending
                continue
        return n

    def _first_pdu(self, request: Any) -> bytes | None:
        """The complete A-ASSOCIATE-RQ PDU, or None (timeout, other PDU, too long, closed)."""
        deadline = time.monotonic() + self.limits.first_pdu_timeout_s
        try:
            if self.ssl_context:
                request.settimeout(self.limits.first_pdu_timeout_s)
                request.do_handshake()
            header = self._read_exactly(request, 6, deadline)
            if header is None:
                self.refuse("connection_refused", "no association request (timeout or closed)")
                return None
            pdu_type, _, length = struct.unpack(">BBL", header)
            if pdu_type != A_ASSOCIATE_RQ:
                self.refuse("connection_refused", "first PDU is not an A-ASSOCIATE-RQ")
                return None
            if length > self.limits.max_associate_rq:
                self.refuse("connection_refused", "A-ASSOCIATE-RQ longer than the limit")
                return None
            body = self._read_exactly(request, length, deadline)
            if body is None:
                self.refuse("connection_refused", "no association request (timeout or closed)")
                return None
            request.settimeout(None)
            return header + body
        except (OSError, ValueError):
            self.refuse("connection_refused", "connection failed before association")
            return None

    @staticmethod
    def _read_exactly(request: Any, n: int, deadline: float) -> bytes | None:
        buf = bytearray()
        while len(buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            request.settimeout(left)
            try:
                chunk = request.recv(min(n - len(buf), 65536))
            except TimeoutError:
                return None
            if not chunk:
                return None
            buf += chunk
        return bytes(buf)

    @staticmethod
    def _close(request: Any) -> None:
        with contextlib.suppress(OSError):
            request.shutdown(socket.SHUT_RDWR)
        request.close()
