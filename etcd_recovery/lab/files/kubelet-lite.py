#!/usr/bin/python3
"""kubelet-lite: a small, honest stand-in for the kubelet's static-pod handling (lab only).

For each ``*.yaml`` pod manifest in the manifest directory it runs exactly the command the
manifest's first container says (``command`` + ``args``), as the kubelet would run the
container's entrypoint:

* the manifest appears          -> the pod's command is started;
* the manifest's content changes -> the old process is stopped (SIGTERM, then SIGKILL after the
  pod's terminationGracePeriodSeconds, default 30 s, capped at 10 s here) and the new one started;
* the manifest is moved away     -> the process is stopped and not started again;
* the process exits              -> it is restarted with a doubling back-off (0.5 s .. 10 s),
  like a crash loop.

The container image tag selects the etcd binaries: ``image: <anything>/etcd:3.5.16-0`` puts
``/opt/etcd-3.5.16`` first on PATH, standing in for the image's file system.

Lab fault injection: a file ``/run/kubelet-lite/hold/<pod>`` holding the sha256 of the current
manifest keeps that pod down (a crash loop that never recovers) until the file is removed or
the manifest changes or goes away, as a changed or re-created pod would get a fresh start from
the kubelet. A pod found running while its hold is in place is killed (SIGKILL) and kept down;
a hold that does not read as a digest (being written by hand, say) keeps the pod down and is
left alone: only a well-formed digest of another manifest releases it. The lab writes a hold
under another name and renames it into place.

State for observers is written to ``/run/kubelet-lite/status/<pod>.json``.
"""

from __future__ import annotations

import contextlib
import datetime
import glob
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from typing import Any

import yaml

Spec = dict[str, Any]

MANIFESTS = os.environ.get("KUBELET_LITE_MANIFESTS", "/etc/kubernetes/manifests")
RUN = "/run/kubelet-lite"
LOGS = "/var/log/pods"
POLL = 0.2


class Pod:
    def __init__(self, name: str) -> None:
        self.name = name
        self.proc: subprocess.Popen[bytes] | None = None
        self.digest = ""
        self.spec: Spec | None = None
        self.restarts = 0
        self.backoff = 0.5
        self.next_start = 0.0
        self.last_exit: int | None = None
        self.state = "new"

    def status(self) -> None:
        os.makedirs(f"{RUN}/status", exist_ok=True)
        data = {"pod": self.name, "state": self.state, "digest": self.digest,
                "pid": self.proc.pid if self.proc and self.proc.poll() is None else None,
                "restarts": self.restarts, "last_exit": self.last_exit,
                "time": time.time()}
        tmp = f"{RUN}/status/.{self.name}.json"
        with open(tmp, "w") as fh:
            json.dump(data, fh)
        os.replace(tmp, f"{RUN}/status/{self.name}.json")

    def held(self) -> bool:
        try:
            with open(f"{RUN}/hold/{self.name}") as fh:
                held_digest = fh.read().strip()
        except FileNotFoundError:
            return False
        if re.fullmatch(r"[0-9a-f]{64}", held_digest) and held_digest != self.digest:
            # The spec changed since the fault was injected: a fresh start, as a new spec gets.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{RUN}/hold/{self.name}")
            log(f"{self.name}: hold for another manifest removed")
            return False
        return True

    def crash(self) -> None:
        """The pod's process dies at once (SIGKILL), as a crash would."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()
        self.last_exit = self.proc.returncode
        self.proc = None
        self.restarts += 1
        log(f"{self.name}: held while running: killed")

    def stop(self, grace: float) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.last_exit = self.proc.returncode
        self.proc = None

    def start(self) -> None:
        assert self.spec is not None
        container = self.spec["spec"]["containers"][0]
        argv = [str(a) for a in (container.get("command") or []) + (container.get("args") or [])]
        env = dict(os.environ)
        path = env.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        m = re.search(r":v?(\d+\.\d+\.\d+)", str(container.get("image", "")))
        if m and os.path.isdir(f"/opt/etcd-{m.group(1)}"):
            path = f"/opt/etcd-{m.group(1)}:{path}"
        env["PATH"] = path
        for item in container.get("env") or []:
            env[str(item["name"])] = str(item.get("value", ""))
        os.makedirs(LOGS, exist_ok=True)
        out = open(f"{LOGS}/{self.name}.log", "ab")
        out.write(f"--- kubelet-lite: {stamp()} starting {self.name}: {argv}\n".encode())
        out.flush()
        try:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True)
            self.state = "running"
            log(f"{self.name}: started, pid {self.proc.pid}")
        except OSError as exc:
            out.write(f"--- kubelet-lite: {stamp()} cannot start: {exc}\n".encode())
            self.state = "crashloop"
            self.proc = None
            self.schedule_restart()
        finally:
            out.close()

    def schedule_restart(self) -> None:
        self.next_start = time.monotonic() + self.backoff
        self.backoff = min(self.backoff * 2, 10.0)


def stamp() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="microseconds")


def log(message: str) -> None:
    """A line on stderr (the journal of kubelet-lite.service)."""
    print(f"kubelet-lite: {message}", file=sys.stderr, flush=True)


def grace_of(spec: Spec | None) -> float:
    try:
        return min(float(spec["spec"].get("terminationGracePeriodSeconds", 30)), 10.0)  # type: ignore[index]
    except (KeyError, TypeError, ValueError, AttributeError):
        return 10.0


def load(path: str) -> tuple[str, Spec | None]:
    with open(path, "rb") as fh:
        raw = fh.read()
    digest = hashlib.sha256(raw).hexdigest()
    try:
        spec = yaml.safe_load(raw)
        spec["spec"]["containers"][0]  # noqa: B018 - validate shape
        return digest, spec
    except Exception as exc:  # a bad manifest is ignored, as the kubelet does, and logged
        print(f"kubelet-lite: {path}: invalid manifest: {exc}", file=sys.stderr, flush=True)
        return digest, None


def main() -> None:
    pods: dict[str, Pod] = {}
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(SystemExit(0)))
    try:
        while True:
            seen: set[str] = set()
            for path in sorted(glob.glob(os.path.join(MANIFESTS, "*.yaml"))):
                name = os.path.basename(path)[: -len(".yaml")]
                try:
                    digest, spec = load(path)
                except OSError:
                    continue
                seen.add(name)
                pod = pods.setdefault(name, Pod(name))
                if digest != pod.digest:
                    pod.stop(grace_of(pod.spec))
                    pod.digest, pod.spec = digest, spec
                    pod.backoff, pod.next_start = 0.5, 0.0
                    pod.state = "pending" if spec else "invalid"
                if pod.spec is None:
                    pod.status()
                    continue
                if pod.proc is not None and pod.proc.poll() is not None:
                    pod.last_exit = pod.proc.returncode
                    pod.proc = None
                    pod.restarts += 1
                    pod.state = "crashloop"
                    pod.schedule_restart()
                    log(f"{name}: exited {pod.last_exit}")
                if pod.proc is not None and pod.held():
                    pod.crash()
                    pod.schedule_restart()
                if pod.proc is None:
                    if pod.held():
                        pod.state = "held"
                    elif time.monotonic() >= pod.next_start:
                        pod.start()
                pod.status()
            for name in list(pods):
                if name not in seen:
                    pod = pods.pop(name)
                    pod.stop(grace_of(pod.spec))
                    pod.state = "removed"
                    pod.status()
                    # A pod that is deleted and created again starts afresh, as with the
                    # kubelet: its injected crash loop goes with it.
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(f"{RUN}/hold/{name}")
            time.sleep(POLL)
    finally:
        for pod in pods.values():
            pod.stop(grace_of(pod.spec))


if __name__ == "__main__":
    main()
