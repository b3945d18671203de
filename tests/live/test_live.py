"""EtcdClient against real etcd members on loopback (3.4 and the newest 3.5, 3.6 and 3.7
builds, by role: conftest.ROLES), with TLS."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from etcd_recovery.errors import EtcdApiError
from etcd_recovery.live import (
    ERR_AUTH_FAILED,
    ERR_LEARNER_NOT_READY,
    ERR_MEMBER_NOT_FOUND,
    ERR_NOT_SUPPORTED_FOR_LEARNER,
    ERR_PEER_URL_EXISTS,
    ERR_TOO_MANY_LEARNERS,
    EtcdClient,
    EtcdRpcError,
    prefix_range_end,
)

from .conftest import INVALID_NAME, EtcdMember, Pki, free_port, start_member, stop_member

ROOT_PASSWORD = "rootpw"  # noqa: S105 (a throwaway test cluster)


def test_status_matches_etcdctl(etcd: EtcdMember, client: EtcdClient) -> None:
    # Nothing writes meanwhile, but retry if etcdctl itself saw the index move.
    for _ in range(20):
        before = etcd.etcdctl_status()
        ours = client.status()
        after = etcd.etcdctl_status()
        if before == after:
            break
    else:
        pytest.fail("etcd's status kept changing")
    hdr = before["header"]
    assert ours.member_id == hdr["member_id"]
    assert ours.cluster_id == hdr["cluster_id"]
    assert ours.revision == hdr["revision"]
    assert ours.raft_term == before["raftTerm"] == hdr["raft_term"]
    assert ours.raft_index == before["raftIndex"]
    assert ours.raft_applied_index == before["raftAppliedIndex"]
    assert ours.leader == before["leader"] == ours.member_id
    assert ours.db_size == before["dbSize"]
    assert ours.db_size_in_use == before["dbSizeInUse"]
    assert ours.version == before["version"]
    assert ours.version == etcd.version
    assert ours.errors == tuple(before.get("errors", ()))
    assert ours.is_learner is bool(before.get("isLearner", False)) is False
    # StatusResponse.storageVersion (field 11, api/etcdserverpb/rpc.proto @v3.6.16 and
    # @v3.7.3): the backend's meta/storageVersion, "" before 3.6.
    assert ours.storage_version == before.get("storageVersion", "")


def test_storage_version(etcd: EtcdMember, client: EtcdClient) -> None:
    """3.6+ set meta/storageVersion to "<major>.<minor>.0" once the cluster version is decided
    (monitorStorageVersion, server/etcdserver/server.go @v3.6.16): moments after the first
    commit of a new cluster, so wait for it. 3.4 and 3.5 have no such field."""
    if etcd.minor in ("3.4", "3.5"):
        assert client.status().storage_version == ""
        return
    deadline = time.monotonic() + 10
    while not (got := client.status().storage_version) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert got == f"{etcd.minor}.0"
    assert etcd.etcdctl_status()["storageVersion"] == got


def test_put_get(client: EtcdClient) -> None:
    rev = client.put("/live/one", b"\x00value\xff")
    assert rev > 1
    assert client.get(b"/live/one") == b"\x00value\xff"
    assert client.get("/live/one", serializable=True) == b"\x00value\xff"
    assert client.get("/live/missing") is None
    assert client.put("/live/one", "again") == rev + 1
    assert client.status().revision == rev + 1


def test_put_many_then_count(etcd: EtcdMember, client: EtcdClient) -> None:
    total_before = client.count_keys()
    rev_before = client.status().revision
    items = [(f"/live/many/{i:04d}", f"v{i}") for i in range(1000)]
    rev = client.put_many(items, batch=100)
    # One Txn per batch, one revision per Txn.
    assert rev == rev_before + 10
    assert client.count_keys("/live/many/") == 1000
    assert client.count_keys(b"/live/many/", serializable=True) == 1000
    assert client.count_keys() == total_before + 1000
    assert client.count_keys("/live/many/09") == 100
    assert client.count_keys("/live/nothing-here/") == 0
    assert client.get("/live/many/0999") == b"v999"
    out = json.loads(etcd.etcdctl(
        "get", "/live/many/", "--prefix", "--keys-only", "--limit=1", "-w", "json"
    ))
    assert out["count"] == 1000
    # A mapping works too, and an empty input writes nothing.
    assert client.put_many({b"/live/map/a": b"1", b"/live/map/b": b"2"}) == rev + 1
    assert client.put_many([]) == 0
    with pytest.raises(TypeError):
        client.put_many([(1, b"x")])  # type: ignore[list-item]
    assert client.count_keys("/live/map/") == 2


def test_put_many_duplicate_key_in_batch_is_refused(client: EtcdClient) -> None:
    with pytest.raises(EtcdRpcError) as info:
        client.put_many([("/live/dup", "1"), ("/live/dup", "2")])
    assert info.value.code == "INVALID_ARGUMENT"
    assert info.value.details == "etcdserver: duplicate key given in txn request"
    assert info.value.method == "KV.Txn"
    assert client.get("/live/dup") is None


def test_prefix_range_end() -> None:
    assert prefix_range_end(b"") == b"\0"
    assert prefix_range_end(b"/a/") == b"/a0"
    assert prefix_range_end(b"a\xff") == b"b"
    assert prefix_range_end(b"\xff\xff") == b"\0"


def test_member_list(etcd: EtcdMember, client: EtcdClient) -> None:
    me = client.status().member_id
    for serializable in (True, False):
        members = client.member_list(serializable=serializable)
        assert len(members) == 1
        (m,) = members
        assert m.id == me
        assert m.name == etcd.name
        assert m.peer_urls == (f"http://127.0.0.1:{etcd.peer_port}",)
        assert m.client_urls == (etcd.client_url,)
        assert m.is_learner is False


def test_alarms_empty(client: EtcdClient) -> None:
    assert client.alarms() == []
    assert client.status().errors == ()


def test_hash_kv(client: EtcdClient) -> None:
    client.put("/live/hash", "1")
    first = client.hash_kv()
    rev = first.revision
    assert rev == client.status().revision
    again = client.hash_kv(rev)
    assert again.hash == first.hash
    assert again.revision == rev
    assert again.compact_revision == first.compact_revision
    client.put("/live/hash", "2")
    later = client.hash_kv()
    assert later.revision == rev + 1
    assert later.hash != first.hash
    assert client.hash_kv(rev).hash == first.hash


def test_learner_add_promote_remove(etcd: EtcdMember, client: EtcdClient) -> None:
    fake_peer = f"http://127.0.0.1:{free_port()}"
    added = client.member_add([fake_peer], learner=True)
    try:
        new = added.member
        assert new.is_learner is True
        assert new.peer_urls == (fake_peer,)
        assert new.name == ""  # never started
        assert new.client_urls == ()
        assert {m.id for m in added.members} == {new.id, client.status().member_id}
        listed = {m.id: m for m in client.member_list()}
        assert listed[new.id] == new

        with pytest.raises(EtcdRpcError) as info:
            client.member_promote(new.id)
        assert info.value.details == ERR_LEARNER_NOT_READY
        assert info.value.code == "FAILED_PRECONDITION"
        assert info.value.retryable
        assert ERR_LEARNER_NOT_READY in str(info.value)
        assert etcd.endpoint in str(info.value)

        with pytest.raises(EtcdRpcError) as info:
            client.member_add([f"http://127.0.0.1:{free_port()}"], learner=True)
        assert info.value.details == ERR_TOO_MANY_LEARNERS
        assert not info.value.retryable

        # Same URL list again within a second would give the same member ID (IDs hash the
        # URLs and the time in seconds) and fail as "member ID already exist"; a second
        # URL makes a new ID, so the peer URL check is the one that fires. Raft drops a
        # configuration change proposed while the previous one is not applied yet (etcd then
        # waits for it until the deadline): a linearizable read first waits until the
        # learner's add is applied, which can lag on a loaded machine.
        client.get("/live-test/applied", serializable=False)
        with pytest.raises(EtcdRpcError) as info:
            client.member_add([fake_peer, f"http://127.0.0.1:{free_port()}"], learner=False)
        assert info.value.details == ERR_PEER_URL_EXISTS
    finally:
        remaining = client.member_remove(added.member.id)
    assert [m.id for m in remaining] == [client.status().member_id]
    assert len(client.member_list()) == 1
    with pytest.raises(EtcdRpcError) as info:
        client.member_remove(added.member.id)
    assert info.value.details == ERR_MEMBER_NOT_FOUND
    assert info.value.code == "NOT_FOUND"


def test_bad_member_id_is_refused_locally(client: EtcdClient) -> None:
    with pytest.raises(ValueError, match="member ID"):
        client.member_remove(0)
    with pytest.raises(ValueError, match="member ID"):
        client.member_promote(2**64)


def _expect_api_error(c: EtcdClient) -> EtcdRpcError:
    with pytest.raises(EtcdApiError) as info:
        c.status()
    err = info.value
    assert isinstance(err, EtcdRpcError)
    assert not isinstance(err, grpc.RpcError)
    return err


def test_wrong_ca_is_an_api_error(etcd: EtcdMember, pki: Pki) -> None:
    with etcd.client(ca_file=pki.other_ca, timeout=2.0) as c:
        err = _expect_api_error(c)
    assert err.code == "UNAVAILABLE"
    assert err.endpoint == etcd.endpoint
    assert err.method == "Maintenance.Status"


def test_missing_client_cert_is_refused(etcd: EtcdMember, pki: Pki) -> None:
    # --client-cert-auth: the server ends the handshake without a client certificate.
    with EtcdClient(etcd.endpoint, ca_file=pki.ca, timeout=2.0) as c:
        err = _expect_api_error(c)
    assert err.code == "UNAVAILABLE"


def test_closed_port_fails_fast(pki: Pki) -> None:
    endpoint = f"127.0.0.1:{free_port()}"
    c = EtcdClient(endpoint, ca_file=pki.ca, cert_file=pki.client_cert,
                   key_file=pki.client_key, timeout=2.0)
    start = time.monotonic()
    with c:
        err = _expect_api_error(c)
    assert time.monotonic() - start < 3.0
    assert err.code in {"UNAVAILABLE", "DEADLINE_EXCEEDED"}
    assert err.endpoint == endpoint


def test_plaintext_to_tls_port_fails(etcd: EtcdMember) -> None:
    with EtcdClient(etcd.endpoint, timeout=2.0) as c:
        assert c.transport == "plaintext"
        err = _expect_api_error(c)
    assert err.code in {"UNAVAILABLE", "DEADLINE_EXCEEDED"}


def test_unreadable_tls_file(tmp_path: Path, pki: Pki) -> None:
    with pytest.raises(EtcdApiError, match="cannot read CA certificate"):
        EtcdClient("127.0.0.1:1", ca_file=tmp_path / "absent.pem")
    not_pem = tmp_path / "key.pem"
    not_pem.write_bytes(b"secret-ish bytes")
    with pytest.raises(EtcdApiError, match="client key .* is not a PEM file") as info:
        EtcdClient("127.0.0.1:1", ca_file=pki.ca, cert_file=pki.client_cert, key_file=not_pem)
    assert "secret-ish" not in str(info.value)
    with pytest.raises(EtcdApiError, match="go together"):
        EtcdClient("127.0.0.1:1", ca_file=pki.ca, cert_file=pki.client_cert)


def test_credentials_with_auth_disabled(etcd: EtcdMember) -> None:
    # The main members run without auth: Authenticate fails, calls go on without a token.
    with etcd.client(username="root", password=ROOT_PASSWORD) as c:
        assert c.status().member_id == c.member_list()[0].id
        assert c._token == ""  # noqa: SLF001


def test_closed_client_raises_api_error(client: EtcdClient) -> None:
    client.close()
    with pytest.raises(EtcdRpcError, match="client is closed"):
        client.status()


@pytest.fixture
def invalid_san_etcd(etcd: EtcdMember, pki: Pki, tmp_path: Path) -> Iterator[EtcdMember]:
    """A member whose server certificate names only etcd-test.invalid."""
    member = start_member(etcd.role, tmp_path / "invalid-san", pki,
                          cert=pki.invalid_cert, key=pki.invalid_key, tls_name=INVALID_NAME)
    try:
        yield member
    finally:
        stop_member(member)


def test_server_name_override(invalid_san_etcd: EtcdMember) -> None:
    member = invalid_san_etcd
    with member.client(timeout=2.0) as c:
        err = _expect_api_error(c)  # 127.0.0.1 is not in the certificate
    assert err.code == "UNAVAILABLE"
    with member.client(server_name=INVALID_NAME) as c:
        status = c.status()
        assert status.version == member.version
        assert [m.name for m in c.member_list()] == [member.name]


@pytest.fixture
def auth_etcd(etcd: EtcdMember, pki: Pki, tmp_path: Path) -> Iterator[EtcdMember]:
    """A member with auth enabled (user root) and one-second simple tokens."""
    member = start_member(etcd.role, tmp_path / "auth", pki, extra=["--auth-token-ttl=1"])
    try:
        member.etcdctl("user", "add", f"root:{ROOT_PASSWORD}")
        member.etcdctl("user", "grant-role", "root", "root")
        member.etcdctl("auth", "enable")
        yield member
    finally:
        stop_member(member)


def test_auth_token(auth_etcd: EtcdMember) -> None:
    member = auth_etcd
    with member.client(username="root", password=ROOT_PASSWORD) as c:
        assert c.put("/auth/k", "v") > 1
        assert c.get("/auth/k") == b"v"
        token = c._token  # noqa: SLF001 (checking that the token is renewed)
        assert token
        # The token lives one second once idle: the next call must authenticate again.
        time.sleep(2.5)
        assert c.count_keys("/auth/") == 1
        assert c._token and c._token != token  # noqa: SLF001

    with member.client(username="root", password=ROOT_PASSWORD + "-wrong") as c:
        with pytest.raises(EtcdRpcError) as info:
            c.status()
    assert info.value.details == ERR_AUTH_FAILED
    assert info.value.method == "Auth.Authenticate"

    with member.client() as c:  # no token; the client certificate's CN is no user
        with pytest.raises(EtcdRpcError) as info:
            c.get("/auth/k")
    assert info.value.details.startswith("etcdserver: ")


def test_a_running_learner(etcd: EtcdMember, client: EtcdClient, pki: Pki,
                           tmp_path: Path) -> None:
    """A learner that joined and caught up: Status says so and names the leader; it serves
    only Status and serializable reads (isRPCSupportedForLearner,
    server/etcdserver/api/v3rpc/util.go, the same @v3.5.35 and @v3.7.3): MemberList, Alarm,
    writes and linearizable reads fail with ERR_NOT_SUPPORTED_FOR_LEARNER. The leader lists
    it with its name and client URL once it published them."""
    me = client.status().member_id
    port = free_port()
    peer = f"http://127.0.0.1:{port}"
    added = client.member_add([peer], learner=True)
    listed = ",".join(f"{m.name}={m.peer_urls[0]}" for m in added.members if m.name)
    learner = None
    try:
        client.get("/live-test/applied", serializable=False)  # the add is applied
        learner = start_member(etcd.role, tmp_path / "learner", pki, name="learner",
                               peer_port=port, join=f"{listed},learner={peer}")
        with learner.client() as lc:
            st = lc.status()
            assert st.is_learner is True
            assert (st.member_id, st.leader, st.cluster_id) == (
                added.member.id, me, client.status().cluster_id)
            assert st.version == etcd.version
            client.put("/live/learner", "seen")
            deadline = time.monotonic() + 10
            while lc.get("/live/learner", serializable=True) != b"seen":
                assert time.monotonic() < deadline, "the learner never caught up"
                time.sleep(0.05)
            for call in (lambda: lc.member_list(), lambda: lc.alarms(),
                         lambda: lc.put("/live/x", "y"), lambda: lc.get("/live/learner")):
                with pytest.raises(EtcdRpcError) as info:
                    call()
                assert info.value.details == ERR_NOT_SUPPORTED_FOR_LEARNER
        deadline = time.monotonic() + 10
        while True:  # its name and client URL arrive with its publish, through raft
            mine = {m.id: m for m in client.member_list()}[added.member.id]
            if mine.name or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert mine.is_learner and mine.name == "learner"
        assert mine.client_urls == (learner.client_url,) and mine.peer_urls == (peer,)
    finally:
        client.get("/live-test/applied", serializable=False)
        client.member_remove(added.member.id)
        if learner is not None:
            stop_member(learner)
    assert [m.id for m in client.member_list()] == [me]
