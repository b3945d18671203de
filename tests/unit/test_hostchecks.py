"""Can etcd start on the host as configured? The facts script runs in a real shell on this
machine (its real `ip`, `ss`, /proc/mounts and stat); the judging is pure and tested on those
facts and on certificates made here."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import socket
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given
from hypothesis import strategies as st

from etcd_recovery import hostchecks as hc

NOW = dt.datetime(2026, 12, 3, tzinfo=dt.UTC)


def make_cert(path: Path, *, ips: tuple[str, ...] = (), dns: tuple[str, ...] = (),
              not_after: dt.datetime = NOW + dt.timedelta(days=365)) -> Path:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "etcd-1")])
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
               .public_key(key.public_key()).serial_number(1)
               .not_valid_before(NOW - dt.timedelta(days=400)).not_valid_after(not_after))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(key, hashes.SHA256())
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def run_facts(data_dir: str, user: str, names: str, *files: str) -> str:
    """FACTS_SCRIPT as the host runs it (sh -c SCRIPT sh ARGS...)."""
    return subprocess.run(["sh", "-c", hc.FACTS_SCRIPT, "sh", data_dir, user, names, *files],
                          capture_output=True, text=True, check=True).stdout


def local_address() -> str:
    """An address of this machine that is not loopback (or loopback when it has none)."""
    text = subprocess.run(["ip", "-o", "addr", "show"], capture_output=True, text=True).stdout
    addrs = hc.parse_addresses(text.splitlines())
    return next((a for a in sorted(addrs) if not ipaddress.ip_address(a).is_loopback
                 and ipaddress.ip_address(a).version == 4), "127.0.0.1")


def flags_for(ip: str, port: int, tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"listen-peer-urls": f"https://{ip}:{port}",
            "initial-advertise-peer-urls": f"https://{ip}:{port}",
            "listen-client-urls": f"https://{ip}:{port + 1},https://127.0.0.1:{port + 1}",
            "advertise-client-urls": f"https://{ip}:{port + 1}",
            "data-dir": str(tmp_path / "data"), **extra}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_facts_from_a_real_shell(tmp_path: Path) -> None:
    ca = make_cert(tmp_path / "ca.crt")
    missing = str(tmp_path / "nope.key")
    text = run_facts(str(tmp_path / "data" / "member"), "root", "localhost", str(ca), missing)
    facts = hc.parse_facts(text, "root", {})
    assert facts.addresses is not None and "127.0.0.1" in facts.addresses
    assert facts.listeners is not None
    # the data dir does not exist yet: its nearest existing parent is what is judged
    assert facts.data_dir_path == str(tmp_path) and facts.data_dir_writable
    assert facts.files[missing] is None
    st_ca = facts.files[str(ca)]
    assert st_ca is not None and st_ca.owner == "root" or os.getuid() != 0
    assert "127.0.0.1" in facts.resolved.get("localhost", frozenset()) or \
        "::1" in facts.resolved.get("localhost", frozenset())
    mount = hc.mount_of(str(tmp_path), facts.mounts)
    assert mount is not None and mount[0].startswith("/")


def test_an_address_not_on_the_host_is_refused_with_the_hosts_own(tmp_path: Path) -> None:
    mine = local_address()
    gone = "203.0.113.77"   # TEST-NET-3: on no host here
    port = free_port()
    facts = hc.parse_facts(run_facts(str(tmp_path), "root", ""), "root", {})
    checks = hc.host_checks("etcd-1", str(tmp_path), flags_for(gone, port, tmp_path), facts,
                            [], NOW)
    bad = hc.failures(checks)
    assert [c.check for c in bad] == ["address"] * 4, bad  # listen and advertise, peer+client
    msg = bad[0].message()
    assert msg.startswith(f"etcd-1's peer listen URL https://{gone}:{port}: {gone} is not an "
                          "address of the host (it has ")
    assert mine in msg or mine == "127.0.0.1"
    assert f"ip addr add {gone}/PREFIX dev IFACE" in msg and "--exclude etcd-1" in msg
    good = hc.host_checks("etcd-1", str(tmp_path), flags_for(mine, port, tmp_path), facts, [],
                          NOW)
    assert not hc.failures(good), hc.failures(good)


def test_a_port_held_by_another_process_is_refused_and_its_own_etcd_is_not(
        tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = int(s.getsockname()[1])
        facts = hc.parse_facts(run_facts(str(tmp_path), "root", ""), "root", {})
        flags = {"listen-peer-urls": f"https://127.0.0.1:{port}",
                 "listen-client-urls": f"https://{hc.ANY_V4}:{port + 1}"}
        bad = hc.failures(hc.check_ports("etcd-1", flags, facts, []))
        assert len(bad) == 1 and bad[0].subject == f"peer listen URL https://127.0.0.1:{port}"
        if os.getuid() == 0:  # ss names the process only for the sockets one may see
            assert f"(pid {os.getpid()})" in bad[0].found, bad[0].found
        assert f"port {port} on 127.0.0.1 is held by" in bad[0].found
        # the same listener, held by the member's own etcd (its pid), is fine
        if os.getuid() == 0:
            assert not hc.failures(hc.check_ports("etcd-1", flags, facts, [os.getpid()]))
        # a wildcard listener on the port takes every address
        wild = {"listen-peer-urls": f"https://{local_address()}:{port}"}
        assert hc.failures(hc.check_ports("etcd-1", wild, facts, [])) == [] or \
            local_address() == "127.0.0.1"


def test_listeners_parsed_from_ss() -> None:
    lines = [
        'LISTEN 0      4096   172.31.16.11:2380      0.0.0.0:*    users:(("etcd",pid=812,fd=7))',
        'LISTEN 0      4096          [::]:2381         [::]:*    users:(("etcd",pid=812,fd=9))',
        'LISTEN 0      128              *:22              *:*    users:(("sshd",pid=55,fd=3))',
        'LISTEN 0      5     [fe80::1%eth0]:8080       [::]:*',
    ]
    got = hc.parse_listeners(lines)
    assert got == (hc.Listener("172.31.16.11", 2380, "etcd", 812),
                   hc.Listener("::", 2381, "etcd", 812),
                   hc.Listener(hc.ANY_V4, 22, "sshd", 55),
                   hc.Listener("fe80::1", 8080, None, None))


def test_certificates(tmp_path: Path) -> None:
    ip = "172.31.16.11"
    good = make_cert(tmp_path / "peer.crt", ips=(ip,), dns=("etcd-1",))
    expired = make_cert(tmp_path / "old.crt", ips=(ip,), not_after=NOW - dt.timedelta(days=2))
    soon = make_cert(tmp_path / "soon.crt", ips=(ip,), not_after=NOW + dt.timedelta(days=3))
    other = make_cert(tmp_path / "other.crt", ips=("10.0.0.9",), dns=("*.example.org",))
    key = tmp_path / "peer.key"
    key.write_text("not read")
    key.chmod(0o600)
    files = [str(p) for p in (good, expired, soon, other, key)]
    text = run_facts(str(tmp_path), "root", "", *files)
    certs: dict[str, hc.CertInfo | str] = {f: hc.parse_cert(Path(f).read_bytes())
                                           for f in files[:4]}
    facts = hc.parse_facts(text, "root", certs)
    base = {"initial-advertise-peer-urls": f"https://{ip}:2380",
            "advertise-client-urls": "https://etcd-1.example.com:2379", "peer-key-file": str(key)}

    def judge(**flags: str) -> list[hc.HostCheck]:
        return hc.check_files("etcd-1", {**base, **flags}, facts, NOW)

    ok = judge(**{"peer-cert-file": str(good), "trusted-ca-file": str(other),
                  "peer-trusted-ca-file": str(good)})
    assert len(ok) == 4 and all(c.ok and not c.warn for c in ok), ok  # a CA serves no URL
    [c] = [c for c in judge(**{"peer-cert-file": str(expired)}) if not c.ok]
    assert c.found.startswith("expired ") and "renew" in c.fix
    [c] = [c for c in judge(**{"peer-cert-file": str(soon)}) if c.subject.endswith("soon.crt")]
    assert c.ok and c.warn and "3 day(s) left" in c.found
    # the client certificate's SANs are checked against the advertised client URL's host
    [c] = [c for c in judge(**{"cert-file": str(other)}) if not c.ok]
    assert "do not cover etcd-1.example.com" in c.found, c.found
    assert all(c.ok for c in judge(**{"cert-file": str(other),
                                      "advertise-client-urls": "https://a.example.org:2379"}))
    # the peer certificate does not cover the peer URL's IP
    [c] = [c for c in judge(**{"peer-cert-file": str(other)}) if not c.ok]
    assert f"do not cover {ip}" in c.found
    # a missing file, and a key etcd's user cannot read (it is only stat'ed)
    [c] = [c for c in judge(**{"peer-cert-file": str(tmp_path / "gone.crt")}) if not c.ok]
    assert c.found == "no such file"
    facts_etcd = hc.parse_facts(text, "etcd", certs)
    bad = hc.failures(hc.check_files("etcd-1", base, facts_etcd, NOW))
    if os.getuid() == 0:
        assert len(bad) == 1 and "etcd's user etcd cannot read it" in bad[0].found, bad


def test_read_only_data_dir() -> None:
    mounts = hc.parse_mounts(["/dev/vda / ext4 rw,relatime 0 0",
                              "/dev/vdb /var/lib/etcd xfs ro,relatime 0 0",
                              "tmpfs /var/lib/etcd-other tmpfs rw 0 0"])
    facts = hc.HostFacts(frozenset({"10.0.0.1"}), (), mounts, "/var/lib/etcd/member", False,
                         "root", frozenset(), {}, {})
    [c] = hc.check_data_dir("etcd-1", "/var/lib/etcd", facts)
    assert not c.ok and c.found == "/var/lib/etcd is mounted read-only"
    assert "mount -o remount,rw /var/lib/etcd" in c.fix
    facts2 = hc.HostFacts(frozenset({"10.0.0.1"}), (), mounts, "/var/lib/etcd-other", True,
                          "root", frozenset(), {}, {})
    [c] = hc.check_data_dir("etcd-1", "/var/lib/etcd-other", facts2)
    assert c.ok and "(/var/lib/etcd-other)" in c.found


def test_host_without_ip_or_ss_is_not_refused_for_it() -> None:
    text = "## addr\nsh: ip: not found\n## listen\nsh: 1: ss: not found\n## datadir\n/x\nwritable\n"
    facts = hc.parse_facts(text, "root", {})
    assert facts.addresses is None and facts.listeners is None
    checks = hc.host_checks("etcd-1", "/x", {"listen-peer-urls": "https://10.1.1.1:2380"},
                            facts, [], NOW)
    assert not hc.failures(checks)
    assert [c.found.startswith("not checked") for c in checks[:2]] == [True, True]


@given(st.text(max_size=400))
def test_any_facts_text_parses(text: str) -> None:
    facts = hc.parse_facts(text, "root", {})
    hc.host_checks("m", "/var/lib/etcd", {"listen-peer-urls": "https://[::1]:2380",
                                          "advertise-client-urls": "https://h:2379"},
                   facts, [], NOW)


@pytest.mark.parametrize(("san", "host", "covered"), [
    ("etcd-1", "etcd-1", True), ("*.example.org", "a.example.org", True),
    ("*.example.org", "a.b.example.org", False), ("ETCD-1.", "etcd-1", True),
])
def test_dns_sans(san: str, host: str, covered: bool) -> None:
    cert = hc.CertInfo(NOW, (san,), (), "CN=x")
    assert hc._covers(cert, host) is covered


def test_a_host_that_says_nothing_refuses_nothing() -> None:
    facts = hc.parse_facts("", "root", {})
    checks = hc.host_checks("etcd-1", "/var/lib/etcd",
                            {"listen-peer-urls": "https://10.1.1.1:2380"}, facts, [], NOW)
    assert not hc.failures(checks)
    assert {c.check for c in checks if c.found.startswith("not checked")} == \
        {"address", "data dir"}
