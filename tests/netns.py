"""Test harness: a real multi-node Ray cluster on one machine, made of network namespaces.

`private_hosts(n)` creates `n` (1 or 2) network namespaces with their own addresses — two are joined by a
veth pair — and removes them afterwards, killing every process left inside them (the harness started all
of them). `ray_cluster(hosts, workdir)` starts a Ray head in the first namespace and a worker node in each
other one, with token authentication on and a private token file, and yields a `RayCluster` whose `run`
executes a command (a driver, `ray job submit`, an MLflow server...) inside a chosen namespace.

Traffic stays between those namespaces and their own loopback interfaces: nothing is routed to the
machine's network. Addresses come from 198.18.0.0/15, the range reserved for test networks (RFC 2544).
Like a real machine, each namespace resolves the host name to its own address (a hosts file of its own,
which `ip netns exec` mounts over /etc/hosts): Gloo, and so DeepSpeed on CPUs, finds its address that way.

Where namespaces cannot be made (not root, no `ip`), `namespaces_unavailable()` says why and callers fall
back to `loopback_hosts(n)`: the same `ray start` nodes on 127.0.0.2, 127.0.0.3 (`RayCluster.isolated` is
False there, and callers say so).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

SUBNET_PREFIX = "198.18.0"
RAY_BIN = Path(sys.executable).with_name("ray")
HEAD_PORT = 6379
DASHBOARD_PORT = 8265
NETNS_ETC = Path("/etc/netns")  # `ip netns exec NAME` mounts the files of NETNS_ETC/NAME over /etc


Arg = str | os.PathLike[str] | int  # an argument of a command (made a string when run)


@dataclass(frozen=True)
class Host:
    """One simulated machine: a network namespace (None: the machine itself) and its address."""

    netns: str | None
    ip: str

    def wrap(self, argv: Sequence[Arg]) -> list[str]:
        """`argv` run inside this host's namespace."""
        prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
        return [*prefix, *map(str, argv)]


def namespaces_unavailable() -> str | None:
    """Why network namespaces cannot be made here, or None where they can."""
    if os.geteuid() != 0:
        return "not root"
    if shutil.which("ip") is None:
        return "no `ip` command"
    probe = f"r3dprobe{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"`ip netns add` failed: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], check=True)
    return None


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def _pids_in(namespaces: Sequence[str]) -> list[int]:
    """Processes whose network namespace is one of `namespaces`."""
    found = []
    for netns in namespaces:
        out = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True).stdout
        found += [int(p) for p in out.split()]
    return found


def _pids_using(path: Path) -> list[int]:
    """Live processes whose command line names `path` (every Ray process names its --temp-dir or session)."""
    import psutil

    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        if proc.info["status"] != psutil.STATUS_ZOMBIE and str(path) in " ".join(proc.info["cmdline"] or ()):
            found.append(proc.info["pid"])
    return found


def _terminate(find: Callable[[], list[int]], grace_s: float = 2.0) -> None:
    """End the processes `find` returns: SIGTERM, then SIGKILL after `grace_s` (raylets linger on TERM)."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        for pid in find():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait_s
        while find() and time.monotonic() < deadline:
            time.sleep(0.1)
        if not find():
            return
    raise RuntimeError(f"processes survive SIGKILL: {find()}")


@contextmanager
def private_hosts(n: int = 2) -> Iterator[list[Host]]:
    """`n` (1 or 2) network namespaces with addresses 198.18.0.1, .2 (two joined by a veth pair); removed on exit."""
    if n not in (1, 2):
        raise ValueError(f"private_hosts(n={n}): expected 1 or 2")
    tag = f"r3d{os.getpid()}"
    names = [f"{tag}n{i}" for i in range(n)]
    ips = [f"{SUBNET_PREFIX}.{i + 1}" for i in range(n)]
    made: list[str] = []
    try:
        for name, ip in zip(names, ips, strict=True):
            _ip("netns", "add", name)
            made.append(name)
            _ip("-n", name, "link", "set", "lo", "up")
            etc = NETNS_ETC / name
            etc.mkdir(parents=True, exist_ok=True)
            (etc / "hosts").write_text(f"127.0.0.1 localhost\n{ip} {socket.gethostname()}\n")
        if n == 1:
            _ip("-n", names[0], "addr", "add", f"{ips[0]}/32", "dev", "lo")
        else:
            ends = [f"{tag}v{i}" for i in range(n)]
            # Created inside the first namespace so that nothing of it ever exists in the machine's own.
            _ip("-n", names[0], "link", "add", ends[0], "type", "veth", "peer", "name", ends[1], "netns", names[1])
            for name, ip, end in zip(names, ips, ends, strict=True):
                _ip("-n", name, "addr", "add", f"{ip}/30", "dev", end)
                _ip("-n", name, "link", "set", end, "up")
        hosts = [Host(name, ip) for name, ip in zip(names, ips, strict=True)]
        yield hosts
    finally:
        try:
            _terminate(lambda: _pids_in(made))
        finally:
            for netns in made:
                # Deleting a namespace also deletes the veth end inside it (and so its peer).
                subprocess.run(["ip", "netns", "del", netns], capture_output=True)
                shutil.rmtree(NETNS_ETC / netns, ignore_errors=True)


def loopback_hosts(n: int = 2) -> list[Host]:
    """The fallback where namespaces cannot be made: `n` nodes on loopback addresses 127.0.0.2, .3, ...

    Not 127.0.0.1: Ray swaps that for the machine's own address.
    """
    return [Host(None, f"127.0.0.{i + 2}") for i in range(n)]


_POLL_URL = """
import sys, time, urllib.error, urllib.request
url, deadline = sys.argv[1], time.monotonic() + float(sys.argv[2])
while True:
    try:
        urllib.request.urlopen(url, timeout=2)
        break
    except urllib.error.HTTPError:
        break
    except OSError:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.5)
"""


@dataclass
class RayCluster:
    """A started Ray cluster: where its nodes are and how to run commands against it."""

    hosts: list[Host]
    env: dict[str, str]
    workdir: Path
    temp_dir: Path
    port: int
    dashboard_port: int
    servers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def head(self) -> Host:
        return self.hosts[0]

    @property
    def isolated(self) -> bool:
        """True where every node has its own network namespace (False: the loopback fallback)."""
        return all(h.netns for h in self.hosts)

    def pids(self) -> list[int]:
        """Every live process of this cluster: all in its namespaces, those naming its temp folder, its servers."""
        return sorted(
            set(_pids_in([h.netns for h in self.hosts if h.netns]))
            | set(_pids_using(self.temp_dir))
            | {p.pid for p in self.servers if p.poll() is None}
        )

    @property
    def address(self) -> str:
        """The GCS address drivers pass to `ray.init(address=...)`."""
        return f"{self.head.ip}:{self.port}"

    @property
    def dashboard_url(self) -> str:
        """The job-submission address (only with `dashboard=True`)."""
        return f"http://{self.head.ip}:{self.dashboard_port}"

    def service_port(self, default: int) -> int:
        """A port for a server on the head: `default` in a namespace of its own, a free one on shared loopback."""
        return default if self.isolated else _free_port(self.head.ip)

    def wait_until_serving(self, url: str, timeout: float = 180) -> None:
        """Return once `url` answers HTTP from the head node (any status); raise after `timeout` seconds."""
        done = self.run([sys.executable, "-c", _POLL_URL, url, str(timeout)], timeout=timeout + 30)
        if done.returncode != 0:
            raise RuntimeError(f"{url} never answered: {done.stderr.strip()[-2000:]}")

    def run(
        self,
        argv: Sequence[Arg],
        host: Host | None = None,
        timeout: float = 120,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run `argv` to completion on `host` (default: the head) with the cluster's token in its environment."""
        return subprocess.run(
            (host or self.head).wrap(argv),
            env={**self.env, **(env or {})},
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def popen(self, argv: Sequence[Arg], host: Host | None = None, log: Path | None = None) -> subprocess.Popen[bytes]:
        """Start a long-running `argv` on `host` (e.g. a server); it is ended with the cluster."""
        with open(log or os.devnull, "wb") as out:  # the child keeps its own copy of the descriptor
            proc = subprocess.Popen(
                (host or self.head).wrap(argv), env=self.env, cwd=self.workdir, stdout=out, stderr=subprocess.STDOUT
            )
        self.servers.append(proc)
        return proc


def _token_env(workdir: Path) -> dict[str, str]:
    """Token auth on, with a token private to this cluster (never the user's ~/.ray/auth_token)."""
    from ray._private.authentication.authentication_token_generator import generate_new_authentication_token

    token = workdir / "auth_token"
    token.write_text(generate_new_authentication_token())
    token.chmod(0o600)
    return {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(token),
        "RAY_USAGE_STATS_ENABLED": "0",
        "HOME": str(workdir),
    }


def _free_port(ip: str) -> int:
    with socket.socket() as sock:
        sock.bind((ip, 0))
        return int(sock.getsockname()[1])


def _ray_start(cluster: RayCluster, argv: list[str], host: Host) -> None:
    done = cluster.run([str(RAY_BIN), "start", *argv], host=host, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"ray start on {host.ip} failed:\n{done.stdout}\n{done.stderr}")


@contextmanager
def ray_cluster(
    hosts: list[Host],
    workdir: Path,
    cpus_per_node: int = 1,
    dashboard: bool = False,
    object_store_bytes: int = 100 * 1024**2,
) -> Iterator[RayCluster]:
    """A Ray head on `hosts[0]` and one worker node on each other host, token authentication on.

    On exit (also on failure) every process of the cluster is ended: in namespaces, everything inside them;
    on loopback, every process naming the cluster's temp folder and the servers started with `popen`.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    isolated = all(h.netns for h in hosts)
    # Namespaces have ports of their own; on loopback other Ray instances may hold the defaults.
    ports = (HEAD_PORT, DASHBOARD_PORT) if isolated else (_free_port(hosts[0].ip), _free_port(hosts[0].ip))
    # Ray's unix sockets live under --temp-dir and must fit in 107 bytes: a short folder, not tmp_path.
    cluster = RayCluster(hosts, _token_env(workdir), workdir, Path(tempfile.mkdtemp(prefix="r3d-")), *ports)
    common = [f"--num-cpus={cpus_per_node}", f"--object-store-memory={object_store_bytes}", "--disable-usage-stats"]
    head_args = [
        "--head",
        f"--node-ip-address={cluster.head.ip}",
        f"--port={cluster.port}",
        f"--temp-dir={cluster.temp_dir}",
        *common,
    ]
    if dashboard:
        head_args += [f"--dashboard-host={cluster.head.ip}", f"--dashboard-port={cluster.dashboard_port}"]
    else:
        head_args.append("--include-dashboard=false")
    try:
        _ray_start(cluster, head_args, cluster.head)
        for host in hosts[1:]:
            _ray_start(cluster, [f"--address={cluster.address}", f"--node-ip-address={host.ip}", *common], host)
        yield cluster
    finally:
        _terminate(cluster.pids)
        shutil.rmtree(cluster.temp_dir, ignore_errors=True)
