"""Servers the integration tests start themselves: memcached and a small Redis cluster (Debian's
own binaries), and an app served under ``python -m ddagent``.

Each runs on free 127.0.0.1 ports in the foreground, as a child of the test process, and is
stopped by its pid.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from typing import Iterator

from tests.testagent import REPO, free_port

READY_DEADLINE = 10.0


@contextlib.contextmanager
def under_launcher(server: list[str], env: dict[str, str], ready_path: str,
                   exit_codes: tuple[int, ...] = (0,)) -> Iterator[str]:
    """``python -m ddagent -m <server...>`` on a free port (the server's arguments take
    ``{port}``); yields its URL once ``ready_path`` answers, and checks after SIGTERM that it
    exited with one of ``exit_codes``."""
    port = free_port()
    args = [arg.format(port=port) for arg in server]
    proc = subprocess.Popen([sys.executable, "-m", "ddagent", "-m", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(url + ready_path, timeout=2).read()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise AssertionError(
                    f"{args[0]} did not start: {proc.communicate()[0].decode()}") from None
            time.sleep(0.2)
    yield url
    os.kill(proc.pid, signal.SIGTERM)
    output = proc.communicate(timeout=30)[0].decode()
    assert proc.returncode in exit_codes, output


@contextlib.contextmanager
def memcached() -> Iterator[str]:
    """A memcached server (TCP only, 16 MB); yields its ``host:port``."""
    binary = _binary("memcached")
    port = free_port()
    user = ["-u", "root"] if os.geteuid() == 0 else []  # memcached refuses to run as root alone
    proc = subprocess.Popen([binary, *user, "-l", "127.0.0.1", "-p", str(port), "-U", "0",
                             "-m", "16"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_accepting(proc, port)
        yield f"127.0.0.1:{port}"
    finally:
        _stop(proc)


@contextlib.contextmanager
def redis_cluster(nodes: int = 3) -> Iterator[list[int]]:
    """A Redis cluster of ``nodes`` primaries (no replicas); yields their ports."""
    binary = _binary("redis-server")
    cli = _binary("redis-cli")
    ports = _cluster_ports(nodes)
    procs = []
    with tempfile.TemporaryDirectory(prefix="ddagent-redis-cluster-") as workdir:
        try:
            for port in ports:
                procs.append(subprocess.Popen(
                    [binary, "--bind", "127.0.0.1", "--port", str(port), "--cluster-enabled", "yes",
                     "--cluster-config-file", f"{workdir}/nodes-{port}.conf", "--dir", workdir,
                     "--save", "", "--appendonly", "no"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
            for proc, port in zip(procs, ports):
                _wait_accepting(proc, port)
            subprocess.run([cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports),
                            "--cluster-replicas", "0", "--cluster-yes"],
                           check=True, capture_output=True, timeout=60)
            _wait_cluster_ok(cli, ports)
            yield ports
        finally:
            for proc in procs:
                _stop(proc)


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} is not installed; see tests/apt-packages.txt")
    return path


def _cluster_ports(count: int) -> list[int]:
    """Free ports whose cluster-bus port (port + 10000) is free too."""
    ports: set[int] = set()
    while len(ports) < count:
        port = free_port()
        if port + 10000 <= 65535 and _free(port + 10000):
            ports.add(port)
    return sorted(ports)


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _wait_accepting(proc: subprocess.Popen, port: int) -> None:
    deadline = time.monotonic() + READY_DEADLINE
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited: {proc.stderr.read().decode()[-500:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{proc.args[0]} is not accepting on port {port}") from None
            time.sleep(0.02)


def _wait_cluster_ok(cli: str, ports: list[int]) -> None:
    deadline = time.monotonic() + READY_DEADLINE
    for port in ports:
        while b"cluster_state:ok" not in subprocess.run(
                [cli, "-p", str(port), "cluster", "info"], capture_output=True).stdout:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Redis cluster node on port {port} is not ready")
            time.sleep(0.05)


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stderr is not None:
        proc.stderr.close()
