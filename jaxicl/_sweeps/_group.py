"""One compiled group of a sweep: a study's members trained in step chunks.

The group builds its study's objective, optimizer, move and observer once, so every step
chunk reuses one compiled program. Keys come from the runner: member seed s starts from
`fold_in(init_key, s)` (the same draw at every grid point), and the data of step t is drawn
from `fold_in(data_key, t)` by the trainer.
"""

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

from .._train._lowering import compile_ensemble_steps, ensemble_steps_shapes
from .._train._members import member_devices
from .._train._objectives import AbstractObjective
from .._train._options import Members, Record, no_observables
from .._train._state import init_ensemble_state
from .._train._step import StepProgram, run_steps
from .._train._trainer import resolved_member_chunk, train_ensemble_steps
from . import _compaction as compaction
from ._member_values import member_optimizer, member_optimizer_state, unused_inputs
from ._study import AbstractStudy


@eqx.filter_jit
def _init_states(study: AbstractStudy, optimizer, init_key, values: dict, seeds):
    """One compiled program per group draws every member's initial state (drawn eagerly, an
    init of many small operations would compile each one)."""
    keys = jax.vmap(lambda s: jr.fold_in(init_key, s))(seeds)
    models = eqx.filter_vmap(study.initial_model)(values, keys)
    states = init_ensemble_state(models, optimizer)
    # each member's optimizer is built from its own member-axis values
    params = eqx.filter(models, eqx.is_inexact_array)
    opt_states = eqx.filter_vmap(lambda p, v: member_optimizer_state(study, p, v))(params, values)
    states = eqx.tree_at(lambda s: s.opt_state, states, opt_states)
    # a member's own data stream (per-member data) is its seed's, wherever it runs
    return eqx.tree_at(lambda s: s.member, states, seeds)


@eqx.filter_jit
def _series(study: AbstractStudy, trajectory):
    return jax.vmap(study.series)(trajectory)


@eqx.filter_jit
def _summaries(study: AbstractStudy, states, series: dict):
    """The study's summaries, with the divergence flag always among them (a study's own
    `summarize` may leave it out; a diverged member is never stored as a healthy one), and the
    stop flag where the study has a `stop` rule (a stopped member is never stored as one
    trained to the end)."""
    flags = {"diverged": lambda state: state.diverged}
    if study.stop() is not None:
        flags["stopped"] = lambda state: state.stopped

    def one(state, member_series):
        summaries = study.summarize(state, member_series)
        added = {
            name: flag(state)
            for name, flag in flags.items()
            if name not in summaries and name not in member_series  # the study records it
        }
        return {**added, **summaries}

    return jax.vmap(one)(states, series)


def _build_parts(study: AbstractStudy) -> tuple:
    observe = study.observe() or no_observables
    parts = study.objective(), member_optimizer(study), observe, study.after_step()
    return (*parts, study.stop())


_cached_parts = functools.lru_cache(maxsize=64)(_build_parts)


def _parts(study: AbstractStudy) -> tuple:
    """The objective, the per-member optimizer and the moves of a study, built once per study
    value in a process: compiled programs are cached on these objects (functions by
    identity), so a second sweep of the same study reuses every program of the first. A
    study with unhashable settings builds them afresh."""
    try:
        return _cached_parts(study)
    except TypeError:  # unhashable settings (e.g. an array field)
        return _build_parts(study)


# memory analyses by (study, members, records, member-value dtypes): each compiles a program
_ANALYSES: dict = {}


class Group:
    """The members of one group of the grid, for the runner."""

    def __init__(self, study: AbstractStudy, *, init_key, data_key, matmul_precision="highest"):
        self.study = study
        self.matmul_precision = matmul_precision
        self.init_key, self.data_key = init_key, data_key
        self.n_records, self.record_every = study.schedule()
        self.time = np.asarray(study.time())
        self.objective, self.optimizer, self.observe, self.after_step, self.stop = _parts(study)
        self.shared_data = type(study).shared_data
        # frozen members are left out of training only where their records can be repeated
        self.compacts = compaction.deterministic(self.objective)

    def record(self, every: int | None = None) -> Record:
        return Record(every=every, observe=self.observe, stop=self.stop)

    def init(self, member_values: dict, seeds):
        """Stacked states of these members (`member_values`: every member axis → one value per
        member; `seeds`: each member's seed, an integer array)."""
        values = {name: jnp.asarray(v) for name, v in member_values.items()}
        seeds = jnp.asarray(seeds, jnp.int32)
        return _init_states(self.study, self.optimizer, self.init_key, values, seeds)

    def advance(self, states, n_records: int, frozen=None):
        """`(states, {name: (members, n_records, *dims) array}, frozen)`: `n_records` more
        records. `frozen` (what the previous call returned; None: none known, or a study whose
        records cannot be repeated) names members frozen for good: they are not trained, their
        records repeat (`_compaction.py`)."""
        diverged_before = np.asarray(states.diverged)
        n_members = diverged_before.shape[0]
        live = np.arange(n_members)
        if self.compacts and frozen is not None:
            live = np.flatnonzero(~frozen.frozen)
        # A compacting unit maps its members in chunks of one shape, whole or compacted: XLA
        # may sum a member's numbers in another order at another shape (`_compaction.py`).
        chunk = self._unit_chunk(states) if self.compacts else type(self.study).member_chunk
        if live.size == n_members:
            states, trajectory = self._train(states, n_records, chunk)
        else:
            steps = n_records * self.record_every
            trajectory = compaction.repeated(frozen.last, n_records, self.record_every)
            trained = compaction.advance_frozen(states, steps)
            if live.size:
                n_devices = member_devices(True, n_members)
                size = compaction.live_size(live.size, n_members, n_devices, chunk)
                index = np.concatenate([live, np.full(size - live.size, live[0])])
                live_states, live_trajectory = self._train(
                    compaction.take(states, index), n_records, chunk
                )
                trained = compaction.merge(trained, index, live_states, live.size)
                trajectory = compaction.merge(trajectory, index, live_trajectory, live.size)
            states = trained
        series = _series(self.study, trajectory)
        if self.compacts:  # which members the next chunk may leave out
            frozen = compaction.frozen_after(diverged_before, trajectory)
        return states, {name: np.asarray(v) for name, v in series.items()}, frozen

    def _unit_chunk(self, states) -> int | None:
        """The chunk the study's `member_chunk` resolves to for this whole unit."""
        return resolved_member_chunk(
            states,
            self.objective,
            self.optimizer,
            members=Members(chunk=type(self.study).member_chunk),
            observe=self.observe,
            after_step=self.after_step,
            shared_data=self.shared_data,
            matmul_precision=self.matmul_precision,
        )

    def _train(self, states, n_records: int, chunk):
        return train_ensemble_steps(
            states,
            self.objective,
            self.optimizer,
            steps=n_records * self.record_every,
            key=self.data_key,
            record=self.record(self.record_every),
            members=Members(chunk=chunk),
            after_step=self.after_step,
            shared_data=self.shared_data,
            matmul_precision=self.matmul_precision,
        )

    def summarize(self, states, series: dict) -> dict:
        """`{name: (members,) array}` from the final states and the members' whole series."""
        arrays = {name: jnp.asarray(v) for name, v in series.items()}
        return {name: np.asarray(v) for name, v in _summaries(self.study, states, arrays).items()}

    def unused_member_axes(self, member_values: dict, axes: tuple[str, ...]) -> tuple[str, ...]:
        """Those of the swept member `axes` that nothing one member computes (its initial
        model, steps, records, summaries) depends on, from the traced program alone."""
        if not axes:
            return ()
        fixed = {n: jnp.asarray(v[:1]) for n, v in member_values.items() if n not in axes}

        def one_member(swept):
            states = self.init({**fixed, **swept}, jnp.zeros(1, jnp.int32))
            program = StepProgram(  # the whole run: traced, never compiled
                self.n_records * self.record_every,
                self.record(self.record_every),
                self.after_step,
                self.shared_data,
            )
            start = jnp.zeros((), jnp.int32)
            states, trajectory = run_steps(
                states, self.objective, self.optimizer, self.data_key, start, program
            )
            series = _series(self.study, trajectory)
            return series, _summaries(self.study, states, series)

        swept = {n: jnp.asarray(member_values[n][:1]) for n in axes}
        return unused_inputs(one_member, swept)

    def dtypes(self, member_values: dict) -> tuple[dict, dict]:
        """From tracing alone: the series as `{name: (dtype, shape per record)}` and the
        summaries as `{name: (dtype, shape per member)}`."""
        states = self._abstract_states(member_values, 1)
        states, trajectory = ensemble_steps_shapes(
            states,
            self.objective,
            self.optimizer,
            steps=self.record_every,
            record=self.record(self.record_every),
            after_step=self.after_step,
            shared_data=self.shared_data,
        )
        series = jax.eval_shape(jax.vmap(self.study.series), trajectory)
        self._check_series(series)
        whole = {
            name: jax.ShapeDtypeStruct((1, self.n_records, *s.shape[2:]), s.dtype)
            for name, s in series.items()
        }
        summaries = jax.eval_shape(lambda s, w: _summaries(self.study, s, w), states, whole)
        self._check_summaries(summaries)
        return (
            {name: (np.dtype(s.dtype), tuple(s.shape[2:])) for name, s in series.items()},
            {name: (np.dtype(s.dtype), tuple(s.shape[1:])) for name, s in summaries.items()},
        )

    def _check_dict(self, kind: str, out) -> str:
        name = type(self.study).__name__
        if not isinstance(out, dict):
            raise ValueError(f"{name}.{kind} must return a dict of arrays, got {out!r}.")
        return name

    def _check_series(self, series) -> None:
        """One value per record, or an array of the rank `series_dims` names."""
        self._check_ranks("series", series, type(self.study).series_dims, "per record", 2)

    def _check_summaries(self, summaries) -> None:
        """One scalar per member, or an array of the rank `summary_dims` names."""
        self._check_ranks("summarize", summaries, type(self.study).summary_dims, "per member", 1)

    def _check_ranks(self, kind: str, out, dims: dict, per: str, leading: int) -> None:
        name = self._check_dict(kind, out)
        where = "series_dims" if kind == "series" else "summary_dims"
        for key, s in out.items():
            named = dims.get(key, ())
            if s.ndim != leading + len(named):
                said = f"`{where}` names {named}" if named else f"it is not in `{where}`"
                raise ValueError(
                    f"{name}.{kind}()['{key}'] has shape {s.shape[leading:]} {per}, but {said}; "
                    f"the store holds one value {per}, or an array {per} whose dimensions "
                    f"`{where}` names."
                )

    def _abstract_states(self, member_values: dict, n_members: int):
        """The stacked states of `n_members` members as shapes only (nothing allocated, not
        even their seeds)."""
        values = {
            name: jax.ShapeDtypeStruct((n_members,), np.asarray(v).dtype)
            for name, v in member_values.items()
        }
        seeds = jax.ShapeDtypeStruct((n_members,), np.int32)
        return jax.eval_shape(self.init, values, seeds)

    def memory(self, member_values: dict, n_members: int, n_records: int) -> int:
        """XLA's memory analysis (bytes) of one call of `n_members` members, all at once."""
        arguments, outputs, temporaries = self._memory_analysis(member_values, n_members, n_records)
        return arguments + outputs + temporaries

    def temporary_bytes(self, member_values: dict, n_records: int) -> int:
        """XLA's temporary bytes of one member's call: what any call needs beside its states,
        however its members are chunked (a chunk holds at least one member)."""
        return self._memory_analysis(member_values, 1, n_records)[2]

    def _memory_analysis(self, member_values: dict, n_members: int, n_records: int):
        """(argument, output, temporary) bytes, compiled once per study value and sizes in a
        process (the analysis compiles the whole program)."""
        dtypes = tuple((name, np.asarray(v).dtype.str) for name, v in sorted(member_values.items()))
        key = (self.study, n_members, n_records, dtypes)
        try:
            return _ANALYSES[key]
        except TypeError:  # unhashable settings: analyse every time
            return self._analyse(member_values, n_members, n_records)
        except KeyError:
            if len(_ANALYSES) >= 64:
                _ANALYSES.pop(next(iter(_ANALYSES)))
            found = _ANALYSES[key] = self._analyse(member_values, n_members, n_records)
            return found

    def _analyse(self, member_values: dict, n_members: int, n_records: int):
        compiled = compile_ensemble_steps(
            self._abstract_states(member_values, n_members),
            self.objective,
            self.optimizer,
            steps=n_records * self.record_every,
            record=self.record(),
            after_step=self.after_step,
            shared_data=self.shared_data,
        )
        analysis = compiled.memory_analysis()
        return (
            int(analysis.argument_size_in_bytes),
            int(analysis.output_size_in_bytes),
            int(analysis.temp_size_in_bytes),
        )

    def minimum_bytes(self, member_values: dict, n_members: int) -> int:
        """A lower bound on the memory of one call of `n_members` members, from shapes alone
        (no compilation): their states twice (a call's input states stay alive beside its
        results) and one step's data (every member's, when each draws its own)."""
        one = self._abstract_states(member_values, 1)  # every leaf has the member axis
        total = 2 * n_members * sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(one))
        if isinstance(self.objective, AbstractObjective):
            data = jax.eval_shape(self.objective.draw, self.data_key)
            per_draw = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(data))
            total += per_draw * (1 if self.shared_data else n_members)
        return int(total)
