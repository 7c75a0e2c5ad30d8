"""The trainer's options as small Modules, in the manner of Diffrax's `SaveAt`: what a run
records (`Record`) and how an ensemble's members are mapped (`Members`)."""

from collections.abc import Callable
from typing import Any

import equinox as eqx
from jaxtyping import PyTree

from .. import _validation as check


def no_observables(model) -> tuple:
    return ()


# JAX's float32 matrix-product precisions a run may ask for: "highest" (true float32; the
# default: on recent NVIDIA GPUs JAX's own default computes float32 products in TF32), "high"
# (bfloat16 × 3 passes) and "default" (the device's fastest: TF32 or bfloat16 on accelerators).
# CPUs compute float32 products in float32 whatever is asked.
MATMUL_PRECISIONS = ("highest", "high", "default")


def check_matmul_precision(name: str, value) -> str:
    return check.one_of(name, value, MATMUL_PRECISIONS)


class Record(eqx.Module):
    """What a run records, and how often.

    **Fields:**

    - `every`: steps between records: records at steps 0, every, 2·every, … (each before
      that step's update), so `steps` must be a multiple of it. `None` (default): one record,
      of the whole run.
    - `observe`: a function of one model whose pytree is recorded with the loss.
    - `stop`: None (default), or a function of one model returning a boolean scalar: whether
      the member's outcome is final (e.g. settled at a minimum). It is checked on the model of
      each record; once true the member is stopped: frozen from that record's step on like a
      diverged member (model, optimizer state and time never change again), with `stopped`
      set in its state and records. Its records from there on are its frozen state's, which
      a sweep need not compute again (`_sweeps/_compaction.py`).
    """

    every: int | None = eqx.field(static=True, default=None)
    observe: Callable[[PyTree], PyTree] = no_observables
    stop: Callable[[PyTree], Any] | None = None

    def __check_init__(self):
        if self.every is not None:
            check.positive_int("Record.every", self.every)
        if not callable(self.observe):
            raise ValueError(
                f"`Record.observe` must be a function of one model, got {self.observe!r}."
            )
        if self.stop is not None and not callable(self.stop):
            raise ValueError(
                f"`Record.stop` must be None or a function of one model, got {self.stop!r}."
            )

    def interval(self, steps: int) -> int:
        """Steps between records in a run of `steps` steps (checked to divide it)."""
        check.positive_int("steps", steps)
        every = steps if self.every is None else self.every
        if steps % every:
            raise ValueError(f"`steps` ({steps}) must be a multiple of `Record.every` ({every}).")
        return every


class Members(eqx.Module):
    """How an ensemble's members are mapped inside each step; results do not depend on it
    beyond rounding (bit for bit only at the same chunk shape).

    **Fields:**

    - `chunk`: members processed at a time; `None` for all at once; `"auto"` (default): on CPU
      the largest power of two whose step temporaries (XLA's memory analysis of this workload,
      compiled once per process) fit in the smallest cache level holding 16 members' (see
      `_member_chunk.py`); all at once on accelerators and for at most 16 members a device.
    - `shard`: split the members over all local devices when their number divides the
      ensemble size (on CPU, `jax.config.update("jax_num_cpu_devices", n)` before first use
      gives one device per core).
    """

    chunk: int | None | str = eqx.field(static=True, default="auto")
    shard: bool = eqx.field(static=True, default=True)

    def __check_init__(self):
        if (
            self.chunk is not None
            and self.chunk != "auto"
            and not check.is_positive_int(self.chunk)
        ):
            raise ValueError(
                f'`Members.chunk` must be "auto", None or a positive integer, got {self.chunk!r}.'
            )
        if not isinstance(self.shard, bool):
            raise ValueError(f"`Members.shard` must be True or False, got {self.shard!r}.")
