"""Storage faults: the S3 endpoint goes away mid-stream and comes back; a shard stays unreadable; storage fails
during a checkpoint upload. Reads retry with backoff and resume at the byte where they broke, a shard unreadable
after the retries is skipped and counted, checkpoint uploads retry.

The clients talk to a moto S3 server through `Endpoint`, a TCP relay on 127.0.0.1 that can drop every open
connection at a chosen byte of a response (a real mid-stream break: moto's own server finishes responses it has
started), stop listening while the moto server behind it is stopped, and come back with it on the same port.
"""

from __future__ import annotations

import logging
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from reid3dsl.config import StorageConfig, load_config
from reid3dsl.data.index import load_index
from reid3dsl.data.reader import SkipCounter, iter_samples

REGION = "us-east-1"


@dataclass
class Watch:
    """Break the response to requests naming `path` once `after_bytes` of it have passed: with `outage_s`, the
    whole endpoint then goes away for that long; without, every later request naming `path` is reset."""

    path: str
    after_bytes: int
    outage_s: float | None = None
    fired_at: float | None = None


class Endpoint:
    """A TCP relay in front of a moto server (see the module docstring); `url` is what clients use."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        self._moto_class = ThreadedMotoServer
        self.moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.moto.start()
        self.upstream_port = self.moto.get_host_and_port()[1]
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.watch: Watch | None = None
        self.refused: set[str] = set()
        self.requests: list[str] = []
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self.outages: list[tuple[float, float]] = []
        self.listen()

    def listen(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def drop(self) -> None:
        """Stop listening and reset every open connection."""
        if self._listener is not None:
            try:
                self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
            except OSError:
                pass
            self._listener.close()
            self._listener = None
        with self._lock:
            conns, self._conns = self._conns, set()
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()

    def outage(self, seconds: float) -> None:
        """The endpoint goes away: connections dropped, moto stopped; both back on the same ports after `seconds`."""
        start = time.monotonic()
        self.drop()
        self.moto.stop()
        time.sleep(seconds)
        self.moto = self._moto_class(ip_address="127.0.0.1", port=self.upstream_port, verbose=False)
        self.moto.start()
        self.listen()
        self.outages.append((start, time.monotonic()))

    def close(self) -> None:
        self.drop()
        self.moto.stop()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns |= {client, upstream}
            watched: list[Watch] = []
            threading.Thread(target=self._requests, args=(client, upstream, watched), daemon=True).start()
            threading.Thread(target=self._responses, args=(upstream, client, watched), daemon=True).start()

    def _requests(self, src: socket.socket, dst: socket.socket, watched: list[Watch]) -> None:
        try:
            while data := src.recv(65536):
                line = data.split(b"\r\n", 1)[0].decode("latin-1")
                if re.match(r"^[A-Z]+ /", line):
                    self.requests.append(line)
                    if any(p in line for p in self.refused):
                        break
                    w = self.watch
                    watched[:] = [w] if w is not None and w.fired_at is None and w.path in line else []
                dst.sendall(data)
        except OSError:
            pass
        self._close(src, dst)

    def _responses(self, src: socket.socket, dst: socket.socket, watched: list[Watch]) -> None:
        sent = 0
        try:
            while data := src.recv(65536):
                w = watched[0] if watched else None
                if w is not None and w.fired_at is None and sent + len(data) >= w.after_bytes:
                    dst.sendall(data[: max(0, w.after_bytes - sent)])
                    w.fired_at = time.monotonic()
                    if w.outage_s is None:
                        self.refused.add(w.path)
                        break
                    threading.Thread(target=self.outage, args=(w.outage_s,), daemon=True).start()
                    return
                dst.sendall(data)
                sent += len(data)
        except OSError:
            pass
        self._close(src, dst)

    def _close(self, *socks: socket.socket) -> None:
        for s in socks:
            with self._lock:
                self._conns.discard(s)
            try:
                s.shutdown(socket.SHUT_RDWR)  # close() alone sends nothing while the other pump is in recv()
            except OSError:
                pass
            s.close()


@pytest.fixture(scope="module")
def endpoint() -> Iterator[Endpoint]:
    ep = Endpoint()
    yield ep
    ep.close()


@pytest.fixture
def bucket(endpoint: Endpoint, request: pytest.FixtureRequest) -> str:
    import boto3

    name = "f-" + re.sub(r"[^a-z0-9]+", "-", request.node.name.lower())[:50].strip("-")
    boto3.client("s3", endpoint_url=endpoint.url, region_name=REGION).create_bucket(Bucket=name)
    endpoint.watch = None
    endpoint.refused.clear()
    return name


def _storage(endpoint: Endpoint, retries: int, backoff: float) -> StorageConfig:
    return StorageConfig(endpoint=endpoint.url, region=REGION, retries=retries, backoff=backoff)


def _big_shards(toy_shards: Callable[..., str], root: str, storage: StorageConfig) -> str:
    """3 shards of 60 samples of 256x128 noise (about 2.4 MB each: more than two 1 MB read buffers)."""
    return toy_shards(root, ids=6, per_id=30, shard_size=60, storage=storage, size=(256, 128))


def _retry_offsets(caplog: pytest.LogCaptureFixture, shard: str) -> list[int]:
    return [int(m.group(1)) for r in caplog.records
            if (m := re.search(rf"read of \S*{re.escape(shard)} at byte (\d+) failed", r.getMessage()))]


def test_endpoint_gone_for_seconds_mid_shard_reads_resume_at_the_byte_and_nothing_is_lost(
    endpoint: Endpoint, bucket: str, toy_shards: Callable[..., str], caplog: pytest.LogCaptureFixture
) -> None:
    cfg = _storage(endpoint, retries=6, backoff=0.25)
    root = _big_shards(toy_shards, f"s3://{bucket}/toy", cfg)
    shards = load_index(root, cfg).split("train").shards

    start = time.monotonic()
    baseline = [s.key for s in iter_samples(shards, cfg, SkipCounter())]
    clean_s = time.monotonic() - start
    assert len(baseline) == 180 and len(shards) == 3

    # The endpoint (relay and moto server) goes away 1.5 MB into the second shard, for 2 s.
    endpoint.watch = Watch("/toy/train-000001.tar", after_bytes=1_500_000, outage_s=2.0)
    counter = SkipCounter()
    caplog.set_level(logging.WARNING, logger="reid3dsl")
    start = time.monotonic()
    keys = [s.key for s in iter_samples(shards, cfg, counter)]
    faulty_s = time.monotonic() - start

    assert endpoint.watch.fired_at is not None and endpoint.outages, "the fault was never injected"
    assert keys == baseline, "samples were lost or repeated across the outage"
    assert counter.total == 0
    offsets = _retry_offsets(caplog, "train-000001.tar")
    assert offsets, "no read was retried"
    assert all(o > 1_000_000 for o in offsets), f"a retry restarted the shard instead of resuming: {offsets}"
    ranged = [r for r in endpoint.requests if "train-000001.tar" in r]
    assert len(ranged) >= 2  # the first GET and the ranged GET that resumed it
    down_s = endpoint.outages[-1][1] - endpoint.outages[-1][0]
    print(f"\nstorage outage {down_s:.1f} s mid-shard: {len(offsets)} retries, all resumed at byte {offsets[0]}; "
          f"read time {faulty_s:.1f} s vs {clean_s:.1f} s clean (lost {faulty_s - clean_s:.1f} s); "
          f"{counter.total} samples skipped")


def test_a_shard_still_unreadable_after_the_retries_is_skipped_and_counted_and_the_rest_is_read(
    endpoint: Endpoint, bucket: str, toy_shards: Callable[..., str], caplog: pytest.LogCaptureFixture
) -> None:
    cfg = _storage(endpoint, retries=2, backoff=0.05)
    root = _big_shards(toy_shards, f"s3://{bucket}/toy", cfg)
    shards = load_index(root, cfg).split("train").shards
    # Broken 1 MB into the first shard, and every request for it reset from then on.
    endpoint.watch = Watch("/toy/train-000000.tar", after_bytes=1_500_000)
    counter = SkipCounter()
    caplog.set_level(logging.WARNING, logger="reid3dsl")
    keys = [s.key for s in iter_samples(shards, cfg, counter)]

    first_shard = [k for k in keys if k in {f"train/{p:03d}_{j:02d}" for p in (1, 2) for j in range(30)}]
    assert 0 < len(first_shard) < 60, "the break should land inside the first shard"
    assert counter.total == 60 - len(first_shard), "the lost samples must be counted"
    assert len(keys) == 180 - counter.total, "the other shards must be read whole"
    retries = _retry_offsets(caplog, "train-000000.tar")
    assert len(retries) >= 2, "expected storage.retries retries before the skip"
    assert any("lost" in r.getMessage() and "train-000000.tar" in r.getMessage() for r in caplog.records)
    print(f"\nunreadable shard: {counter.total} samples skipped and counted after {len(retries)} retries; "
          f"{len(keys)} samples read from the rest")


def test_checkpoint_upload_retries_through_a_storage_outage(
    endpoint: Endpoint, bucket: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import ray.train
    from pyarrow import fs

    from reid3dsl.train.checkpoint import checkpoint_uploader, storage, write_manifest

    local = tmp_path / "ckpt"
    (local / "model").mkdir(parents=True)
    payload = {"model/weights.pt": b"w" * 3_000_000, "train_state.json": b'{"epoch": 1}'}
    for name, data in payload.items():
        (local / name).write_bytes(data)
    write_manifest(local, 0, 1, "job", None)
    cfg = load_config(None, [
        f"cluster.storage_path=s3://{bucket}/runs", "cluster.name=job", f"storage.endpoint={endpoint.url}",
        f"storage.region={REGION}", "storage.retries=2", "storage.backoff=2.0",
    ], env={})
    # Storage goes away for 3.5 s as it answers the upload of the weights: longer than pyarrow's own retries
    # can span (storage.retries + 1 attempts, AWS standard mode: random backoff of up to 1 s, then 2 s), shorter
    # than ours (2 s, then 4 s).
    endpoint.watch = Watch(f"/{bucket}/runs/job/checkpoint_000001/model/weights.pt", after_bytes=0, outage_s=3.5)
    caplog.set_level(logging.WARNING, logger="reid3dsl")
    start = time.monotonic()
    stored = checkpoint_uploader(cfg)(ray.train.Checkpoint.from_directory(str(local)), "checkpoint_000001")
    took = time.monotonic() - start

    assert endpoint.watch.fired_at is not None, "the fault was never injected"
    path, filesystem = storage(cfg)
    assert stored.path == f"{path}/job/checkpoint_000001"
    for name, data in payload.items():
        with filesystem.open_input_stream(f"{stored.path}/{name}") as fh:
            assert fh.read() == data
    assert filesystem.get_file_info(f"{stored.path}/manifest-rank0.json").type == fs.FileType.File
    retries = [r for r in caplog.records if "upload of checkpoint" in r.getMessage()]
    assert retries, "the upload did not go through our retry"
    print(f"\ncheckpoint upload through a 3.5 s outage: {len(retries)} retries, {took:.1f} s")
