"""Mapping members: over chunks inside a step (`map_members`), and over local devices
(`run_sharded`); how many devices share them, and the chunk "auto" chooses for a workload.

Members never interact, so how they are split changes no result beyond rounding: XLA may sum
a member's numbers in another order at another shape, so the bits are the same only for
members mapped in chunks of the same shape (what compaction relies on, `_sweeps/_compaction.py`).
"""

import equinox as eqx
import jax
import jax.lax as lax
import jax.numpy as jnp
import jax.tree_util as jtu

from .. import _validation as check
from ._member_chunk import auto_member_chunk


def map_members(fn, states, member_chunk):
    """Apply `fn` (stacked states of some members -> stacked results) to every member: all
    at once, or `member_chunk` at a time in a loop (and the remainder last).

    On CPU small chunks win: the (members × prompts × heads × context) score tensor of one
    chunk stays in cache instead of streaming through memory.
    """
    arrays, static = eqx.partition(states, eqx.is_array)

    def on_arrays(member_arrays):
        return fn(eqx.combine(member_arrays, static))

    if member_chunk is None:
        return on_arrays(arrays)
    n_members = jtu.tree_leaves(arrays)[0].shape[0]
    n_chunks = n_members // member_chunk
    split = n_chunks * member_chunk
    chunked = jtu.tree_map(
        lambda x: x[:split].reshape(n_chunks, member_chunk, *x.shape[1:]), arrays
    )
    out = jtu.tree_map(lambda x: x.reshape(split, *x.shape[2:]), lax.map(on_arrays, chunked))
    if split == n_members:
        return out
    rest = on_arrays(jtu.tree_map(lambda x: x[split:], arrays))
    return jtu.tree_map(lambda a, b: jnp.concatenate([a, b]), out, rest)


def member_devices(shard_members, n_members) -> int:
    """How many local devices share the members: all of them when they divide the count."""
    if not isinstance(shard_members, bool):
        raise ValueError(f"`shard_members` must be True or False, got {shard_members!r}.")
    n_devices = jax.local_device_count()
    return n_devices if shard_members and n_devices > 1 and n_members % n_devices == 0 else 1


def run_sharded(run, states, objective, optimizer, key, start_step, program, n_devices):
    """`run` (the single-device loop) with the member axis split over `n_devices` local devices
    (one program each); shared data is drawn from the same key on every device."""
    return _sharded(run, states, objective, optimizer, key, start_step, program, n_devices)


@eqx.filter_jit
def _sharded(run, states, objective, optimizer, key, start_step, program, n_devices):
    mesh = jax.sharding.Mesh(jax.local_devices()[:n_devices], ("members",))
    arrays, static = eqx.partition(states, eqx.is_array)
    out_static = []  # shard_map returns arrays only; keep the rest from its single trace

    def local_run(local_arrays, key, start_step):
        out = run(eqx.combine(local_arrays, static), objective, optimizer, key, start_step, program)
        out_arrays, rest = eqx.partition(out, eqx.is_array)
        out_static.append(rest)
        return out_arrays

    members, replicated = jax.sharding.PartitionSpec("members"), jax.sharding.PartitionSpec()
    sharded = jax.shard_map(
        local_run,
        mesh=mesh,
        in_specs=(members, replicated, replicated),
        out_specs=members,
        check_vma=False,
    )
    out_arrays = sharded(arrays, key, start_step)
    return eqx.combine(out_arrays, out_static[-1])


def _workload_key(tree) -> tuple:
    """A hashable key of a workload as jit keys its cache: the tree's structure, its arrays'
    shapes and dtypes, and its other leaves (functions and static settings) themselves."""
    leaves, treedef = jtu.tree_flatten(tree)
    return treedef, tuple((x.shape, x.dtype) if eqx.is_array(x) else x for x in leaves)


class AutoChunks:
    """The chunks "auto" chose, by workload (structure, shapes and static leaves, as jit's
    cache keys a program); the most recent `size` workloads."""

    def __init__(self, size: int = 32):
        self.size = size
        self.found: dict = {}

    def resolve(self, member_chunk, states, lower_probe, workload, n_devices):
        """An explicit chunk (`None` or ≥ the members a device holds: all at once), or for
        "auto" the one `auto_member_chunk` chooses from XLA's memory analysis of the program
        `lower_probe(k)` lowers for k members."""
        n_members = jtu.tree_leaves(eqx.filter(states, eqx.is_array))[0].shape[0] // n_devices
        if member_chunk == "auto":
            try:
                key = (_workload_key(workload), n_members, n_devices)
                hash(key)
            except TypeError:  # an unhashable static leaf: probe every time
                return auto_member_chunk(lower_probe, n_members, n_devices)
            if key not in self.found:
                if len(self.found) >= self.size:
                    self.found.pop(next(iter(self.found)))
                self.found[key] = auto_member_chunk(lower_probe, n_members, n_devices)
            return self.found[key]
        if member_chunk is None:
            return None
        check.positive_int("member_chunk", member_chunk)
        return None if member_chunk >= n_members else member_chunk
