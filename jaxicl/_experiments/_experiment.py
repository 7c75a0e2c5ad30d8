"""An experiment as the command line runs it: one record per experiment module, and the
`setting` that gives each configuration field its one line of help."""

import dataclasses
from collections.abc import Callable, Mapping

from .._sweeps._study import AbstractStudy


def setting(default, help: str):
    """A configuration field with its default and the one line `jaxicl run NAME --help`
    prints for it."""
    return dataclasses.field(default=default, metadata={"help": help})


@dataclasses.dataclass(frozen=True)
class Experiment:
    """A built-in experiment: `name` on the command line; `config`, its frozen dataclass of
    `setting`s; `run(config, out_dir, *, progress)` → summary; `describe(summary)` → the text
    printed at the end; named `presets` of settings; the `studies` it runs (their precision is
    the experiment's)."""

    name: str
    config: type
    run: Callable
    describe: Callable[[dict], str]
    studies: tuple[type[AbstractStudy], ...]
    presets: Mapping[str, dict] = dataclasses.field(default_factory=dict)

    @property
    def float64(self) -> bool:
        """Whether the experiment needs `jax_enable_x64` (one of its studies does)."""
        return any(study.float64 for study in self.studies)
