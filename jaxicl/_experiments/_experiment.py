"""An experiment as the command line runs it: one record per experiment module, and its
configuration (`ExperimentConfig`), which holds the study it runs and only its own fields."""

import dataclasses
from collections.abc import Callable, Mapping
from typing import ClassVar

from .. import _validation as check
from .._sweeps._file import from_name
from .._sweeps._plan import describe_value, label
from .._sweeps._study import AbstractStudy, setting as setting


class ExperimentConfig:
    """Base of an experiment's configuration (a frozen dataclass of `setting`s, validated on
    construction).

    A configuration holds the studies it runs as fields (`study`, and any other field whose
    default is a study): their settings are not copied into the configuration, and each study
    validates its own. The command line, presets and `config.json` name every setting flat:
    `--d 10` sets `study.d`, `--alloc-d 9` sets `alloc.d` (a study held in field `alloc`);
    `of(**settings)` splits them. `varied` names (flat) the studies' settings the experiment
    sets itself for each of its groups: they are not settings of a run, and naming one is
    refused; an own field may share such a name (e.g. `heads`: the head counts swept).
    """

    varied: ClassVar[tuple[str, ...]] = ()

    @staticmethod
    def prefix(held: str) -> str:
        """How the settings of the study held in field `held` are named flat."""
        return "" if held == "study" else f"{held}_"

    @classmethod
    def held_studies(cls) -> dict[str, AbstractStudy]:
        """Field name → the default study it holds."""
        fields = dataclasses.fields(cls)
        return {f.name: f.default for f in fields if isinstance(f.default, AbstractStudy)}

    @classmethod
    def study_settings(cls) -> dict[str, tuple[str, dataclasses.Field]]:
        """Flat name → (the field holding the study, the study's field), for every setting of
        the held studies a run may set (all but the `varied`)."""
        out = {}
        for held, study in cls.held_studies().items():
            for field in dataclasses.fields(study):
                if cls.prefix(held) + field.name not in cls.varied:
                    out[cls.prefix(held) + field.name] = (held, field)
        return out

    @classmethod
    def flags(cls) -> list[tuple[str, object, object, str]]:
        """(flat name, type, default, help) of every setting of a run, the held studies' first:
        a second study's help says whose it is."""
        studies, fields = cls.held_studies(), cls.__dataclass_fields__
        out = []
        for name, (held, field) in cls.study_settings().items():
            about = field.metadata.get("help", "")
            if cls.prefix(held):
                about = f"{fields[held].metadata['help']}: {about}"
            out.append((name, field.type, getattr(studies[held], field.name), about))
        own = cls.own_settings().values()
        return out + [(f.name, f.type, f.default, f.metadata.get("help", "")) for f in own]

    def check_studies(self) -> None:
        """Each held field holds a study of its default's class (call first in
        `__post_init__`: the rest of the checks read the studies)."""
        for held, default in self.held_studies().items():
            value = getattr(self, held)
            if not isinstance(value, type(default)):
                raise ValueError(f"`{held}` must be a {type(default).__name__}, got {value!r}.")

    @classmethod
    def own_settings(cls) -> dict[str, dataclasses.Field]:
        held = cls.held_studies()
        return {f.name: f for f in dataclasses.fields(cls) if f.name not in held}

    @classmethod
    def of(cls, **settings):
        """The configuration of flat `settings` (the held studies' and its own, by name; a
        study's variant by its name), the rest at their defaults."""
        study_names, own_names = cls.study_settings(), cls.own_settings()
        for name in settings:
            if name in cls.varied and name not in own_names:
                raise ValueError(
                    f"`{name}` is set by the experiment for each of its groups; it is not a "
                    "setting of the run."
                )
            if name not in study_names and name not in own_names:
                hint = check.did_you_mean(name, [*study_names, *own_names])
                raise ValueError(
                    f"`{name}` is not a setting of this experiment.{hint} (`jaxicl run NAME "
                    "--help` lists them.)"
                )
        # lists (as JSON has them) for the tuple fields
        values = {
            k: tuple(v) if isinstance(v, list) else v for k, v in settings.items() if k in own_names
        }
        for held, study in cls.held_studies().items():
            changes = {}
            for name, value in settings.items():
                if name in study_names and study_names[name][0] == held:
                    field = study_names[name][1].name
                    changes[field] = from_name(type(study), field, value, name)
            if changes:
                try:
                    values[held] = dataclasses.replace(study, **changes)
                except (TypeError, ValueError) as error:  # TypeError: a type it cannot take
                    raise ValueError(_flag_names(str(error), held, study)) from None
        return cls(**values)

    def as_dict(self) -> dict:
        """Every setting by name, flat (as `of` takes them; JSON-able: variants by name)."""
        flat = {}
        for name, (held, field) in self.study_settings().items():
            flat[name] = describe_value(label(getattr(getattr(self, held), field.name)))
        for name in self.own_settings():
            flat[name] = describe_value(getattr(self, name))
        return flat


def _flag_names(message: str, held: str, study: AbstractStudy) -> str:
    """A held study's error in the names a run's settings have (`alloc_d` for `alloc.d`)."""
    prefix = ExperimentConfig.prefix(held)
    for field in dataclasses.fields(study) if prefix else ():
        message = message.replace(f"`{field.name}`", f"`{prefix}{field.name}`")
    return message


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
