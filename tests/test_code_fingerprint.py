"""A store records the code its numbers came from: resuming under an edited study is refused in
one line naming the class, unless the change is accepted explicitly, which the store records."""

import importlib
import sys

import pytest
import zarr

import jaxicl
from jaxicl._sweeps._store import describe_store


STUDY = """
from typing import ClassVar
import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
import optax
import jaxicl
from jaxicl._sweeps._store import describe_store


class Point(eqx.Module):
    w: jnp.ndarray


class Drift(jaxicl.AbstractStudy):
    learning_rate: float = 0.1
    member_axes: ClassVar[tuple[str, ...]] = ("learning_rate",)

    def initial_model(self, values, key):
        return Point(jr.normal(key, (2,)))

    def objective(self):
        return lambda model, key: jnp.sum((model.w - TARGET) ** 2)

    def optimizer(self):
        return optax.sgd(self.learning_rate)

    def schedule(self):
        return 4, 2


TARGET = 1.0
"""


class _Stop(Exception):
    pass


def _stop(unit, chunk):
    raise _Stop


def test_resume_with_edited_study_code_is_refused_unless_accepted(tmp_path, monkeypatch):
    module = tmp_path / "drift_study.py"
    module.write_text(STUDY)
    monkeypatch.syspath_prepend(str(tmp_path))
    study = importlib.import_module("drift_study").Drift()
    store = tmp_path / "store"
    kwargs = dict(grid={"learning_rate": [0.05, 0.1]}, seeds=2, store=store, chunk_records=1)
    with pytest.raises(_Stop):
        jaxicl.sweep(study, on_chunk=_stop, progress=False, **kwargs)
    module.write_text(STUDY.replace("TARGET = 1.0", "TARGET = 2.0"))  # edited between runs
    sys.modules.pop("drift_study")
    study = importlib.import_module("drift_study").Drift()
    with pytest.raises(ValueError, match="other code of drift_study.Drift") as refused:
        jaxicl.sweep(study, progress=False, **kwargs)
    assert "allow_code_change=True" in str(refused.value)
    assert "\n" not in str(refused.value)
    done = jaxicl.sweep(study, progress=False, allow_code_change=True, **kwargs)
    assert done["loss"].notnull().all()
    changes = zarr.open_group(str(store), mode="r").attrs["code_changes"]
    assert len(changes) == 1
    assert changes[0]["from"]["source"] != changes[0]["to"]["source"]
    # the same code again resumes (here: reopens the finished store) without a word
    jaxicl.sweep(study, progress=False, **kwargs)


def test_inspect_names_the_code_and_a_leftover_creation(tmp_path, monkeypatch):
    module = tmp_path / "drift_study.py"
    module.write_text(STUDY)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("drift_study", None)
    study = importlib.import_module("drift_study").Drift()
    store = tmp_path / "store"
    jaxicl.sweep(study, seeds=1, store=store, progress=False)
    (tmp_path / ".store.building-abc123").mkdir()  # what a kill during creation leaves
    text = describe_store(store)
    assert "code: drift_study.Drift (source " in text
    assert ".store.building-abc123 is a creation of this store that was killed" in text
