"""A real two-node Ray cluster on one machine: a head and a worker node in two network namespaces.

On it, tasks pinned to each node, then the main job as a cluster runs it: `ray_job.py --config
configs/smoke.yaml` with one training worker per node (each node offers 1 CPU), its shards and checkpoints on
an S3 server (moto) and its tracking on an MLflow server, both on the head node and reached over the link.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import pytest
from netns import RayCluster, loopback_hosts, namespaces_unavailable, private_hosts, ray_cluster

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
BUCKET = "two-nodes"
MAKE_BUCKET = textwrap.dedent(
    """
    import sys
    from reid3dsl.config import load_config
    from reid3dsl.data.s3 import s3_client

    s3_client(load_config(None, sys.argv[2:]).storage).create_bucket(Bucket=sys.argv[1])
    """
)
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


def _start_servers(cluster: RayCluster, workdir: Path) -> tuple[str, str]:
    """An S3 server (moto) and an MLflow server on the head node → (S3 endpoint, MLflow URI)."""
    ip = cluster.head.ip
    s3_port, mlflow_port = cluster.service_port(9000), cluster.service_port(5000)
    cluster.popen([BIN / "moto_server", "-H", ip, "-p", s3_port], log=workdir / "moto.log")
    cluster.popen(
        [BIN / "mlflow", "server", "--host", ip, "--port", mlflow_port, "--workers", 1,
         "--backend-store-uri", f"sqlite:///{workdir / 'mlflow.db'}",
         "--artifacts-destination", workdir / "mlartifacts", "--allowed-hosts", f"{ip}:{mlflow_port}"],
        log=workdir / "mlflow.log",
    )
    return f"http://{ip}:{s3_port}", f"http://{ip}:{mlflow_port}"


def _upload_shards(cluster: RayCluster, shards: str, s3_sets: list[str]) -> None:
    """The bucket, and the shards in it under toy/, put there from the head node with the project's own tools."""
    made = cluster.run([sys.executable, "-c", MAKE_BUCKET, BUCKET, *s3_sets])
    assert made.returncode == 0, made.stderr[-2000:]
    sent = cluster.run([sys.executable, "-m", "shards", "upload", shards, f"s3://{BUCKET}/toy", *_as_sets(s3_sets)])
    assert sent.returncode == 0, sent.stderr[-2000:]


def _as_sets(overrides: list[str]) -> list[str]:
    return [a for o in overrides for a in ("--set", o)]


@pytest.fixture(scope="module")
def two_node_run(
    tmp_path_factory: pytest.TempPathFactory, toy_shards: Callable[..., str], standin_dir: str
) -> dict[str, Any]:
    """One cluster lifecycle: start two nodes and the servers, run the pinned tasks and the smoke job, look
    around, tear down, look again."""
    workdir = tmp_path_factory.mktemp("two-nodes")
    script = workdir / "pinned.py"
    script.write_text(PINNED_TASKS)
    # Six training shards of eight: three for each node's worker in every pass.
    shards = toy_shards(workdir / "toy", ids=8, per_id=6, shard_size=8, splits=("train", "query", "gallery"))
    reason = namespaces_unavailable()
    if reason is not None:
        warnings.warn(f"network namespaces unavailable ({reason}): two nodes on loopback instead", stacklevel=1)
    with private_hosts(2) if reason is None else nullcontext(loopback_hosts(2)) as hosts:
        with ray_cluster(hosts, workdir) as cluster:
            s3_endpoint, mlflow_uri = _start_servers(cluster, workdir)
            driver = cluster.run([sys.executable, str(script), cluster.address])
            s3_sets = [f"storage.endpoint={s3_endpoint}", "storage.region=us-east-1"]
            cluster.wait_until_serving(s3_endpoint)
            _upload_shards(cluster, shards, s3_sets)
            cluster.wait_until_serving(f"{mlflow_uri}/health")
            job = cluster.run(
                [sys.executable, ROOT / "ray_job.py", "--config", ROOT / "configs" / "smoke.yaml", *_as_sets([
                    f"cluster.address={cluster.address}", "cluster.num_workers=2", "cluster.cpus_per_worker=1",
                    "cluster.name=two-nodes", f"cluster.storage_path=s3://{BUCKET}/checkpoints", "train.epochs=1",
                    f"data.root=s3://{BUCKET}/toy", "data.synthesize=false", *s3_sets,
                    f"body.standin_dir={standin_dir}", f"tracking.uri={mlflow_uri}",
                ])],
                timeout=420,
                # Ray folds log lines that differ only in numbers (rank, node, shards): the test reads them all.
                env={"RAY_DEDUP_LOGS": "0"},
            )
            during = {"pids": cluster.pids(), "own_links": _links(None), "peer_links": _links(hosts[1].netns)}
        alive_after = [pid for pid in during["pids"] if _alive(pid)]
    namespaces_after = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {
        "cluster": cluster,
        "driver": driver,
        "job": job,
        "shards": shards,
        "mlflow_db": workdir / "mlflow.db",
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


def _job_lines(run: dict[str, Any]) -> list[str]:
    job = run["job"]
    assert job.returncode == 0, f"{job.stdout[-3000:]}\n{job.stderr[-6000:]}"
    return (job.stdout + job.stderr).splitlines()


def test_the_smoke_job_runs_one_training_worker_on_each_node(two_node_run: dict[str, Any]) -> None:
    cluster: RayCluster = two_node_run["cluster"]
    nodes = {}
    for line in _job_lines(two_node_run):
        if found := re.search(r"\[rank (\d+)\] reid3dsl\.train\.loop: worker (\d+)/2 on node ([\d.]+)", line):
            assert found[1] == found[2]
            nodes[int(found[1])] = found[3]
    assert sorted(nodes) == [0, 1], "each rank logs the node it runs on"
    assert sorted(nodes.values()) == sorted(h.ip for h in cluster.hosts), "the two workers shared a node"


def test_each_worker_reads_its_own_part_of_the_shards_and_together_all_of_them(
    two_node_run: dict[str, Any]
) -> None:
    index = json.loads((Path(two_node_run["shards"]) / "index.json").read_text())
    train = {s["name"] for s in index["splits"]["train"]["shards"]}
    assert len(train) == 6
    read: dict[int, set[str]] = {}
    pattern = r"rank (\d+)/2, reader (\d+)/2, pass 0 reads (\d+) of 6 shards \[(.*)\]"
    for line in _job_lines(two_node_run):
        if found := re.search(pattern, line):
            read[int(found[1])] = set(found[4].split(", "))
    assert sorted(read) == [0, 1], "each rank logs the shards it reads"
    assert not read[0] & read[1], "a shard was read by both workers in the same pass"
    assert read[0] | read[1] == train


def test_both_workers_train_one_run_tracked_on_the_head_with_checkpoints_on_s3(
    two_node_run: dict[str, Any]
) -> None:
    import mlflow

    lines = _job_lines(two_node_run)
    assert any(re.search(rf"checkpoint: {BUCKET}/checkpoints/two-nodes/checkpoint_\S+", line) for line in lines)
    client = mlflow.MlflowClient(f"sqlite:///{two_node_run['mlflow_db']}")
    experiment = client.get_experiment_by_name("reid3dsl-smoke")
    assert experiment is not None
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["cluster.num_workers"] == "2"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss/total")] == [1, 2]
    assert {"loss/discriminator", "eval/cc/fused/rank1", "eval/standard/rgb/mAP"} <= set(run.data.metrics)
