"""A cluster: `ticketx study submit S.yaml` (submitit: Slurm job arrays, or local processes).

Every job is one worker (`ticketx.study.worker.work`) on the shared study folder; searches may get
an array of their own that the transfer array waits for.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from ticketx.settings.study import Study
from ticketx.study.runner import is_done, write_provenance
from ticketx.study.worker import DEFAULT_LEASE_TIMEOUT, work

DEFAULT_TIME_MIN = 240  # per job; a job that runs out is requeued and its cell resumes, so short is fine
MAX_DEFAULT_WORKERS = 64


class SubmititWorker:
    """What each submitted job runs: one worker (`work`) on the study; requeued when Slurm stops it.

    submitit calls `checkpoint` on a time-out or pre-emption (SIGUSR2) and requeues the job with
    what it returns: the same worker, which takes its old leases back at once (its id is the job
    id, stable across requeues), skips finished cells and resumes the running one from its last
    epoch checkpoint. The study file is read when the job starts (it must be on the shared file system).
    """

    def __init__(self, study_file: str, out: str, *, phase: str = "all", lease_timeout: float = DEFAULT_LEASE_TIMEOUT,
                 device: Optional[str] = None, data_dir: Optional[str] = None, threads: Optional[int] = None,
                 overrides: Sequence[str] = (), text: Optional[str] = None) -> None:
        self.study_file, self.out, self.phase = study_file, out, phase
        self.lease_timeout, self.device, self.data_dir, self.threads = lease_timeout, device, data_dir, threads
        self.overrides, self.text = list(overrides), text  # the submitter's --set; the recorded text of a folder's study

    def __call__(self) -> dict[str, Any]:
        import submitit

        from ticketx.study.load import load_study

        job = str(submitit.JobEnvironment().job_id)
        # (a job pickled by an older ticketx and requeued has neither attribute)
        study = load_study(self.study_file, text=getattr(self, "text", None), overrides=getattr(self, "overrides", []))
        return work(study, self.out, device=self.device, data_dir=self.data_dir, lease_timeout=self.lease_timeout,
                    worker_id=f"job-{job}", job=job, phase=self.phase, threads=self.threads)

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


@dataclass
class Launch:
    """Launcher settings after merging the command line over the study's `launcher:` block."""

    cluster: str
    workers: int
    array_parallelism: Optional[int]
    partition: Optional[str]
    account: Optional[str]
    gpus_per_task: int
    cpus_per_task: Optional[int]
    mem_gb: Optional[float]
    time_min: int
    extra: dict[str, Any]
    setup: list[str]
    phases: bool
    lease_timeout: float


def launch_settings(study: Study, pending: int, **cli: Any) -> Launch:
    """The command line's values over the study's `launcher:` block over the defaults."""
    import shutil

    from ticketx.errors import UsageError

    block = study.spec.launcher.model_dump()
    merged = {k: (cli[k] if cli.get(k) is not None else block.get(k)) for k in set(block) | set(cli)}
    cluster = merged.get("cluster") or ("slurm" if shutil.which("sbatch") else None)
    if cluster is None:
        raise UsageError("no Slurm on this machine (sbatch not found)",
                         "run the workers here with --local (or launcher: {cluster: local}), or `ticketx study run --workers N`")
    extra = dict(block.get("extra") or {})
    extra.update(cli.get("extra") or {})
    return Launch(
        cluster=cluster, workers=merged.get("workers") or max(1, min(MAX_DEFAULT_WORKERS, pending)),
        array_parallelism=merged.get("array_parallelism"), partition=merged.get("partition"),
        account=merged.get("account"),
        gpus_per_task=merged["gpus_per_task"] if merged.get("gpus_per_task") is not None else (1 if cluster == "slurm" else 0),
        cpus_per_task=merged.get("cpus_per_task"), mem_gb=merged.get("mem_gb"),
        time_min=merged.get("time") or DEFAULT_TIME_MIN, extra=extra, setup=list(merged.get("setup") or []),
        phases=bool(merged["phases"]) if merged.get("phases") is not None else True,
        lease_timeout=merged.get("lease_timeout") or DEFAULT_LEASE_TIMEOUT,
    )


def parse_extra(items: Optional[list[str]]) -> dict[str, Any]:
    """['qos=high', '--constraint=a100', 'exclusive'] -> {'qos': 'high', 'constraint': 'a100', 'exclusive': True}."""
    from ticketx.errors import UsageError

    out: dict[str, Any] = {}
    for item in items or []:
        for part in item.split():
            key, sep, value = part.lstrip("-").partition("=")
            if not key or not key.replace("-", "_").replace("_", "").isalnum():
                raise UsageError(f"--slurm-arg expects sbatch flags like qos=high or --constraint=a100, got {item!r}")
            out[key.replace("-", "_")] = value if sep else True
    return out


def submit(study: Study, out: str | Path, launch: Launch, *, device: Optional[str] = None, data_dir: Any = None,
           text: Optional[str] = None) -> dict[str, Any]:
    """Submit the worker array(s) for `study` on `<out>` and return at once: jobs, folders, how to watch.

    With `phases` (the default), search cells get their own array first and the transfer array
    starts after it (Slurm dependency afterany), so transfer workers do not hold GPUs while they
    wait for tickets. The file protocol keeps the order on its own: without a dependency (the
    local executor) the transfer workers simply wait.
    """
    from ticketx.errors import UsageError

    try:
        import submitit
    except ImportError:
        raise UsageError("`ticketx study submit` needs submitit", 'install it: pip install "ticketx[slurm]"') from None
    out = Path(out).resolve()
    write_provenance(study, out)
    pending = [c for c in study.cells if not is_done(out, c)]
    result: dict[str, Any] = {"cluster": launch.cluster, "out": str(out), "folder": str(out / "slurm"), "arrays": [],
                              "pending": len(pending)}
    if not pending:
        return result
    executor = submitit.AutoExecutor(folder=out / "slurm", cluster=launch.cluster)
    params: dict[str, Any] = {
        "name": f"ticketx-{study.name}", "timeout_min": launch.time_min, "nodes": 1, "tasks_per_node": 1,
        "gpus_per_node": launch.gpus_per_task,
    }
    if launch.cpus_per_task:
        params["cpus_per_task"] = launch.cpus_per_task
    if launch.mem_gb:
        params["mem_gb"] = launch.mem_gb
    slurm: dict[str, Any] = {}
    if launch.partition:
        slurm["slurm_partition"] = launch.partition
    if launch.account:
        slurm["slurm_account"] = launch.account
    if launch.array_parallelism:
        slurm["slurm_array_parallelism"] = launch.array_parallelism
    if launch.setup:
        slurm["slurm_setup"] = launch.setup
    if launch.cluster == "slurm":
        params.update(slurm)
    executor.update_parameters(**params)
    threads = launch.cpus_per_task
    if launch.cluster == "local":
        threads = study.spec.cpu_threads or max(1, (os.cpu_count() or 1) // launch.workers)
    common = dict(lease_timeout=launch.lease_timeout, device=device, data_dir=str(data_dir) if data_dir else None,
                  threads=threads, overrides=[o.text for o in study.overrides], text=text)
    study_file = str(Path(study.file).resolve())
    searches = sum(1 for c in pending if c.kind == "search")
    phases: list[tuple[str, int]] = []
    if launch.phases and 0 < searches < len(pending):
        phases.append(("search", min(launch.workers, searches)))
    phases.append(("all", launch.workers))
    previous: Optional[str] = None
    for phase, n in phases:
        extra = dict(launch.extra)
        if previous is not None and launch.cluster == "slurm":
            extra["dependency"] = f"afterany:{previous}"
        if launch.cluster == "slurm" and extra:
            executor.update_parameters(slurm_additional_parameters=extra)
        with executor.batch():
            jobs = [executor.submit(SubmititWorker(study_file, str(out), phase=phase, **common)) for _ in range(n)]
        ids = [str(j.job_id) for j in jobs]
        array = ids[0].split("_")[0]
        result["arrays"].append({"phase": "search" if phase == "search" else "transfer" if previous else "all",
                                 "array": array, "jobs": ids, "job_objects": jobs})
        previous = array
    return result
