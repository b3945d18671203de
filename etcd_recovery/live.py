"""A small typed client for a running etcd member, over its v3 gRPC API.

:class:`EtcdClient` talks to one endpoint: a member's client URL reached directly or
the local end of an SSH tunnel. Every answer comes back as a frozen dataclass or a
named tuple of plain Python values; every failure comes back as :class:`EtcdRpcError`
(an :class:`~etcd_recovery.errors.EtcdApiError`) carrying gRPC's status code name and
etcd's own error text, so callers can tell "etcdserver: unhealthy cluster" (wait and
retry) from "etcdserver: too many learner members in cluster" (stop).

Behaviour worth knowing when a cluster is broken:

* A learner answers only ``Status`` and serializable ``Range``; everything else fails
  with :data:`ERR_NOT_SUPPORTED_FOR_LEARNER`.
* ``MemberList`` is served from the member's local view unless ``linearizable`` is set
  (3.5 and later; 3.4 ignores the field and always answers locally). A member that was
  added but never started is listed with an empty name and no client URLs.
* A ``Txn`` holds at most ``--max-txn-ops`` operations (128 by default) and may not
  write one key twice.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple, TypeVar, cast

import grpc

from etcd_recovery.errors import EtcdApiError
from etcd_recovery.proto import etcdserver_pb2 as pb
from etcd_recovery.proto import etcdserver_pb2_grpc as pb_grpc

__all__ = [
    "ERR_AUTH_FAILED",
    "ERR_AUTH_NOT_ENABLED",
    "ERR_INVALID_AUTH_TOKEN",
    "ERR_LEADER_CHANGED",
    "ERR_LEARNER_NOT_READY",
    "ERR_MEMBER_NOT_FOUND",
    "ERR_MEMBER_NOT_LEARNER",
    "ERR_NO_LEADER",
    "ERR_NOT_ENOUGH_STARTED_MEMBERS",
    "ERR_NOT_SUPPORTED_FOR_LEARNER",
    "ERR_PEER_URL_EXISTS",
    "ERR_TIMEOUT",
    "ERR_TOO_MANY_LEARNERS",
    "ERR_UNHEALTHY",
    "TRANSIENT_ERRORS",
    "AlarmInfo",
    "EtcdClient",
    "EtcdRpcError",
    "KvHash",
    "LiveStatus",
    "MemberAddResult",
    "MemberInfo",
    "PutItems",
    "prefix_range_end",
]

# etcd's error texts (api/v3rpc/rpctypes/error.go), as they arrive in the gRPC status details.
ERR_UNHEALTHY = "etcdserver: unhealthy cluster"
ERR_NO_LEADER = "etcdserver: no leader"
ERR_LEADER_CHANGED = "etcdserver: leader changed"
ERR_TIMEOUT = "etcdserver: request timed out"
ERR_LEARNER_NOT_READY = (
    "etcdserver: can only promote a learner member which is in sync with leader"
)
ERR_MEMBER_NOT_LEARNER = "etcdserver: can only promote a learner member"
ERR_TOO_MANY_LEARNERS = "etcdserver: too many learner members in cluster"
ERR_PEER_URL_EXISTS = "etcdserver: Peer URLs already exists"
ERR_MEMBER_NOT_FOUND = "etcdserver: member not found"
ERR_NOT_ENOUGH_STARTED_MEMBERS = (
    "etcdserver: re-configuration failed due to not enough started members"
)
ERR_NOT_SUPPORTED_FOR_LEARNER = "etcdserver: rpc not supported for learner"
ERR_INVALID_AUTH_TOKEN = "etcdserver: invalid auth token"  # noqa: S105 (a message)
ERR_AUTH_FAILED = "etcdserver: authentication failed, invalid user ID or password"
ERR_AUTH_NOT_ENABLED = "etcdserver: authentication is not enabled"

#: etcd errors that describe a passing state: the same call may succeed a little later.
TRANSIENT_ERRORS = frozenset({
    ERR_UNHEALTHY,
    ERR_NO_LEADER,
    ERR_LEADER_CHANGED,
    ERR_TIMEOUT,
    "etcdserver: request timed out, possibly due to previous leader failure",
    "etcdserver: request timed out, possibly due to connection lost",
    "etcdserver: request timed out, waiting for the applied index took too long",
    ERR_LEARNER_NOT_READY,
    ERR_NOT_ENOUGH_STARTED_MEMBERS,
    "etcdserver: too many requests",
})

#: What :meth:`EtcdClient.put_many` takes: (key, value) pairs or a mapping.
PutItems = (
    Iterable[tuple[bytes | str, bytes | str]]
    | Mapping[bytes, bytes] | Mapping[str, str] | Mapping[str, bytes] | Mapping[bytes, str]
)

_MAX_ID = 2**64 - 1
_T = TypeVar("_T")


class EtcdRpcError(EtcdApiError):
    """A gRPC call to etcd failed.

    ``code`` is the gRPC status code name (``"UNAVAILABLE"``, ``"FAILED_PRECONDITION"``,
    ...; ``"UNKNOWN"`` when gRPC gave none) and ``details`` the status text, which for
    errors raised by etcd itself is etcd's message, e.g. :data:`ERR_UNHEALTHY`.
    """

    def __init__(self, endpoint: str, method: str, code: str, details: str) -> None:
        self.code = code
        self.details = details
        super().__init__(endpoint, method, f"{code}: {details}")

    @property
    def retryable(self) -> bool:
        """True when etcd reported one of :data:`TRANSIENT_ERRORS`."""
        return self.details in TRANSIENT_ERRORS


@dataclass(frozen=True)
class LiveStatus:
    """What ``Maintenance.Status`` says about the member that answered."""

    member_id: int
    cluster_id: int
    raft_term: int
    raft_index: int
    raft_applied_index: int
    leader: int  # 0 when the member knows of no leader
    db_size: int
    db_size_in_use: int
    version: str
    errors: tuple[str, ...]
    is_learner: bool
    revision: int
    storage_version: str = ""  # etcd 3.6+ (StatusResponse.storageVersion = 11)


@dataclass(frozen=True)
class MemberInfo:
    """One entry of the member list. An added-but-never-started member has ``name == ""``."""

    id: int
    name: str
    peer_urls: tuple[str, ...]
    client_urls: tuple[str, ...]
    is_learner: bool


class AlarmInfo(NamedTuple):
    """An active alarm: the member that raised it and the alarm's name (``NOSPACE``...)."""

    member_id: int
    alarm: str


class KvHash(NamedTuple):
    """``Maintenance.HashKV``: hash of the keyspace up to ``revision``."""

    hash: int
    compact_revision: int
    revision: int


class MemberAddResult(NamedTuple):
    """``Cluster.MemberAdd``: the new member and the member list that now includes it."""

    member: MemberInfo
    members: list[MemberInfo]


def _member(m: pb.Member) -> MemberInfo:
    return MemberInfo(
        id=int(m.ID),
        name=str(m.name),
        peer_urls=tuple(str(u) for u in m.peerURLs),
        client_urls=tuple(str(u) for u in m.clientURLs),
        is_learner=bool(m.isLearner),
    )


def _members(ms: Iterable[pb.Member]) -> list[MemberInfo]:
    return [_member(m) for m in ms]


def _as_bytes(value: bytes | str) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    raise TypeError(f"etcd keys and values are bytes or str, not {type(value).__name__}")


def prefix_range_end(prefix: bytes) -> bytes:
    """The ``range_end`` that makes a Range cover every key starting with ``prefix``.

    An empty prefix, or one made only of 0xff bytes, has no upper bound: etcd's
    convention for "to the end of the keyspace" is ``b"\\0"``.
    """
    end = bytearray(prefix)
    while end and end[-1] == 0xFF:
        end.pop()
    if not end:
        return b"\0"
    end[-1] += 1
    return bytes(end)


def _stub(stub_class: object, channel: grpc.Channel) -> Any:
    """Instantiate a generated (untyped) gRPC stub class."""
    return cast(Callable[[grpc.Channel], Any], stub_class)(channel)


def _check_id(member_id: int) -> int:
    if not 0 < member_id <= _MAX_ID:
        raise ValueError(f"member ID {member_id} is not a 64-bit unsigned non-zero integer")
    return member_id


class EtcdClient:
    """A connection to one etcd member's v3 gRPC API.

    ``endpoint`` is ``"host:port"`` (no scheme). Give ``ca_file`` (and for
    ``--client-cert-auth`` also ``cert_file`` and ``key_file``) to speak TLS; with none of
    them the channel is plaintext. ``server_name`` is the name checked against the
    server's certificate when it differs from the endpoint's host, as through an SSH
    tunnel whose local end is 127.0.0.1. With ``username``/``password`` the client
    authenticates on first use and sends the token with every call, authenticating again
    once if etcd says the token expired; if the cluster has auth disabled, the credentials
    are not needed and calls go without a token. Every call waits at most ``timeout``
    seconds.

    The channel connects lazily: constructing a client never fails for network reasons;
    the first call does, with :class:`EtcdRpcError`.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        ca_file: str | Path | None = None,
        cert_file: str | Path | None = None,
        key_file: str | Path | None = None,
        server_name: str | None = None,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 5.0,
    ) -> None:
        if (cert_file is None) != (key_file is None):
            raise EtcdApiError(endpoint, "connect", "cert_file and key_file go together")
        if (username is None) != (password is None):
            raise EtcdApiError(endpoint, "connect", "username and password go together")
        if timeout <= 0:
            raise EtcdApiError(endpoint, "connect", f"timeout must be positive, not {timeout}")
        self.endpoint = endpoint
        self.timeout = timeout
        self._username = username
        self._password = password
        self._token: str | None = None
        self._lock = threading.Lock()
        self._closed = False

        options: list[tuple[str, Any]] = [
            # The endpoint is a member or a tunnel on this host: never go through a proxy.
            ("grpc.enable_http_proxy", 0),
            # A member that restarts refuses connections for a moment: reconnect within a
            # poll's interval, not after gRPC's default back-off (1 s, growing to 120 s).
            # (Not grpc.min_reconnect_backoff_ms: gRPC also takes it as the least time a
            # connection attempt may take, 20 s by default; a short one aborts TLS handshakes
            # through a busy tunnel.)
            ("grpc.initial_reconnect_backoff_ms", 50),
            ("grpc.max_reconnect_backoff_ms", 250),
        ]
        if server_name is not None:
            options.append(("grpc.ssl_target_name_override", server_name))
        use_tls = ca_file is not None or cert_file is not None
        if use_tls:
            ca = self._read_tls_file(ca_file, "CA certificate")
            cert = self._read_tls_file(cert_file, "client certificate")
            key = self._read_tls_file(key_file, "client key")
            creds = grpc.ssl_channel_credentials(
                root_certificates=ca, private_key=key, certificate_chain=cert
            )
            self._channel = grpc.secure_channel(endpoint, creds, options=options)
            self.transport = "TLS"
        else:
            if server_name is not None:
                raise EtcdApiError(endpoint, "connect", "server_name needs TLS (ca_file)")
            self._channel = grpc.insecure_channel(endpoint, options=options)
            self.transport = "plaintext"
        self._kv = _stub(pb_grpc.KVStub, self._channel)
        self._cluster = _stub(pb_grpc.ClusterStub, self._channel)
        self._maintenance = _stub(pb_grpc.MaintenanceStub, self._channel)
        self._auth = _stub(pb_grpc.AuthStub, self._channel)
        self._watch = _stub(pb_grpc.WatchStub, self._channel)

    def _read_tls_file(self, path: str | Path | None, what: str) -> bytes | None:
        """Read a PEM file; errors name the file, never its content."""
        if path is None:
            return None
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise EtcdApiError(
                self.endpoint, "connect", f"cannot read {what} {str(path)!r}: {exc.strerror}"
            ) from exc
        if b"-----BEGIN " not in data:
            raise EtcdApiError(
                self.endpoint, "connect", f"{what} {str(path)!r} is not a PEM file"
            )
        return data

    # -- plumbing ------------------------------------------------------------------

    def _error(self, method: str, exc: grpc.RpcError) -> EtcdRpcError:
        code_fn = getattr(exc, "code", None)
        details_fn = getattr(exc, "details", None)
        code = code_fn() if callable(code_fn) else None
        details = details_fn() if callable(details_fn) else None
        code_name = str(getattr(code, "name", "UNKNOWN"))
        return EtcdRpcError(self.endpoint, method, code_name, str(details or "no details"))

    def _raw_call(self, method: str, fn: Callable[..., _T], request: object,
                  metadata: Sequence[tuple[str, str]] | None,
                  timeout: float | None = None) -> _T:
        if self._closed:
            raise EtcdRpcError(self.endpoint, method, "CANCELLED", "client is closed")
        try:
            return fn(request, timeout=timeout or self.timeout, metadata=metadata)
        except grpc.RpcError as exc:
            raise self._error(method, exc) from exc

    def _authenticate(self) -> str:
        request = pb.AuthenticateRequest(name=self._username, password=self._password)
        resp: pb.AuthenticateResponse = self._raw_call(
            "Auth.Authenticate", self._auth.Authenticate, request, None
        )
        return str(resp.token)

    def _metadata(self, renew: bool) -> list[tuple[str, str]] | None:
        if self._username is None:
            return None
        with self._lock:
            if self._token is None or renew:
                try:
                    self._token = self._authenticate()
                except EtcdRpcError as exc:
                    if exc.details != ERR_AUTH_NOT_ENABLED:
                        raise
                    self._token = ""  # the cluster does not check users: send no token
            return [("token", self._token)] if self._token else None

    def _call(self, method: str, fn: Callable[..., _T], request: object,
              timeout: float | None = None) -> _T:
        try:
            return self._raw_call(method, fn, request, self._metadata(renew=False), timeout)
        except EtcdRpcError as exc:
            if self._username is None or exc.details != ERR_INVALID_AUTH_TOKEN:
                raise
        return self._raw_call(method, fn, request, self._metadata(renew=True), timeout)

    # -- Maintenance ---------------------------------------------------------------

    def status(self) -> LiveStatus:
        """``Maintenance.Status`` of the member behind the endpoint (learners answer too)."""
        r: pb.StatusResponse = self._call(
            "Maintenance.Status", self._maintenance.Status, pb.StatusRequest()
        )
        return LiveStatus(
            member_id=int(r.header.member_id),
            cluster_id=int(r.header.cluster_id),
            raft_term=int(r.raftTerm),
            raft_index=int(r.raftIndex),
            raft_applied_index=int(r.raftAppliedIndex),
            leader=int(r.leader),
            db_size=int(r.dbSize),
            db_size_in_use=int(r.dbSizeInUse),
            version=str(r.version),
            errors=tuple(str(e) for e in r.errors),
            is_learner=bool(r.isLearner),
            revision=int(r.header.revision),
            storage_version=str(r.storageVersion),
        )

    def alarms(self) -> list[AlarmInfo]:
        """Every active alarm in the cluster (``Maintenance.Alarm`` with action GET)."""
        request = pb.AlarmRequest(action=pb.AlarmRequest.GET, memberID=0, alarm=pb.NONE)
        r: pb.AlarmResponse = self._call("Maintenance.Alarm", self._maintenance.Alarm, request)
        return [
            AlarmInfo(int(a.memberID), _alarm_name(int(a.alarm))) for a in r.alarms
        ]

    def hash_kv(self, revision: int = 0, timeout: float = 300.0) -> KvHash:
        """Hash of this member's keyspace up to ``revision`` (0: the current revision).

        Members that hold the same data give the same hash for the same revision. etcd reads
        its whole keyspace for it (seconds for a database of gigabytes): hence the long
        ``timeout``.
        """
        r: pb.HashKVResponse = self._call(
            "Maintenance.HashKV", self._maintenance.HashKV, pb.HashKVRequest(revision=revision),
            timeout,
        )
        return KvHash(int(r.hash), int(r.compact_revision), int(r.header.revision))

    # -- Watch ---------------------------------------------------------------------

    def watch_compacted(self, key: bytes | str, start_revision: int) -> tuple[bool, int, int]:
        """Create one watch on ``key`` from ``start_revision`` and read etcd's first answer:
        (canceled, compact_revision, the header's revision). A watch from a compacted
        revision is canceled at once with the compaction's revision (etcd's WatchResponse:
        "compact_revision is set to the minimum index if a watcher tries to watch at a
        compacted index", api/etcdserverpb/rpc.proto); one from a live revision is created
        and stays open, and is closed here."""
        request = pb.WatchRequest(create_request=pb.WatchCreateRequest(
            key=_as_bytes(key), start_revision=start_revision))
        if self._closed:
            raise EtcdRpcError(self.endpoint, "Watch.Watch", "CANCELLED", "client is closed")
        # etcd answers the create first ("created"), and a compacted start revision next, in
        # a response of its own with compact_revision set and canceled (server/etcdserver/
        # api/v3rpc/watch.go at v3.6.16, sendLoop: "canceled := wresp.CompactRevision != 0").
        # A watch that is not compacted stays open: after the create, the answer is waited
        # for up to ``settle`` seconds, then taken as "not compacted".
        settle = min(self.timeout, 3.0)
        stream = self._watch.Watch(iter([request]), timeout=self.timeout + settle,
                                   metadata=self._metadata(renew=False))
        created: int | None = None
        try:
            for r in stream:
                if r.canceled or r.compact_revision:
                    return (bool(r.canceled), int(r.compact_revision),
                            int(r.header.revision))
                if not r.created:          # an event: the revision is not compacted
                    return False, 0, int(r.header.revision)
                created = int(r.header.revision)
                timer = threading.Timer(settle, stream.cancel)
                timer.daemon = True
                timer.start()
        except grpc.RpcError as exc:
            if created is not None and exc.code() in (grpc.StatusCode.CANCELLED,
                                                      grpc.StatusCode.DEADLINE_EXCEEDED):
                return False, 0, created
            raise self._error("Watch.Watch", exc) from exc
        finally:
            stream.cancel()
        raise EtcdRpcError(self.endpoint, "Watch.Watch", "UNKNOWN", "the watch stream ended "
                           "without an answer")

    # -- Cluster -------------------------------------------------------------------

    def member_list(self, serializable: bool = True) -> list[MemberInfo]:
        """The member list. ``serializable=False`` asks for a linearizable read (3.5+),
        which needs a leader; 3.4 always answers from the local view."""
        request = pb.MemberListRequest(linearizable=not serializable)
        r: pb.MemberListResponse = self._call(
            "Cluster.MemberList", self._cluster.MemberList, request
        )
        return _members(r.members)

    def member_add(self, peer_urls: Sequence[str], learner: bool = False) -> MemberAddResult:
        """Add a member (a learner when ``learner``) with these peer URLs."""
        request = pb.MemberAddRequest(peerURLs=list(peer_urls), isLearner=learner)
        r: pb.MemberAddResponse = self._call(
            "Cluster.MemberAdd", self._cluster.MemberAdd, request
        )
        return MemberAddResult(_member(r.member), _members(r.members))

    def member_remove(self, member_id: int) -> list[MemberInfo]:
        """Remove a member; returns the members that remain."""
        request = pb.MemberRemoveRequest(ID=_check_id(member_id))
        r: pb.MemberRemoveResponse = self._call(
            "Cluster.MemberRemove", self._cluster.MemberRemove, request
        )
        return _members(r.members)

    def member_promote(self, member_id: int) -> list[MemberInfo]:
        """Promote a learner to a voting member; returns the new member list.

        Fails with :data:`ERR_LEARNER_NOT_READY` until the learner has caught up.
        """
        request = pb.MemberPromoteRequest(ID=_check_id(member_id))
        r: pb.MemberPromoteResponse = self._call(
            "Cluster.MemberPromote", self._cluster.MemberPromote, request
        )
        return _members(r.members)

    # -- KV ------------------------------------------------------------------------

    def count_keys(self, prefix: bytes | str = b"", serializable: bool = False) -> int:
        """Number of keys that start with ``prefix`` (every key for an empty prefix)."""
        raw = _as_bytes(prefix)
        request = pb.RangeRequest(
            key=raw or b"\0",
            range_end=prefix_range_end(raw),
            count_only=True,
            serializable=serializable,
        )
        r: pb.RangeResponse = self._call("KV.Range", self._kv.Range, request)
        return int(r.count)

    def get(self, key: bytes | str, serializable: bool = False) -> bytes | None:
        """The value of ``key``, or None when there is no such key."""
        request = pb.RangeRequest(key=_as_bytes(key), serializable=serializable)
        r: pb.RangeResponse = self._call("KV.Range", self._kv.Range, request)
        if not r.kvs:
            return None
        return bytes(r.kvs[0].value)

    def quorum_read(self, key: bytes | str, give_up: Callable[[], str | None]) -> str | None:
        """A linearizable read of ``key``, which succeeds only through a quorum: None when it
        did, else why not. While it waits, ``give_up`` is asked every few tens of
        milliseconds; a reason from it (quorum is impossible) cancels the read."""
        method = "KV.Range"
        request = pb.RangeRequest(key=_as_bytes(key), serializable=False)
        try:
            future = self._kv.Range.future(request, timeout=self.timeout,
                                           metadata=self._metadata(renew=False))
        except grpc.RpcError as exc:
            return str(self._error(method, exc).args[0])
        done = threading.Event()
        future.add_done_callback(lambda _f: done.set())
        delay = 0.02
        while not done.wait(delay):
            why = give_up()
            if why is not None:
                future.cancel()
                return why
            delay = min(0.1, delay * 1.5)
        try:
            future.result()
            return None
        except grpc.RpcError as exc:
            err = self._error(method, exc)
            if self._username is not None and err.details == ERR_INVALID_AUTH_TOKEN:
                try:  # a stale token: the plain call renews it
                    self.get(key, serializable=False)
                    return None
                except EtcdApiError as again:
                    return str(again.args[0])
            return str(err.args[0])

    def put(self, key: bytes | str, value: bytes | str) -> int:
        """Write one key; returns the store's revision after the write."""
        request = pb.PutRequest(key=_as_bytes(key), value=_as_bytes(value))
        r: pb.PutResponse = self._call("KV.Put", self._kv.Put, request)
        return int(r.header.revision)

    def put_many(
        self,
        items: PutItems,
        batch: int = 100,
    ) -> int:
        """Write many keys, ``batch`` puts per Txn; returns the revision after the last Txn.

        ``batch`` must not exceed the server's ``--max-txn-ops`` (128 by default), and a
        key may not appear twice in one batch. Returns 0 when there was nothing to write.
        """
        if not 0 < batch:
            raise ValueError(f"batch must be positive, not {batch}")
        pairs = items.items() if isinstance(items, Mapping) else items
        revision = 0
        ops: list[pb.RequestOp] = []
        for key, value in pairs:
            put = pb.PutRequest(key=_as_bytes(key), value=_as_bytes(value))
            ops.append(pb.RequestOp(request_put=put))
            if len(ops) == batch:
                revision = self._txn(ops)
                ops = []
        if ops:
            revision = self._txn(ops)
        return revision

    def _txn(self, ops: list[pb.RequestOp]) -> int:
        r: pb.TxnResponse = self._call("KV.Txn", self._kv.Txn, pb.TxnRequest(success=ops))
        return int(r.header.revision)

    # -- lifetime ------------------------------------------------------------------

    def close(self) -> None:
        """Close the channel; later calls fail with :class:`EtcdRpcError`."""
        self._closed = True
        self._channel.close()

    def __enter__(self) -> EtcdClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"EtcdClient({self.endpoint!r}, {self.transport})"


def _alarm_name(value: int) -> str:
    try:
        return str(pb.AlarmType.Name(value))
    except ValueError:
        return f"ALARM_{value}"
