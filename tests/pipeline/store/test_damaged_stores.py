"""Damaged and hostile stores are refused with a clear message, by every tool and over every
kind of location; data damage that the metadata cannot show is named by verify."""

import re
import shutil
import zipfile

import numpy as np
import pytest
from click.testing import CliRunner

from cli.store import main as store_cli
from cli.train import evaluate as eval_cli
from cli.train import main as train_cli
from pipeline.errors import StoreError
from pipeline.store import open_store
from pipeline.store.shard_format import ChunkDamagedError
from pipeline.tools.pack import pack_store
from pipeline.tools.verify import verify_store
from pipeline.tools.viewer_media import write_sample_views
from tests.support.damaged_stores import CORPUS, READ_DAMAGE, delete_image_shard, make_damaged, set_field
from tests.support.servers import NGINX, nginx, put_in_bucket, s3_server, store_server


def run_cli(command, *args) -> tuple[int, str]:
    """Exit status and output of a click command run in-process; a traceback fails the test."""
    result = CliRunner().invoke(command, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"{command.name} {args} raised instead of refusing") from result.exception
    return result.exit_code, result.output


def test_the_corpus_has_at_least_twenty_kinds():
    assert len(CORPUS) >= 20 and len({entry.kind for entry in CORPUS}) == len(CORPUS)


@pytest.mark.parametrize("entry", CORPUS, ids=[entry.kind for entry in CORPUS])
def test_each_damaged_store_is_refused_or_named_by_verify(entry, fer_store, tmp_path):
    location = make_damaged(fer_store, tmp_path, entry)
    faults = [str(fault) for fault in verify_store(str(location))]
    assert any(entry.expected in fault for fault in faults), faults
    code, output = run_cli(store_cli, "verify", location)
    assert code == 1 and entry.expected in output
    if entry.caught_on == "opening":
        with pytest.raises(StoreError) as refused:
            open_store(location)
        assert entry.expected in str(refused.value)
        code, output = run_cli(store_cli, "info", location)
        assert code == 1 and entry.expected in output, output


def test_every_tool_refuses_a_hostile_store(fer_store, tmp_path):
    location = make_damaged(fer_store, tmp_path, CORPUS[0])  # 10**15 samples
    expected = CORPUS[0].expected
    for args in (
        ["info", location],
        ["ls", location],
        ["show", location, "--out", tmp_path / "s.png"],
        ["show", location, "--list"],
        ["diff", fer_store, location],
    ):
        code, output = run_cli(store_cli, *args)
        assert code == 1 and expected in output, (args, output)
    code, output = run_cli(train_cli, "--store", location, "--epochs", "1", "--out", tmp_path / "run")
    assert code == 1 and expected in output, output
    assert not (tmp_path / "s.png").exists() and not (tmp_path / "run" / "log.jsonl").exists()


def test_training_names_a_damaged_chunk_instead_of_a_traceback(fer_store, tmp_path):
    location = make_damaged(fer_store, tmp_path, next(e for e in CORPUS if e.kind == "truncated shard"))
    code, output = run_cli(
        train_cli,
        "--store",
        location,
        "--model",
        "guided-stn",
        "--option",
        "guidance=heatmap",
        "--epochs",
        "1",
        "--out",
        tmp_path / "run",
    )
    assert code == 1 and "heatmap/c/1/0/0/0 (samples 32-63)" in output and "fer-store verify" in output, output


@pytest.fixture(scope="module")
def intact_run(fer_store, tmp_path_factory):
    """A one-epoch cnn run on the intact store (its checkpoint scores damaged copies)."""
    out = tmp_path_factory.mktemp("intact-run") / "run"
    code, output = run_cli(train_cli, "--store", fer_store, "--epochs", "1", "--no-progress", "--out", out)
    assert code == 0, output
    return out


@pytest.mark.parametrize("entry", READ_DAMAGE, ids=[entry.kind for entry in READ_DAMAGE])
def test_training_and_evaluation_stop_on_what_the_store_does_not_vouch_for(entry, fer_store, intact_run, tmp_path):
    """Damage that opens and decodes cleanly (a chunk file missing, moved or rewritten with a
    valid crc32c) stops training and evaluation, naming the array's shard and its samples;
    verify names it too."""
    location = make_damaged(fer_store, tmp_path, entry)
    assert verify_store(str(location)), "verify found nothing"
    damaged = re.compile(entry.expected + ".*(differ from what was written|no checksums)")
    out = tmp_path / "run"
    code, output = run_cli(train_cli, "--store", location, "--epochs", "1", "--no-progress", "--out", out)
    assert code == 1 and damaged.search(output) and "fer-store verify" in output, output
    assert not (out / "log.jsonl").exists()
    code, output = run_cli(eval_cli, "--checkpoint", intact_run / "best.pt", "--store", location)
    assert code == 1 and damaged.search(output), output
    with pytest.raises(ChunkDamagedError, match=damaged):  # the viewer's images and records
        write_sample_views(open_store(location), np.arange(84), tmp_path / "media")


def test_a_chunk_missing_over_http_and_s3_stops_training(fer_store, tmp_path, monkeypatch):
    """A shard file answered 404 by a server, or missing from a bucket, reads as zeros to zarr:
    training stops on it as on a local store."""
    store = tmp_path / "remote" / "fer.zarr"
    shutil.copytree(fer_store, store)
    delete_image_shard(store)
    with store_server(store) as url, s3_server(monkeypatch):
        put_in_bucket(store, "s3://damaged-stores/fer.zarr")
        for location in (url, "s3://damaged-stores/fer.zarr"):
            out = tmp_path / f"run-{location.split(':')[0]}"
            code, output = run_cli(train_cli, "--store", location, "--epochs", "1", "--no-progress", "--out", out)
            assert code == 1 and "image/c/1/0/0/0 (samples 32-63)" in output, (location, output)


def hostile(fer_store, tmp_path):
    """A copy of the store whose image array claims 10**15 samples."""
    store = tmp_path / "hostile" / "fer.zarr"
    shutil.copytree(fer_store, store)
    set_field("image", ("shape",), [10**15, 1, 48, 48])(store)
    return store


def test_remote_and_zipped_hostile_stores_are_refused_the_same_way(fer_store, tmp_path, monkeypatch):
    store = hostile(fer_store, tmp_path)
    expected = CORPUS[0].expected
    locations = []
    packed = tmp_path / "fer.zarr.zip"
    pack_store(fer_store, packed)  # pack refuses a hostile store, so the damage goes into the zip afterwards
    with zipfile.ZipFile(packed) as source, zipfile.ZipFile(tmp_path / "hostile.zarr.zip", "w") as target:
        for item in source.infolist():
            if item.filename in ("zarr.json", "image/zarr.json"):
                target.write(store / item.filename, item.filename)
            else:
                target.writestr(item, source.read(item))
    locations.append(tmp_path / "hostile.zarr.zip")
    with store_server(store) as url, s3_server(monkeypatch):
        locations.append(url)
        put_in_bucket(store, "s3://hostile-stores/fer.zarr")
        locations.append("s3://hostile-stores/fer.zarr")
        if NGINX:
            with nginx(tmp_path / "hostile", tmp_path / "nginx") as base:
                locations.append(f"{base}/fer.zarr")
                for location in locations:
                    check_refused(location, expected)
        else:
            for location in locations:
                check_refused(location, expected)


def check_refused(location, expected):
    for command in ("info", "verify"):
        code, output = run_cli(store_cli, command, location)
        assert code == 1 and expected in output, (location, command, output)
