"""Every flag explains itself: one line and its default in `jaxicl run EXPERIMENT --help`."""

import dataclasses

import pytest

from jaxicl import _cli
from jaxicl._registry import EXPERIMENTS


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_every_field_has_a_description_and_its_default(name, capsys):
    config_cls = EXPERIMENTS[name].config
    settings = config_cls.flags()
    help_of = {flat: about for flat, _, _, about in settings}
    assert all(len(text) > 5 for text in help_of.values()), help_of  # none missing
    with pytest.raises(SystemExit):
        _cli.main(["run", name, "--help"])
    # argparse wraps lines (also at hyphens): compare without any whitespace
    text = "".join(capsys.readouterr().out.split())
    for flat, *_ in settings:
        assert "".join(help_of[flat].split()) in text
        assert f"--{flat.replace('_', '-')}" in text
    assert text.count("(default:") >= len(settings) + 1  # and --out


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_a_configuration_holds_its_study_and_copies_none_of_its_settings(name):
    """A configuration's own fields never repeat a setting of the study it holds (the study
    holds and validates them), and it round-trips through its flat settings."""
    config_cls = EXPERIMENTS[name].config
    settable = set(config_cls.study_settings())
    assert not settable & set(config_cls.own_settings()), name
    every = set()
    for held, study in config_cls.held_studies().items():
        every |= {config_cls.prefix(held) + f.name for f in dataclasses.fields(study)}
    assert set(config_cls.varied) <= every, name
    config = config_cls.of()
    assert config_cls.of(**config.as_dict()).as_dict() == config.as_dict()


def test_no_arguments_prints_the_commands(capsys):
    assert _cli.main([]) == 0
    out = capsys.readouterr().out
    for command in ("run", "sweep", "inspect", "bench", "plot", "jaxicl run task-allocation"):
        assert command in out


def test_sweep_help_lists_every_study_setting_and_default(capsys):
    from jaxicl._registry import STUDIES
    from jaxicl._sweeps._file import study_fields

    with pytest.raises(SystemExit):
        _cli.main(["sweep", "--help"])
    text = "".join(capsys.readouterr().out.split())
    assert "package.module:Class" in text
    for name, cls in STUDIES.items():
        assert name in text and "".join(cls.__doc__.split()) in text
        for field, default in study_fields(cls).items():
            assert f"{field}={getattr(default, 'name', default)!r}" in text


def test_experiments_and_studies_are_found_from_their_modules_alone(tmp_path, monkeypatch):
    """A new experiment or built-in study is its module: the registry finds it (no list to
    edit); helpers without a record, and studies imported from elsewhere, are not taken."""
    import importlib

    from jaxicl._registry import experiments_in, studies_in

    package = tmp_path / "more"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "_mine.py").write_text(
        "from typing import ClassVar\n"
        "from jaxicl import AbstractStudy, ReducedAllocation\n"
        "from jaxicl._experiments._experiment import Experiment\n"
        "class Mine(AbstractStudy):\n"
        "    registry_name: ClassVar[str] = 'mine'\n"
        "class Unnamed(AbstractStudy):\n"
        "    pass\n"
        "EXPERIMENT = Experiment(\n"
        "    name='mine', config=object, run=print, describe=str, studies=(Mine,)\n"
        ")\n"
    )
    (package / "_helper.py").write_text("VALUE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    more = importlib.import_module("more")
    assert list(experiments_in(more)) == ["mine"]
    assert list(studies_in(more)) == ["mine"]
