"""The record of the sample a shard task is on: what a retry leaves out."""

from pipeline.compute.sample_in_progress import WRITING, SampleInProgress


def attempt_dying_on(store, index):
    """An attempt that dies on sample ``index`` (its process ends inside the block)."""
    record = SampleInProgress(store, 64).__enter__()
    record.mark(index)
    return record.died_on  # the process dies here: no __exit__


def test_a_sample_is_left_out_after_two_deaths_on_it_and_the_record_goes_when_the_shard_is_written(tmp_path):
    store = tmp_path / "s.zarr"
    assert attempt_dying_on(store, 5) == frozenset()
    assert attempt_dying_on(store, 5) == frozenset()  # one death proves nothing
    assert attempt_dying_on(store, 9) == {5}
    with SampleInProgress(store, 64) as record:
        assert record.died_on == {5}  # 9 killed only one attempt
        record.mark(WRITING)
    assert not (tmp_path / "s.zarr.in-progress").exists()


def test_a_record_cut_short_or_an_error_blames_no_sample(tmp_path):
    store = tmp_path / "s.zarr"
    folder = tmp_path / "s.zarr.in-progress"
    folder.mkdir()
    (folder / "64").write_text("")  # the disk filled as it was written
    with SampleInProgress(store, 64) as record:
        assert record.died_on == frozenset()
    try:
        with SampleInProgress(store, 64) as record:
            record.mark(3)
            raise OSError("a write failed")  # an error, not a death
    except OSError:
        pass
    assert attempt_dying_on(store, 7) == frozenset() and attempt_dying_on(store, 7) == frozenset()
    assert SampleInProgress(store, 64).__enter__().died_on == {7}
