"""The MLflow UI the project starts (`make mlflow-ui`, clipmerge.tracking.store's server helpers) binds to
127.0.0.1 only: the command lines, and a started server's listening sockets read from /proc/net/tcp{,6}."""

from __future__ import annotations

import ipaddress
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from clipmerge.tracking.store import mlflow_server_argv

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
LOOPBACK = {ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")}
READY_TIMEOUT_S = 180  # ~15 s on an idle 2-core machine, several times that when it is shared


def make_argv(cwd: Path, *overrides: str) -> list[str]:
    """The Makefile's real `mlflow-ui` invocation, run from ``cwd`` (so results/ is under it)."""
    # -o: treat the venv stamp as up to date, so `setup` never reinstalls; BIN: this test's venv.
    return ["make", "-f", str(REPO / "Makefile"), "-o", ".venv/.installed", f"BIN={BIN}", *overrides, "mlflow-ui"]


def make_ui_command(cwd: Path, port: int) -> list[str]:
    # --no-print-directory: under `make test` this make is nested and would print "make[1]: Entering ..."
    out = subprocess.run([*make_argv(cwd, f"MLFLOW_PORT={port}"), "-n", "--no-print-directory"], cwd=cwd,
                         capture_output=True, text=True, check=True).stdout
    return shlex.split(out.replace("\\\n", " "))


def hosts(argv: list[str]) -> list[str]:
    found = []
    for i, arg in enumerate(argv):
        if arg in ("--host", "-h"):
            found.append(argv[i + 1])
        elif arg.startswith("--host="):
            found.append(arg.split("=", 1)[1])
    return found


def test_make_mlflow_ui_binds_127_0_0_1(tmp_path):
    argv = make_ui_command(tmp_path, 5123)
    assert Path(argv[0]).name == "mlflow" and argv[1] == "server"
    assert hosts(argv) == ["127.0.0.1"]
    assert argv[argv.index("--port") + 1] == "5123"


def test_server_helper_binds_127_0_0_1(tmp_path):
    argv = mlflow_server_argv(tmp_path / "mlflow.db", 5123)
    assert argv[:2] == ["mlflow", "server"] and hosts(argv) == ["127.0.0.1"]


def listeners(port: int) -> list[ipaddress._BaseAddress]:
    """Addresses with a TCP socket in LISTEN state on ``port`` (any process), from /proc/net/tcp and tcp6."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as fh:
            next(fh)
            for line in fh:
                local, state = line.split()[1], line.split()[3]
                address, hex_port = local.split(":")
                if state != "0A" or int(hex_port, 16) != port:
                    continue
                raw = bytes.fromhex(address)  # 32-bit words in host (little-endian) order
                raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
                ip = ipaddress.ip_address(raw)
                found.append(ip.ipv4_mapped or ip if ip.version == 6 else ip)
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # an mlflow server start-up: 15-60 s on 2 shared cores
def test_started_mlflow_ui_listens_on_loopback_only(tmp_path):
    port = free_port()
    (tmp_path / "results" / "demo").mkdir(parents=True)
    log = tmp_path / "server.log"
    with log.open("w") as out:  # its own session: stop make, mlflow, uvicorn and the job runner together
        proc = subprocess.Popen(make_argv(tmp_path, f"MLFLOW_PORT={port}"), cwd=tmp_path, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not (bound := listeners(port)):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server not listening on {port} (exit {proc.poll()}):\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        time.sleep(2)  # let every worker bind, then look again
        bound = listeners(port)
        assert bound and set(bound) <= LOOPBACK, f"listening on {bound}"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_listener_parser_sees_wildcard_and_loopback_sockets():
    """Guards the test above: a socket bound to 0.0.0.0 is reported as such, one on 127.0.0.1 as loopback."""
    with socket.socket() as wildcard, socket.socket() as loopback:
        wildcard.bind(("0.0.0.0", 0))
        wildcard.listen()
        loopback.bind(("127.0.0.1", 0))
        loopback.listen()
        assert listeners(wildcard.getsockname()[1]) == [ipaddress.ip_address("0.0.0.0")]
        assert listeners(loopback.getsockname()[1]) == [ipaddress.ip_address("127.0.0.1")]
