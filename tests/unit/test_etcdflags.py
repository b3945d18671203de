"""One reading of etcd's flags (Go's flag package, then ETCD_* for flags not given): whether
etcd runs with --force-new-cluster, and which of a host's etcd processes is the member's."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from etcd_recovery import etcdflags
from etcd_recovery.etcdflags import (
    argv_from_cmdline,
    data_dir,
    env_file,
    env_from_environ,
    own_process,
    parse,
    runs_with_force_new_cluster,
)

E = "/usr/local/bin/etcd"


@pytest.mark.parametrize(("argv", "env", "forced"), [
    ([E, "--name=a"], {}, False),
    ([E, "--force-new-cluster"], {}, True),
    ([E, "-force-new-cluster"], {}, True),
    ([E, "--force-new-cluster=true"], {}, True),
    ([E, "--force-new-cluster=1"], {}, True),
    ([E, "--force-new-cluster=false"], {}, False),       # a substring search says True
    ([E, "--force-new-cluster=False"], {}, False),
    ([E, "--force-new-cluster=maybe"], {}, None),        # etcd would refuse it
    ([E, "--force-new-cluster", "true"], {}, None),      # 'true' is not a valid flag
    ([E], {"ETCD_FORCE_NEW_CLUSTER": "true"}, True),
    ([E], {"ETCD_FORCE_NEW_CLUSTER": "false"}, False),  # a grep for the name says True
    ([E, "--force-new-cluster=false"], {"ETCD_FORCE_NEW_CLUSTER": "true"}, False),
    ([E, "--name", "--force-new-cluster"], {}, False),   # the name's value, not a flag
    ([E, "--initial-cluster-token", "x-force-new-cluster"], {}, False),
    ([E, "--", "--force-new-cluster"], {}, None),        # after --: an argument, refused
    ([E, "--config-file=/etc/etcd.yaml"], {}, None),     # the file decides
    ([E], {"ETCD_CONFIG_FILE": "/etc/etcd.yaml"}, None),
    ([E, "---x"], {}, None),                             # bad flag syntax
    ([E, "--data-dir"], {}, None),                       # needs an argument
])
def test_force_new_cluster_as_etcd_reads_it(argv: list[str], env: dict[str, str],
                                            forced: bool | None) -> None:
    assert runs_with_force_new_cluster(argv, env) is forced


def test_proc_files_and_env_files() -> None:
    cmdline = b"etcd\0--name\0a\0--data-dir=/var/lib/etcd/\0--force-new-cluster\0"
    argv = argv_from_cmdline(cmdline)
    assert argv == ["etcd", "--name", "a", "--data-dir=/var/lib/etcd/", "--force-new-cluster"]
    env = env_from_environ(b"PATH=/bin\0ETCD_NAME=b\0ETCD_INITIAL_CLUSTER=a=x,b=y\0")
    assert env["ETCD_INITIAL_CLUSTER"] == "a=x,b=y"
    got = parse(argv, env)
    assert got.flags["name"] == "a" and got.flags["initial-cluster"] == "a=x,b=y"
    assert got.from_env == {"initial-cluster"}           # the command line's name wins
    assert data_dir(argv) == "/var/lib/etcd"
    text = '# kubespray\nETCD_DATA_DIR="/var/lib/etcd"\n\nETCD_FORCE_NEW_CLUSTER=true\n'
    assert runs_with_force_new_cluster(["etcd"], env_file(text)) is True
    assert data_dir(["etcd"], env_file(text)) == "/var/lib/etcd"


def test_the_members_own_process_among_two_etcds() -> None:
    """kops: etcd-main and etcd-events on one host; pgrep -x etcd finds both."""
    procs = {
        101: ([E, "--name=events", "--data-dir=/rootfs/mnt/etcd-events/data"], {}),
        202: ([E, "--name=main"], {"ETCD_DATA_DIR": "/rootfs/mnt/etcd-main/data/"}),
    }
    assert own_process(procs, "/rootfs/mnt/etcd-main/data") == 202
    assert own_process(procs, "/rootfs/mnt/etcd-events/data") == 101
    assert own_process(procs, "/var/lib/etcd") is None
    assert own_process({7: ([E, "--name=a"], {})}, "/var/lib/etcd") == 7  # lone, unnamed dir
    assert own_process({7: ([E, "--data-dir=/other"], {})}, "/var/lib/etcd") is None
    assert own_process({}, "/var/lib/etcd") is None


@given(st.lists(st.text(max_size=12), max_size=12),
       st.dictionaries(st.text(max_size=12), st.text(max_size=12), max_size=4))
def test_any_argv_gives_an_answer(argv: list[str], env: dict[str, str]) -> None:
    assert runs_with_force_new_cluster(["etcd", *argv], env) in (True, False, None)
    d = data_dir(["etcd", *argv], env)
    assert d is None or isinstance(d, str)


@pytest.mark.parametrize(("flags", "want"), [
    ({}, False), ({"force-new-cluster": "true"}, True), ({"force-new-cluster": ""}, True),
    ({"force-new-cluster": "false"}, False), ({"force-new-cluster": "0"}, False),
    ({"force-new-cluster": "yes"}, None)])
def test_force_new_cluster_in_a_configuration(flags: dict[str, str], want: bool | None) -> None:
    """verify's "no --force-new-cluster left": a false value is not left behind."""
    assert etcdflags.force_new_cluster_set(flags) is want
