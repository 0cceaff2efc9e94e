"""``--cluster slurm``: the options, and the job script dask-jobqueue generates from them (no
SLURM here, so nothing is submitted)."""

import shutil
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.preprocess import main
from pipeline.compute.slurm import SlurmOptions, parse_slurm_time
from pipeline.errors import ConfigError


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 5400), ("90:30", 5430), ("04:00:00", 14400), ("1-12", 129600), ("1-12:30", 131400), ("2-00:00:10", 172810)],
)
def test_slurm_time_formats(text, seconds):
    assert parse_slurm_time(text) == seconds


def test_the_job_script_asks_for_the_options_and_workers_retire_before_the_walltime(tmp_path):
    options = SlurmOptions(
        jobs=3,
        cores=6,
        memory="24GB",
        walltime="02:00:00",
        queue="cpu",
        account="fer-lab",
        directives=("--constraint=avx2",),
        log_directory=str(tmp_path / "logs"),
    )
    script = options.job_script()
    directives = [line for line in script.splitlines() if line.startswith("#SBATCH")]
    for expected in ("-p cpu", "-A fer-lab", "--cpus-per-task=6", "-t 02:00:00", "--constraint=avx2", "-n 1"):
        assert f"#SBATCH {expected}" in directives, (expected, directives)
    assert any(line.startswith("#SBATCH --mem=") for line in directives)
    assert f"#SBATCH -o {tmp_path / 'logs'}" in script
    command = script.strip().splitlines()[-1].split()
    assert command[:3] == [sys.executable, "-m", "distributed.cli.dask_worker"]
    value = {flag: command[i + 1] for i, flag in enumerate(command[:-1]) if flag.startswith("--")}
    assert value["--nworkers"] == "6" and value["--nthreads"] == "1"
    lifetime, stagger = int(value["--lifetime"].rstrip("s")), int(value["--lifetime-stagger"].rstrip("s"))
    assert (lifetime, stagger) == (105 * 60, 5 * 60)  # walltime less 15 min, +/- 5 min
    assert lifetime + stagger < parse_slurm_time("02:00:00")


def test_a_lifetime_reaching_the_walltime_is_refused():
    with pytest.raises(ConfigError, match="workers must retire before the walltime"):
        SlurmOptions(walltime="01:00:00", lifetime="58m")
    with pytest.raises(ConfigError, match="not a SLURM time"):
        SlurmOptions(walltime="two hours")
    with pytest.raises(ConfigError, match="not a duration"):
        SlurmOptions(stagger="soon")


def test_the_cli_prints_the_job_script_and_refuses_without_slurm(tmp_path):
    runner = CliRunner()
    printed = runner.invoke(
        main,
        [
            str(tmp_path / "s.zarr"),
            "--dataset",
            "sample",
            "--cluster",
            "slurm",
            "--slurm-walltime",
            "08:00:00",
            "--slurm-cores",
            "4",
            "--slurm-job-script",
        ],
    )
    assert printed.exit_code == 0 and "#SBATCH -t 08:00:00" in printed.output and "--lifetime 27900s" in printed.output
    assert not (tmp_path / "s.zarr").exists()

    stray = runner.invoke(main, [str(tmp_path / "s.zarr"), "--dataset", "sample", "--slurm-queue", "cpu"])
    assert stray.exit_code == 2 and "need --cluster slurm" in stray.output
    both = runner.invoke(
        main, [str(tmp_path / "s.zarr"), "--dataset", "sample", "--cluster", "slurm", "--workers", "2"]
    )
    assert both.exit_code == 2 and "leave out --scheduler and --workers" in both.output
    if shutil.which("sbatch") is None:
        refused = runner.invoke(main, [str(tmp_path / "s.zarr"), "--dataset", "sample", "--cluster", "slurm"])
        assert refused.exit_code == 1 and "needs SLURM's sbatch on PATH" in refused.output
        assert not Path(tmp_path / "s.zarr").exists()
