"""The run stage: a config resolved against the registry and backends, then executed task
by task into a run folder (runner, tasks and chunks, parts, locks, manifest and ledger,
shard storage, verification, backends, progress; docs/architecture.md).
"""
