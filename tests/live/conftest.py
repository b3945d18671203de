"""Real etcd members on loopback, with TLS and client-certificate auth, for the live tests.

The builds are named by role (``ROLES``: 3.4, the newest 3.5, 3.6 and 3.7 pinned in
etcd_recovery/lab/builds.txt) and found under /opt (or $ETCD_RECOVERY_ETCD_DIR) as
``etcd-<version>/etcd``. Every member listens on 127.0.0.1 at ports picked by binding port 0,
keeps its data under pytest's temporary directory and is stopped by PID when its fixture ends.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from etcd_recovery.lab.builds import version_of
from etcd_recovery.live import EtcdClient

ETCD_DIR = Path(os.environ.get("ETCD_RECOVERY_ETCD_DIR", "/opt"))
ROLES = ("3.4", "3.5-newest", "3.6-newest", "3.7-newest")
START_TIMEOUT = 20.0
INVALID_NAME = "etcd-test.invalid"


def etcd_bin_dir(role: str) -> Path:
    """/opt/etcd-<version>/ of the build that has ``role``; fails loudly if it is missing."""
    d = ETCD_DIR / f"etcd-{version_of(role)}"
    if not (d / "etcd").is_file():
        raise RuntimeError(f"no {d}/etcd for the build {role!r} (run scripts/setup)")
    return d


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- PKI -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    """PEM files: one CA and what it signed, plus an unrelated CA."""

    ca: Path
    server_cert: Path  # SAN 127.0.0.1, localhost
    server_key: Path
    invalid_cert: Path  # SAN etcd-test.invalid only
    invalid_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path  # signed nothing we use


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ))
    path.chmod(0o600)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _ca(cn: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _key()
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _leaf(
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
    cn: str,
    sans: Sequence[x509.GeneralName],
    usages: Sequence[x509.ObjectIdentifier],
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    ca_cert, ca_key = ca
    key = _key()
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def make_pki(d: Path) -> Pki:
    d.mkdir(parents=True, exist_ok=True)
    ca = _ca("etcd-recovery test CA")
    other = _ca("some other CA")
    server = _leaf(
        ca, "etcd-test-server",
        [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")],
        [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
    )
    invalid = _leaf(
        ca, INVALID_NAME, [x509.DNSName(INVALID_NAME)],
        [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
    )
    # The CN is not an etcd user name: with auth on, etcd would take a matching CN as
    # the caller's identity and the password tests would prove nothing.
    client = _leaf(ca, "etcd-recovery-test-client", [], [ExtendedKeyUsageOID.CLIENT_AUTH])

    def pem(cert: x509.Certificate) -> bytes:
        return cert.public_bytes(serialization.Encoding.PEM)

    pki = Pki(
        ca=d / "ca.pem", server_cert=d / "server.pem", server_key=d / "server-key.pem",
        invalid_cert=d / "invalid.pem", invalid_key=d / "invalid-key.pem",
        client_cert=d / "client.pem", client_key=d / "client-key.pem",
        other_ca=d / "other-ca.pem",
    )
    pki.ca.write_bytes(pem(ca[0]))
    pki.other_ca.write_bytes(pem(other[0]))
    for (cert, key), cert_path, key_path in (
        (server, pki.server_cert, pki.server_key),
        (invalid, pki.invalid_cert, pki.invalid_key),
        (client, pki.client_cert, pki.client_key),
    ):
        cert_path.write_bytes(pem(cert))
        _write_key(key_path, key)
    return pki


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


# -- etcd members ----------------------------------------------------------------------


@dataclass
class EtcdMember:
    """A single-member etcd cluster started by a fixture."""

    role: str  # the build's role in builds.txt ("3.6-newest")
    version: str  # its version ("3.6.16")
    bin_dir: Path
    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    log_path: Path
    pki: Pki
    tls_name: str | None = None  # the name in the server certificate, if not 127.0.0.1
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def minor(self) -> str:
        """``3.6`` for 3.6.16."""
        return ".".join(self.version.split(".")[:2])

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    @property
    def client_url(self) -> str:
        return f"https://{self.endpoint}"

    def client(self, **kwargs: Any) -> EtcdClient:
        args: dict[str, Any] = {
            "ca_file": self.pki.ca, "cert_file": self.pki.client_cert,
            "key_file": self.pki.client_key, "timeout": 15.0,
        }
        args.update(kwargs)
        return EtcdClient(self.endpoint, **args)

    def etcdctl(self, *args: str, user: str | None = None) -> str:
        cmd = [
            str(self.bin_dir / "etcdctl"), f"--endpoints={self.client_url}",
            f"--cacert={self.pki.ca}", f"--cert={self.pki.client_cert}",
            f"--key={self.pki.client_key}", "--command-timeout=5s",
        ]
        if self.tls_name is not None:
            # etcdctl cannot override the name it checks; the client cert is still sent.
            cmd.append("--insecure-skip-tls-verify")
        if user is not None:
            cmd.append(f"--user={user}")
        env = _clean_env()
        env["ETCDCTL_API"] = "3"
        done = subprocess.run([*cmd, *args], env=env, capture_output=True, timeout=20)
        if done.returncode != 0:
            raise RuntimeError(
                f"etcdctl {' '.join(args)} exited {done.returncode}: "
                f"{done.stderr.decode(errors='replace').strip()}"
            )
        return done.stdout.decode()

    def etcdctl_status(self) -> dict[str, Any]:
        out = json.loads(self.etcdctl("endpoint", "status", "-w", "json"))
        assert isinstance(out, list) and len(out) == 1
        status = out[0]["Status"]
        assert isinstance(status, dict)
        return status

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("ETCD")}


def start_member(
    role: str,
    base: Path,
    pki: Pki,
    *,
    cert: Path | None = None,
    key: Path | None = None,
    tls_name: str | None = None,
    extra: Sequence[str] = (),
    name: str | None = None,
    peer_port: int | None = None,
    join: str | None = None,
) -> EtcdMember:
    """Start a member of a new single-member cluster, or with ``join`` (the
    ``--initial-cluster`` of a cluster that already added it, this member included) one that
    joins that cluster (``--initial-cluster-state=existing``)."""
    bin_dir = etcd_bin_dir(role)
    base.mkdir(parents=True, exist_ok=True)
    version = version_of(role)
    member = EtcdMember(
        role=role, version=version, bin_dir=bin_dir,
        name=name or f"live-{version.replace('.', '-')}",
        client_port=free_port(), peer_port=peer_port or free_port(), data_dir=base / "data",
        log_path=base / "etcd.log", pki=pki, tls_name=tls_name,
    )
    peer_url = f"http://127.0.0.1:{member.peer_port}"
    cmd = [
        str(bin_dir / "etcd"),
        f"--name={member.name}",
        f"--data-dir={member.data_dir}",
        f"--listen-client-urls={member.client_url}",
        f"--advertise-client-urls={member.client_url}",
        f"--listen-peer-urls={peer_url}",
        f"--initial-advertise-peer-urls={peer_url}",
        f"--initial-cluster={join or f'{member.name}={peer_url}'}",
        f"--initial-cluster-state={'existing' if join else 'new'}",
        "--initial-cluster-token=etcd-recovery-live",
        "--client-cert-auth",
        f"--trusted-ca-file={pki.ca}",
        f"--cert-file={cert or pki.server_cert}",
        f"--key-file={key or pki.server_key}",
        "--logger=zap",
        "--log-outputs=stderr",
        *extra,
    ]
    with member.log_path.open("wb") as log:
        member.proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=_clean_env(),
        )
    try:
        _wait_ready(member)
    except BaseException:
        stop_member(member)
        raise
    return member


def _wait_ready(member: EtcdMember) -> None:
    """Wait until the member has a leader and answers etcdctl (TLS checked by etcdctl)."""
    assert member.proc is not None
    deadline = time.monotonic() + START_TIMEOUT
    last = ""
    while time.monotonic() < deadline:
        if member.proc.poll() is not None:
            raise RuntimeError(
                f"etcd {member.version} exited {member.proc.returncode}:\n{member.log_tail()}"
            )
        if b"serving client traffic" in member.log_path.read_bytes():
            try:
                if member.etcdctl_status().get("leader"):
                    return
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                last = str(exc)
        time.sleep(0.1)
    raise RuntimeError(f"etcd {member.version} not ready: {last}\n{member.log_tail()}")


def stop_member(member: EtcdMember) -> None:
    proc = member.proc
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


@pytest.fixture(scope="module", params=ROLES, ids=lambda r: f"etcd{r}")
def etcd(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, pki: Pki
) -> Iterator[EtcdMember]:
    """One TLS single-member cluster per build, shared by a module's tests."""
    role = str(request.param)
    member = start_member(role, tmp_path_factory.mktemp(f"etcd{role}"), pki)
    try:
        yield member
    finally:
        stop_member(member)


@pytest.fixture
def client(etcd: EtcdMember) -> Iterator[EtcdClient]:
    with etcd.client() as c:
        yield c

