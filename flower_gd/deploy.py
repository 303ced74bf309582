"""Run the app on Flower's deployment engine: a real SuperLink and N SuperNodes on loopback.

`python -m flower_gd.deploy` (or `make deploy-demo`) starts `flower-superlink` and
`flower-supernode` processes (partition ids through `--node-config`), submits the app with
`flwr run`, can kill one SuperNode mid-run, collects the run directory, and stops every
process it started, by PID, whatever happens. With `--tls` every connection uses TLS with a
self-signed CA made for the run; with `--auth` the SuperLink admits only SuperNodes whose
public keys were registered (`flwr supernode register`), Flower's own SuperNode
authentication, and `--intruder` starts one more SuperNode with an unregistered key to show
that it is refused.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from flower_gd.config import PROJECT_ROOT
from flower_gd.provenance import CODE_VERSION_ENV, code_version
from flower_gd.results import CHECKPOINT, SUMMARY
from flower_gd.wire_proxy import WireProxy

FEDERATION = "deploy"


# ------------------------------------------------------------------------ credentials
def make_tls(folder: Path) -> dict[str, Path]:
    """A self-signed CA and a server certificate for 127.0.0.1 / localhost, signed by it."""
    folder.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "flower-gd test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(minutes=5))
          .not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP384R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = {"ca": folder / "ca.pem", "cert": folder / "server.pem", "key": folder / "server.key"}
    paths["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths["key"].write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    return paths


def make_node_key(folder: Path, name: str) -> tuple[Path, Path]:
    """An EC key pair in OpenSSH format, as `flower-supernode --auth-supernode-private-key`
    and `flwr supernode register` expect."""
    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP384R1())
    private, public = folder / name, folder / f"{name}.pub"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.OpenSSH,
                                          serialization.NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                     serialization.PublicFormat.OpenSSH))
    private.chmod(0o600)
    return private, public


# ------------------------------------------------------------------------ processes
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        kids.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    return kids


def _detached_of(pid: int) -> list[int]:
    """Flower starts its SuperExec detached, naming its parent with `--parent-pid`."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if b"--parent-pid" in args:
            i = args.index(b"--parent-pid")
            if i + 1 < len(args) and args[i + 1] == str(pid).encode():
                found.append(int(cmdline.parent.name))
    return found


def process_tree(pid: int) -> list[int]:
    """`pid`, its descendants and the detached helpers it started, parents first."""
    kids = _children()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        if p in out:
            continue
        out.append(p)
        todo.extend(kids.get(p, []) + _detached_of(p))
    return out


def kill_tree(pid: int, sig: int = signal.SIGKILL) -> None:
    for p in reversed(process_tree(pid)):
        try:
            os.kill(p, sig)
        except ProcessLookupError:
            pass


@dataclass
class Deployment:
    """One SuperLink and its SuperNodes on loopback, started and stopped by PID.

    Use as a context manager: leaving it stops every process it started, even on error.
    """

    workdir: Path
    nodes: int = 3
    tls: bool = False
    auth: bool = False
    port: int = field(default_factory=free_port)
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    fleet_port: int | None = None  # where SuperNodes dial (a WireProxy's port), else `port`

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.home = self.workdir / "flwr-home"
        self.home.mkdir(exist_ok=True)
        self.logs = self.workdir / "logs"
        self.logs.mkdir(exist_ok=True)
        self.certs = make_tls(self.workdir / "certs") if self.tls else None
        self.env = {**os.environ, "FLWR_HOME": str(self.home),
                    "FLWR_TELEMETRY_ENABLED": "0",
                    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
                    # the app runs from its bundle, not this checkout: tell it which code
                    CODE_VERSION_ENV: json.dumps({k: v for k, v in code_version().items()
                                                  if k in ("commit", "dirty")}),
                    "PATH": f"{Path(sys.executable).parent}{os.pathsep}"
                            f"{os.environ.get('PATH', '')}",
                    "PYTHONPATH": os.pathsep.join(
                        [str(PROJECT_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
        self._write_cli_config()

    # --- lifecycle ------------------------------------------------------------------------
    def __enter__(self) -> Deployment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        log = (self.logs / f"{name}.log").open("wb")
        proc = subprocess.Popen(args, cwd=self.workdir, env=self.env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        self.procs[name] = proc
        return proc

    def log_of(self, name: str) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace") if path.is_file() else ""

    def _tls_args(self, server: bool) -> list[str]:
        if self.certs is None:
            return ["--insecure"]
        if server:
            return ["--ssl-ca-certfile", str(self.certs["ca"]), "--ssl-certfile",
                    str(self.certs["cert"]), "--ssl-keyfile", str(self.certs["key"])]
        return ["--root-certificates", str(self.certs["ca"])]

    def _write_cli_config(self) -> None:
        lines = ["[superlink]", f'default = "{FEDERATION}"', "", f"[superlink.{FEDERATION}]",
                 f'address = "127.0.0.1:{self.port}"']
        if self.certs is None:
            lines.append("insecure = true")
        else:
            lines.append(f'root-certificates = "{self.certs["ca"]}"')
        (self.home / "config.toml").write_text("\n".join(lines) + "\n")

    def start_superlink(self, timeout: float = 120) -> None:
        args = ["flower-superlink", *self._tls_args(server=True), "--port", str(self.port),
                "--disable-runtime-dependency-installation"]
        if self.auth:
            args.append("--enable-supernode-auth")
        self._spawn("superlink", args)
        self._wait_for(lambda: "Application startup complete" in self.log_of("superlink"),
                       timeout, "the SuperLink did not start", "superlink")

    def register(self, public_key: Path) -> None:
        """Flower's SuperNode authentication: admit the holder of this key."""
        out = subprocess.run(["flwr", "supernode", "register", str(public_key), FEDERATION],
                             cwd=self.workdir, env=self.env, capture_output=True, text=True,
                             timeout=120)
        if out.returncode != 0:
            raise RuntimeError(f"flwr supernode register failed: {out.stdout}{out.stderr}")

    def start_supernode(self, partition: int, key: Path | None = None,
                        name: str | None = None, max_retries: int | None = None) -> str:
        """A SuperNode for `partition` that keeps its node state under its own folder."""
        name = name or f"supernode-{partition}"
        state = self.workdir / "state" / name
        args = ["flower-supernode", *self._tls_args(server=False),
                "--superlink", f"127.0.0.1:{self.fleet_port or self.port}",
                "--port", str(free_port()),
                "--node-config", f'partition-id={partition} num-partitions={self.nodes} '
                                 f'state-dir="{state}"']
        if key is not None:
            args += ["--auth-supernode-private-key", str(key)]
        if max_retries is not None:
            args += ["--max-retries", str(max_retries), "--max-wait-time", "20"]
        self._spawn(name, args)
        return name

    def start_fleet(self) -> None:
        """Every SuperNode, with a registered key when authentication is on."""
        for p in range(self.nodes):
            key = None
            if self.auth:
                key, public = make_node_key(self.workdir / "keys", f"node-{p}")
                self.register(public)
            self.start_supernode(p, key)

    def run(self, run_config: str, on_round: Callable[[int], None] | None = None,
            timeout: float = 1800) -> subprocess.CompletedProcess[str]:
        """`flwr run . deploy --stream`; `on_round(r)` is called as checkpoints appear."""
        proc = self._spawn("flwr-run", ["flwr", "run", str(PROJECT_ROOT), FEDERATION,
                                        "--stream", "--run-config", run_config])
        seen, deadline = -1, time.time() + timeout
        while proc.poll() is None:
            if time.time() > deadline:
                kill_tree(proc.pid)
                raise TimeoutError(f"flwr run did not end within {timeout:.0f}s")
            if on_round is not None:
                for point in self.workdir.glob(f"out/*/{CHECKPOINT}"):
                    try:
                        rnd = json.loads(point.read_text())["round"]
                    except (OSError, ValueError, KeyError):
                        continue
                    if rnd > seen:
                        seen = rnd
                        on_round(rnd)
            time.sleep(0.5)
        return subprocess.CompletedProcess(proc.args, proc.returncode, self.log_of("flwr-run"))

    def kill(self, name: str) -> None:
        """SIGKILL one process and everything it started (a crashed SuperNode)."""
        kill_tree(self.procs[name].pid, signal.SIGKILL)
        self.procs[name].wait(timeout=30)

    def stop(self) -> None:
        """Stop every process this deployment started, by PID: SIGTERM, then SIGKILL."""
        trees = {name: process_tree(p.pid) for name, p in self.procs.items()}
        for pids in trees.values():
            for pid in reversed(pids):
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.time() + 15
        while time.time() < deadline and any(_alive(p) for pids in trees.values() for p in pids):
            time.sleep(0.3)
        for pids in trees.values():
            for pid in pids:
                if _alive(pid):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass

    def pids(self) -> list[int]:
        return [pid for p in self.procs.values() for pid in process_tree(p.pid)]

    def _wait_for(self, ready: Callable[[], bool], timeout: float, what: str, name: str
                  ) -> None:
        deadline = time.time() + timeout
        while not ready():
            if self.procs[name].poll() is not None or time.time() > deadline:
                raise RuntimeError(f"{what}; its log:\n{self.log_of(name)[-3000:]}")
            time.sleep(0.3)


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited


# ------------------------------------------------------------------------ the command
def deploy(workdir: Path, nodes: int = 3, rounds: int = 2, tls: bool = False,
           auth: bool = False, intruder: bool = False, kill_node: int | None = None,
           kill_after_round: int = 1, extra: str = "", wire_idle_s: float = 0.0) -> dict:
    """Start, run, (kill one SuperNode,) collect, stop. Returns what happened.

    With `wire_idle_s` > 0 the SuperNodes dial the SuperLink through a byte-counting
    `WireProxy` (insecure only): once the fleet is up it counts `wire_idle_s` seconds of
    idle traffic (heartbeats and empty polls), then the run; both land in report["wire"].
    """
    workdir = Path(workdir).resolve()
    out = workdir / "out"
    run_config = (f'num-nodes={nodes} num-server-rounds={rounds} output-dir="{out}" '
                  f"{extra}").strip()
    report: dict = {"workdir": str(workdir), "tls": tls, "auth": auth}
    if wire_idle_s and tls:
        raise ValueError("the wire proxy parses clear-text HTTP/2: run it without --tls")
    with contextlib.ExitStack() as stack:
        dep = stack.enter_context(Deployment(workdir, nodes, tls=tls, auth=auth))
        proxy = None
        if wire_idle_s:
            dep.fleet_port = free_port()
            proxy = stack.enter_context(WireProxy(dep.fleet_port, dep.port))
        dep.start_superlink()
        dep.start_fleet()
        if proxy is not None:
            time.sleep(wire_idle_s)  # the SuperNodes connect and settle
            proxy.reset()
            time.sleep(wire_idle_s)
            report["wire"] = {"idle": proxy.snapshot(), "idle-s": wire_idle_s}
            proxy.reset()
            started = time.time()
        if intruder:  # an unregistered key: the SuperLink must refuse it
            key, _ = make_node_key(workdir / "keys", "intruder")
            name = dep.start_supernode(nodes, key, name="intruder", max_retries=2)
            report["intruder-exit"] = dep.procs[name].wait(timeout=120)
            report["intruder-log"] = dep.log_of(name)[-2000:]
        killed: list[int] = []

        def on_round(rnd: int) -> None:
            if kill_node is not None and rnd >= kill_after_round and not killed:
                dep.kill(f"supernode-{kill_node}")
                killed.append(rnd)
                print(f"deploy: killed SuperNode {kill_node} after round {rnd}", flush=True)

        done = dep.run(run_config, on_round)
        if proxy is not None:
            report["wire"].update({"run": proxy.snapshot(), "run-s": time.time() - started})
        report["flwr-run-exit"] = done.returncode
        report["killed-after-round"] = killed[0] if killed else None
        report["pids"] = dep.pids()
    report["left-running"] = [p for p in report["pids"] if _alive(p)]
    summaries = sorted(out.glob(f"*/{SUMMARY}"))
    report["run-dir"] = str(summaries[0].parent) if summaries else None
    if report["flwr-run-exit"] != 0 or not summaries:
        raise RuntimeError(f"the deployed run failed (flwr run exit {report['flwr-run-exit']}); "
                           f"logs in {workdir / 'logs'}")
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m flower_gd.deploy", description=__doc__)
    parser.add_argument("--out", default="results/deploy", help="work and results folder")
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--tls", action="store_true", help="TLS with a self-signed CA")
    parser.add_argument("--auth", action="store_true", help="SuperNode authentication")
    parser.add_argument("--intruder", action="store_true",
                        help="also start a SuperNode with an unregistered key (needs --auth)")
    parser.add_argument("--kill-node", type=int, default=None,
                        help="SIGKILL this partition's SuperNode mid-run")
    parser.add_argument("--kill-after-round", type=int, default=1)
    parser.add_argument("--run-config", default="round-timeout=120.0 pull-timeout=30.0",
                        help="more run-config overrides, as for flwr run")
    args = parser.parse_args(argv)
    if args.intruder and not args.auth:
        parser.error("--intruder needs --auth (without authentication any SuperNode joins)")
    if args.kill_node is not None and not 0 <= args.kill_node < args.nodes:
        parser.error(f"--kill-node must be a partition in 0..{args.nodes - 1}")
    report = deploy(Path(args.out), args.nodes, args.rounds, args.tls, args.auth, args.intruder,
                    args.kill_node, args.kill_after_round, args.run_config)
    print(json.dumps({k: v for k, v in report.items() if k != "intruder-log"}, indent=2))
    summary = json.loads((Path(report["run-dir"]) / SUMMARY).read_text())
    print(f"results: {report['run-dir']}: final median accuracy "
          f"{summary['final']['median']:.4f}, alive per round "
          f"{summary['faults']['alive-per-round']}")


if __name__ == "__main__":
    main()
