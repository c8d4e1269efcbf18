"""A real two-node Ray cluster on one machine: a head and a worker node in two network namespaces."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from netns import RayCluster, loopback_hosts, namespaces_unavailable, private_hosts, ray_cluster

pytestmark = pytest.mark.slow

# One task pinned to each alive node; each reports the node it ran on, the address Ray gives that node
# and the network namespace its process lives in.
PINNED_TASKS = textwrap.dedent(
    """
    import json, os, sys, time
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    ray.init(address=sys.argv[1])
    deadline = time.monotonic() + 60
    while len([n for n in ray.nodes() if n["Alive"]]) < 2 and time.monotonic() < deadline:
        time.sleep(0.5)
    nodes = sorted((n for n in ray.nodes() if n["Alive"]), key=lambda n: n["NodeManagerAddress"])

    @ray.remote(num_cpus=1)
    def where():
        return {
            "node_id": ray.get_runtime_context().get_node_id(),
            "ip": ray.util.get_node_ip_address(),
            "netns": os.stat("/proc/self/ns/net").st_ino,
        }

    refs = [
        where.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote()
        for n in nodes
    ]
    print(json.dumps({"nodes": [n["NodeID"] for n in nodes], "ran": ray.get(refs, timeout=60)}))
    """
)


@pytest.fixture
def two_node_cluster(tmp_path: Path) -> Iterator[RayCluster]:
    reason = namespaces_unavailable()
    if reason is None:
        with private_hosts(2) as hosts, ray_cluster(hosts, tmp_path) as cluster:
            yield cluster
    else:
        warnings.warn(f"network namespaces unavailable ({reason}): two nodes on loopback instead", stacklevel=1)
        with ray_cluster(loopback_hosts(2), tmp_path) as cluster:
            yield cluster


def test_tasks_pinned_to_each_node_run_on_two_different_nodes(two_node_cluster: RayCluster, tmp_path: Path) -> None:
    script = tmp_path / "pinned.py"
    script.write_text(PINNED_TASKS)
    done = two_node_cluster.run([sys.executable, str(script), two_node_cluster.address])
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])

    assert len(report["nodes"]) == 2
    ran = report["ran"]
    assert [r["node_id"] for r in ran] == report["nodes"], "a pinned task ran on another node than asked"
    assert len({r["node_id"] for r in ran}) == 2
    assert sorted(r["ip"] for r in ran) == sorted(h.ip for h in two_node_cluster.hosts)
    if two_node_cluster.isolated:
        assert len({r["netns"] for r in ran}) == 2, "both tasks ran in the same network namespace"


def test_namespaces_and_their_processes_are_gone_after_the_harness_exits(tmp_path: Path) -> None:
    if namespaces_unavailable() is not None:
        pytest.skip("network namespaces unavailable")

    with private_hosts(2) as hosts, ray_cluster(hosts, tmp_path) as cluster:
        names = [h.netns for h in hosts]
        pids = subprocess.run(["ip", "netns", "pids", names[1]], capture_output=True, text=True).stdout.split()
        assert pids, "the worker node started no process in its namespace"
        # Unreachable from the machine's own network namespace: nothing is routed to it.
        probe = subprocess.run(["ip", "route", "get", cluster.head.ip], capture_output=True, text=True)
        assert "dev r3d" not in probe.stdout
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not any(name in listed for name in names)
    assert not [pid for pid in pids if _alive(pid)]


def _alive(pid: str) -> bool:
    """A process that still runs (a zombie waiting for its reaper has ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"
