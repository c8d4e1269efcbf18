"""A real two-node Ray cluster on one machine: a head and a worker node in two network namespaces."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import warnings
from contextlib import nullcontext
from pathlib import Path
from typing import Any

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


@pytest.fixture(scope="module")
def two_node_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One cluster lifecycle: start two nodes, run the pinned tasks, look around, tear down, look again."""
    workdir = tmp_path_factory.mktemp("two-nodes")
    script = workdir / "pinned.py"
    script.write_text(PINNED_TASKS)
    reason = namespaces_unavailable()
    if reason is not None:
        warnings.warn(f"network namespaces unavailable ({reason}): two nodes on loopback instead", stacklevel=1)
    with private_hosts(2) if reason is None else nullcontext(loopback_hosts(2)) as hosts:
        with ray_cluster(hosts, workdir) as cluster:
            driver = cluster.run([sys.executable, str(script), cluster.address])
            during = {"pids": cluster.pids(), "own_links": _links(None), "peer_links": _links(hosts[1].netns)}
        alive_after = [pid for pid in during["pids"] if _alive(pid)]
    namespaces_after = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {
        "cluster": cluster,
        "driver": driver,
        "during": during,
        "alive_after": alive_after,
        "namespaces_after": namespaces_after if reason is None else "",
    }


def _links(netns: str | None) -> str:
    argv = ["ip", *(["-n", netns] if netns else []), "-o", "link", "show"]
    return subprocess.run(argv, capture_output=True, text=True).stdout


def _alive(pid: int) -> bool:
    """A process that still runs (a zombie waiting for its reaper has ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_tasks_pinned_to_each_node_run_on_two_different_nodes(two_node_run: dict[str, Any]) -> None:
    cluster: RayCluster = two_node_run["cluster"]
    driver = two_node_run["driver"]
    assert driver.returncode == 0, driver.stderr[-3000:]
    report = json.loads(driver.stdout.strip().splitlines()[-1])

    assert len(report["nodes"]) == 2
    ran = report["ran"]
    assert [r["node_id"] for r in ran] == report["nodes"], "a pinned task ran on another node than asked"
    assert len({r["node_id"] for r in ran}) == 2
    assert sorted(r["ip"] for r in ran) == sorted(h.ip for h in cluster.hosts)
    if cluster.isolated:
        assert len({r["netns"] for r in ran}) == 2, "both tasks ran in the same network namespace"


def test_the_link_between_the_nodes_never_exists_in_the_machines_own_namespace(two_node_run: dict[str, Any]) -> None:
    cluster: RayCluster = two_node_run["cluster"]
    if not cluster.isolated:
        pytest.skip("loopback fallback: no namespaces, no link")
    tag = cluster.hosts[0].netns[:-2]  # type: ignore[index]  # r3d<pid>, shared by the namespaces and veth ends
    assert tag in two_node_run["during"]["peer_links"]
    assert tag not in two_node_run["during"]["own_links"]


def test_no_process_or_namespace_outlives_the_cluster(two_node_run: dict[str, Any]) -> None:
    cluster: RayCluster = two_node_run["cluster"]
    assert len(two_node_run["during"]["pids"]) >= 4, "expected a GCS, two raylets and their agents"
    assert two_node_run["alive_after"] == []
    assert not any(h.netns in two_node_run["namespaces_after"] for h in cluster.hosts if h.netns)
