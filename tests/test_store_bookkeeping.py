"""Damaged bookkeeping costs only the units it covers: flags, checksums and checkpoints are
repaired unit by unit at resume (one line each), never "delete the store"."""

import shutil

import numpy as np
import pytest

from jaxicl import ReducedAllocation, sweep
from jaxicl._sweeps import _group as group_module
from jaxicl._sweeps._store import describe_store


STUDY = ReducedAllocation(d=9, horizon=2.0, n_records=4)
KWARGS = dict(grid={"heads": [2, 3]}, seeds=2, members_per_call=1, chunk_records=2)


class _Stop(Exception):
    pass


def _stop_after(n_chunks):
    seen = []

    def on_chunk(unit, chunk):
        seen.append((unit, chunk))
        if len(seen) == n_chunks:
            raise _Stop

    return on_chunk


@pytest.fixture(scope="module")
def reference():
    return sweep(STUDY, **KWARGS, progress=False)


def _finish(store, monkeypatch):
    """Resume the sweep; return its dataset and the units whose first chunk ran again."""
    ran = []
    real_advance = group_module.Group.advance

    def advance(self, states, steps, frozen=None):
        ran.append(int(np.asarray(states.member)[0]))
        return real_advance(self, states, steps, frozen)

    monkeypatch.setattr(group_module.Group, "advance", advance)
    data = sweep(STUDY, **KWARGS, store=store, progress=False)
    return data, ran


def _assert_equal(data, reference):
    for name in reference.data_vars:
        np.testing.assert_array_equal(data[name].values, reference[name].values, err_msg=name)


def _damage_header(path):
    data = bytearray(path.read_bytes())
    data[:4] = b"\xff\xff\xff\xff"
    path.write_bytes(bytes(data))


@pytest.fixture
def complete(tmp_path, reference):
    store = tmp_path / "store"
    sweep(STUDY, **KWARGS, store=store, progress=False)
    return store


@pytest.fixture
def partial(tmp_path):
    """Unit 0 done, unit 1 stopped after its first of two step chunks, units 2 and 3 not run."""
    store = tmp_path / "store"
    with pytest.raises(_Stop):
        sweep(STUDY, **KWARGS, store=store, progress=False, on_chunk=_stop_after(3))
    return store


def test_an_unreadable_flag_reruns_its_unit_only(complete, reference, monkeypatch, capsys):
    _damage_header(complete / "chunk_done" / "c" / "2" / "1")
    assert "units [2]" in describe_store(complete)
    data, _ = _finish(complete, monkeypatch)
    assert "units [2] had unreadable flags or checksums" in capsys.readouterr().err
    _assert_equal(data, reference)


def test_an_unreadable_checksum_reruns_its_unit_only(complete, reference, monkeypatch, capsys):
    _damage_header(complete / "chunk_digest" / "c" / "1" / "0")
    data, ran = _finish(complete, monkeypatch)
    assert "units [1] had unreadable flags or checksums" in capsys.readouterr().err
    assert len(ran) == 2  # unit 1's two step chunks, nothing else
    _assert_equal(data, reference)


def test_lost_flags_are_rebuilt_from_the_checksums(complete, reference, monkeypatch, capsys):
    (complete / "chunk_done" / "zarr.json").unlink()
    assert "complete: 0 of 4 units" in describe_store(complete)  # unknown, not claimed
    data, ran = _finish(complete, monkeypatch)
    assert "rebuilt from the checksums" in capsys.readouterr().err
    assert ran == []  # every finished unit kept
    _assert_equal(data, reference)
    assert "complete: 4 of 4 units" in describe_store(complete)


def test_lost_checksums_rerun_every_unit(complete, reference, monkeypatch, capsys):
    shutil.rmtree(complete / "chunk_digest")
    data, ran = _finish(complete, monkeypatch)
    assert "every unit runs again" in capsys.readouterr().err
    assert len(ran) == 8
    _assert_equal(data, reference)


@pytest.mark.parametrize(
    "damage, why",
    [
        (lambda store: (store / "resume" / "unit-000001.npz").unlink(), "is missing"),
        (lambda store: (store / "resume" / "unit-000001.npz").write_bytes(b"PK\x03"), "is damaged"),
        (lambda store: shutil.rmtree(store / "resume"), "is missing"),
    ],
)
def test_a_lost_checkpoint_reruns_its_unit_only(
    partial, reference, monkeypatch, capsys, damage, why
):
    damage(partial)
    data, ran = _finish(partial, monkeypatch)
    err = capsys.readouterr().err
    assert f"the checkpoint of unit 1 {why}; running that unit again" in err
    assert "delete" not in err
    assert len(ran) == 6  # unit 1 from its start (2 chunks) and units 2, 3 (2 each)
    _assert_equal(data, reference)


@pytest.mark.parametrize(
    "damage, why",
    [
        (lambda path: path.write_text("{not json"), "damaged"),
        (lambda path: path.unlink(), "missing"),
    ],
)
def test_array_metadata_is_rebuilt_and_its_records_kept(
    complete, reference, monkeypatch, capsys, damage, why
):
    damage(complete / "loss" / "zarr.json")
    if why == "damaged":
        with pytest.raises(ValueError, match="loss/zarr.json is damaged"):
            describe_store(complete)
    data, ran = _finish(complete, monkeypatch)
    assert "the metadata of `loss`" in capsys.readouterr().err
    assert ran == []  # the chunk files were kept and read back as written
    _assert_equal(data, reference)


def test_a_lost_checkpoint_group_is_recreated_quietly(complete, reference, monkeypatch, capsys):
    (complete / "resume" / "zarr.json").unlink()
    assert "complete: 4 of 4 units" in describe_store(complete)  # no warning (an error here)
    data, ran = _finish(complete, monkeypatch)
    assert "(resume/) was missing: recreated" in capsys.readouterr().err
    assert ran == []
    _assert_equal(data, reference)


@pytest.mark.parametrize("chunk_records", [4, "auto"])
def test_the_loser_of_a_creation_race_takes_the_winners_layout(
    tmp_path, reference, monkeypatch, chunk_records
):
    """Another process creates the store (2 records a chunk) after this one looked and found
    none: this one either adopts the stored layout ("auto") or is refused in one line before
    it runs (an explicit other size), never a run cut two ways."""
    from jaxicl._sweeps import _store as store_io

    store = tmp_path / "store"
    looks = []
    real = store_io.stored_layout

    def racing(path, plan):
        looks.append(path)
        if len(looks) == 1:  # the look before creating: the winner is not there yet
            sweep(STUDY, **KWARGS, store=store, progress=False)
            return None
        return real(path, plan)

    monkeypatch.setattr(store_io, "stored_layout", racing)
    loser = dict(KWARGS, chunk_records=chunk_records)
    if chunk_records == 4:
        with pytest.raises(ValueError, match="cut with chunk_records = 2"):
            sweep(STUDY, **loser, store=store, progress=False)
    else:
        _assert_equal(sweep(STUDY, **loser, store=store, progress=False), reference)
    assert "complete: 4 of 4 units" in describe_store(store)
