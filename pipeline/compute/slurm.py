"""``--cluster slurm``: the Dask workers of a run as SLURM batch jobs (dask-jobqueue).

The scheduler runs inside ``fer-preprocess`` on the node it is started on (a login node, or a
job of its own), and ``jobs`` worker jobs are kept submitted. Each job runs ``cores``
single-threaded worker processes, as a local cluster does, sharing the job's ``memory``. A job is
killed by SLURM at its walltime, which would lose the shards in flight; so every worker retires
on its own after ``lifetime`` (give or take ``stagger``, so that not all retire at once), before
the walltime, and the cluster submits a fresh job in its place. A shard whose worker disappears
anyway is simply run again: shard writes are idempotent.
"""

from __future__ import annotations

import re
import shutil
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pipeline.errors import ConfigError

if TYPE_CHECKING:
    from dask_jobqueue.slurm import SLURMCluster

_SLURM_TIME = re.compile(r"^(?:(?P<days>\d+)-)?(?P<a>\d+)(?::(?P<b>\d+))?(?::(?P<c>\d+))?$")


def parse_slurm_time(text: str) -> int:
    """Seconds of a SLURM time limit: ``minutes``, ``minutes:seconds``, ``hours:minutes:seconds``,
    ``days-hours``, ``days-hours:minutes`` or ``days-hours:minutes:seconds`` (``sbatch --time``)."""
    match = _SLURM_TIME.match(text.strip())
    if not match:
        raise ConfigError(f"walltime {text!r} is not a SLURM time (for example 04:00:00, 90 or 1-12:00:00)")
    a = int(match["a"])
    days, b, c = (int(match[name]) if match[name] else None for name in ("days", "b", "c"))
    if days is not None:  # days-hours[:minutes[:seconds]]
        return ((days * 24 + a) * 60 + (b or 0)) * 60 + (c or 0)
    if c is not None:  # hours:minutes:seconds
        return (a * 60 + (b or 0)) * 60 + c
    return a * 60 + (b or 0)


def parse_duration(text: str, what: str) -> int:
    """Seconds of a Dask duration such as ``15m``, ``2h``, ``90s`` or ``5 minutes``."""
    from dask.utils import parse_timedelta

    try:
        return int(parse_timedelta(text, default="s"))
    except (ValueError, KeyError):
        raise ConfigError(f"{what} {text!r} is not a duration (for example 15m, 2h or 90s)") from None


@dataclass(frozen=True)
class SlurmOptions:
    """How to run the workers as SLURM jobs.

    Attributes:
        jobs: worker jobs kept submitted.
        cores: worker processes per job, one core each (``--cpus-per-task``).
        memory: memory per job (``--mem``), shared by its workers, e.g. ``16GB``.
        walltime: the job time limit (``--time``), e.g. ``04:00:00``.
        lifetime: how long a worker runs before it retires (Dask ``--lifetime``); default the
            walltime less 15 minutes.
        stagger: lifetimes are spread by up to this much either way; lifetime + stagger must end
            before the walltime.
        queue, account: ``--partition`` and ``--account``, if the site needs them.
        directives: further ``#SBATCH`` options, e.g. ``--constraint=avx2``.
        log_directory: where the jobs' output goes. [SLURM's default, the submit directory]
        python: the interpreter the jobs run (must see this package). [this one]
    """

    jobs: int = 4
    cores: int = 8
    memory: str = "16GB"
    walltime: str = "04:00:00"
    lifetime: str | None = None
    stagger: str = "5m"
    queue: str | None = None
    account: str | None = None
    directives: tuple[str, ...] = ()
    log_directory: str | None = None
    python: str | None = None

    def __post_init__(self) -> None:
        if self.jobs < 1 or self.cores < 1:
            raise ConfigError(f"--slurm-jobs and --slurm-cores must be at least 1, got {self.jobs} and {self.cores}")
        walltime = parse_slurm_time(self.walltime)
        lifetime, stagger = self.lifetime_seconds, parse_duration(self.stagger, "--slurm-stagger")
        if lifetime - stagger < 60 or lifetime + stagger >= walltime:
            raise ConfigError(
                f"workers must retire before the walltime: lifetime {lifetime // 60} min +/- stagger "
                f"{stagger // 60} min must end before walltime {self.walltime} ({walltime // 60} min) and last at "
                "least a minute; lengthen --slurm-walltime or shorten --slurm-lifetime / --slurm-stagger"
            )

    @property
    def lifetime_seconds(self) -> int:
        if self.lifetime is None:
            return parse_slurm_time(self.walltime) - 15 * 60
        return parse_duration(self.lifetime, "--slurm-lifetime")

    def cluster_arguments(self) -> dict[str, Any]:
        """Keyword arguments of ``dask_jobqueue.SLURMCluster``."""
        return {
            "cores": self.cores,
            "processes": self.cores,  # single-threaded workers, as on a local cluster
            "memory": self.memory,
            "walltime": self.walltime,
            "queue": self.queue,
            "account": self.account,
            "job_extra_directives": list(self.directives),
            "worker_extra_args": [
                "--lifetime",
                f"{self.lifetime_seconds}s",
                "--lifetime-stagger",
                f"{parse_duration(self.stagger, '--slurm-stagger')}s",
            ],
            "log_directory": self.log_directory,
            "python": self.python or sys.executable,
            "scheduler_options": {"dashboard_address": None},
        }

    def job_script(self) -> str:
        """The batch script each worker job is submitted with (nothing is submitted)."""
        from dask_jobqueue.slurm import SLURMCluster

        with SLURMCluster(**self.cluster_arguments()) as cluster:
            script: str = cluster.job_script()
            return script

    @staticmethod
    def check_submit_host() -> None:
        """Raises ConfigError unless SLURM's ``sbatch`` is on this machine's PATH."""
        if shutil.which("sbatch") is None:
            raise ConfigError("--cluster slurm needs SLURM's sbatch on PATH: run fer-preprocess on a SLURM login node")

    def start(self) -> SLURMCluster:
        """A ``SLURMCluster`` keeping :attr:`jobs` jobs submitted (a retired job is replaced).

        Raises:
            ConfigError: ``sbatch`` is not on this machine's PATH.
        """
        self.check_submit_host()
        from dask_jobqueue.slurm import SLURMCluster

        cluster = SLURMCluster(**self.cluster_arguments())
        cluster.adapt(minimum_jobs=self.jobs, maximum_jobs=self.jobs)
        return cluster
