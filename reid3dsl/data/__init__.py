"""Data: the shard format and the streams that feed training and evaluation. `schema` owns the sample
format of docs/shard-format.md (jpg, mask.png, kp.npy, json); `writer` writes a data set's shards and index.json
atomically (local or s3://) and `index` reads index.json back into a `DatasetIndex` (shards per split,
pid → class and clothes → int maps); `s3` is the boto3/pyarrow access from the `storage` config section and
webdataset's `s3` scheme; `reader` turns shards into samples, skipping and counting bad ones; `sampler`
splits shards over ranks and loader workers and builds P × K identity-balanced batches; `transforms`
resizes, shifts, flips, erases and normalises image, mask and keypoints together (and mirrors batches for
test-time flips); `pipeline` is the API
the trainer and evaluator call: `train_batches(cfg, rank, world_size)` and `eval_batches(...)`.
"""
