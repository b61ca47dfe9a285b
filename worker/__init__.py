"""The training worker (``specrec-worker``): bootstrap a default model, then run retrain jobs.

The worker process claims a queued job atomically and runs it in a child process of its own
(``isolation.run_job_isolated``), so an OOM kill, a segfault or a CUDA error fails that job,
with the cause ("killed by signal 9 (SIGKILL)"), and the worker goes on with the next one. The
child sends heartbeats from a side thread, trains on the dataset plus all ingested
interactions (merged in memory, keeping the dataset's own train/test split:
trainer.data.merge_ingested) with the TrainConfig the API stored with the job, applies the
quality gate and publishes; it exits by itself when its worker is gone. A worker that starts
fails the jobs left running by a dead worker on the same host at once (others fail after the
heartbeat timeout). The service hot-swaps to the new version by watching the registry's
CURRENT pointer.

One module per job; data flows store/contract -> worker -> trainer, never back:

- ``settings``: ``WorkerSettings``, the worker's configuration;
- ``bootstrap``: the default dataset and, if none is published, a default model;
- ``heartbeat``: a running job's heartbeats (and the end of an orphaned job's process);
- ``jobconfig``: the TrainConfig a job runs with;
- ``trainset``: a job's training set (its dataset plus the ingested interactions);
- ``job``: one job's run: train (in this process or in ranks), gate, publish;
- ``ranks``: a job's training in N data-parallel torchrun ranks;
- ``exits``: a process's exit status in words;
- ``isolation``: a claimed job in a child process of its own;
- ``orphans``: worker ids, and the jobs of dead workers on this host;
- ``scheduler``: scheduled retraining (``RetrainScheduler``);
- ``loop``: the poll loop (``serve_forever``);
- ``cli``: the ``specrec-worker`` command.
"""
