"""The typed run record: every setting declared once (flag, help, range, identity), the
flags, the versioned JSON record and the identity rule read from those declarations."""

import argparse
import dataclasses

import pytest

from ncfine_jax.errors import ConfigError
from ncfine_jax.experiment import EXPERIMENTS
from ncfine_jax.experiment.config import (FLAGS, NON_IDENTITY_FIELDS, PARTS, RECORD_VERSION,
                                          ExperimentConfig, add_config_flags, config_from_args,
                                          identity, migrate)
from ncfine_jax.settings import meta, record_key, setting
from ncfine_jax.train.config import BOOKKEEPING_FIELDS, TrainConfig

# experiment.json as the version before every field was recorded wrote it (a
# coarse_cifar10 run with --width 8 --epochs 3 --subset 100,20).
V1_RECORD = {
    "experiment": "coarse_cifar10", "label_kind": "coarse", "data": "cifar10",
    "arch": "resnet18", "width": 8, "lr": 0.01, "weight_decay": 0.0005, "epochs": 3,
    "batch_size": 128, "schedule": "step", "precision": "fp32", "seed": 0, "augment": True,
    "num_coarse": 5, "subset": [100, 20], "save_features_at": [3], "checkpoint_every": 10,
    "eval_every": "auto", "clp_reduce": "tsne", "clp_max_tsne_points": None,
}


def _parse(argv, name="coarse_cifar10", grid=False):
    spec = EXPERIMENTS[name]
    parser = argparse.ArgumentParser()
    add_config_flags(parser, spec.defaults, grid=grid)
    return config_from_args(spec.defaults, parser.parse_args(argv))


def test_record_holds_every_field_and_round_trips():
    config = _parse(["--width", "8", "--epochs", "3", "--subset", "100,20", "--eval-every", "2"])
    config = config.replace(momentum=0.5, model_kwargs={}, eval_batch_size=50)
    record = config.to_dict()
    keys = {record_key(f) for cls in PARTS.values() for f in dataclasses.fields(cls)}
    assert set(record) == keys | {"experiment", "record_version"}
    assert len(keys) == sum(len(dataclasses.fields(c)) for c in PARTS.values())  # no clash
    assert record["record_version"] == RECORD_VERSION and record["momentum"] == 0.5
    assert record["subset"] == [100, 20] and record["eval_batch_size"] == 50
    assert ExperimentConfig.from_dict(record) == config
    # One field changed is one record key changed.
    other = config.replace(keep_checkpoints=5).to_dict()
    assert {k for k in record if record[k] != other[k]} == {"keep_checkpoints"}


def test_version_1_record_migrates_to_the_run_it_was():
    # Fields the old record did not hold take the values every run of that time had.
    config = ExperimentConfig.from_dict(V1_RECORD)
    assert (config.train.momentum, config.train.model_kwargs, config.train.eval_batch_size,
            config.train.keep_checkpoints) == (0.9, {}, 1000, 2)
    today = _parse(["--width", "8", "--epochs", "3", "--subset", "100,20", "--lr", "0.01",
                    "--precision", "fp32"])
    assert identity(V1_RECORD) == today.identity()
    assert migrate(V1_RECORD)["record_version"] == RECORD_VERSION
    # An identifying field the old run had otherwise is another run.
    assert identity(V1_RECORD) != today.replace(momentum=0.8).identity()
    with pytest.raises(ConfigError, match="record version 7"):
        identity({**V1_RECORD, "record_version": 7})


def test_identity_rule_is_read_from_the_declarations():
    assert set(BOOKKEEPING_FIELDS) == {"checkpoint_every", "keep_checkpoints", "eval_every"}
    assert set(NON_IDENTITY_FIELDS) == set(BOOKKEEPING_FIELDS) | {
        "clp_reduce", "clp_max_tsne_points", "permutations"}
    base = _parse([])
    for changes in ({"checkpoint_every": 3}, {"eval_every": 4}, {"keep_checkpoints": 9}):
        assert base.replace(**changes).identity() == base.identity()
    for changes in ({"clp_reduce": "pca"}, {"permutations": 50}):
        analysed = dataclasses.replace(base, analysis=dataclasses.replace(base.analysis,
                                                                          **changes))
        assert analysed.identity() == base.identity()
    for changes in ({"momentum": 0.5}, {"eval_batch_size": 500}, {"lr": 0.2}, {"augment": False}):
        assert base.replace(**changes).identity() != base.identity()


def test_flags_come_from_the_fields():
    # Every flag is a declared field; its help and grid role travel with it.
    by_flag = {f.flag: f for f in FLAGS}
    assert {"--lr", "--wd", "--epochs", "--eval-every", "--augment", "--subset",
            "--num-coarse", "--clp-reduce"} <= set(by_flag)
    assert by_flag["--wd"].field == "train.weight_decay"
    assert by_flag["--augment"].choices == ("on", "off")
    assert {f.flag for f in FLAGS if f.grid_axis} == {"--lr", "--wd"}
    spec = EXPERIMENTS["coarse_cifar10"]
    grid_parser = argparse.ArgumentParser()
    add_config_flags(grid_parser, spec.defaults, grid=True)
    assert grid_parser.parse_args(["--lr", "0.2", "0.3"]).lr == [0.2, 0.3]
    with pytest.raises(SystemExit):
        _parse(["--lr", "0.2", "0.3"])  # a single run takes one value


def test_a_new_setting_is_one_field():
    # Declaring a field with a flag gives the flag, the record key and the identity.
    @dataclasses.dataclass(frozen=True)
    class Extra:
        label_smoothing: float = setting(0.0, flag="--label-smoothing", help="epsilon")

    (field,) = dataclasses.fields(Extra)
    assert meta(field).flag == "--label-smoothing" and meta(field).identifies
    from ncfine_jax.settings import from_record, to_record

    assert to_record(Extra(0.1)) == {"label_smoothing": 0.1}
    assert from_record(Extra, {"label_smoothing": 0.2, "other": 1}) == Extra(0.2)


@pytest.mark.parametrize("argv, words", [
    (["--eval-every", "0"], ["--eval-every", "'auto' or an integer"]),
    (["--width", str(2**20)], [f"--width {2**20}", "1..65536"]),
])
def test_flag_errors_name_the_flag_and_the_declared_range(argv, words, capsys):
    try:
        _parse(argv)
    except SystemExit as e:  # argparse's own type check for --eval-every
        err = capsys.readouterr().err
        assert e.code == 2 and all(w in err for w in words), err
        return
    except ConfigError as e:
        assert all(w in str(e) for w in words), str(e)
        return
    raise AssertionError(f"{argv} was accepted")


def test_train_config_checks_its_declared_ranges():
    with pytest.raises(ConfigError, match="keep_checkpoints=0 must be an integer in 1.."):
        TrainConfig(keep_checkpoints=0).validate()
    with pytest.raises(ConfigError, match="eval_batch_size"):
        TrainConfig(eval_batch_size=2.5).validate()
    TrainConfig(width=None).validate()


def test_a_workdir_with_a_version_1_record_resumes_without_training_or_analysing(
        tmp_path, monkeypatch):
    # A run whose experiment.json and results.json hold the version-1 record (as the
    # version before every field was recorded wrote them): run again, it is this run,
    # finished and analysed; nothing is trained or analysed again.
    from clirun import run_in_process

    from ncfine_jax import workdir as wdir
    from ncfine_jax.experiment import main
    from ncfine_jax.io import atomic_write_json, read_json

    monkeypatch.setenv("NCFINE_CACHE_DIR", str(tmp_path / "cache"))
    run = tmp_path / "run"
    argv = ["--epochs", "2", "--width", "16", "--subset", "200,50", "--batch-size", "50",
            "--clp-reduce", "none", "--no-progress", "--workdir", str(run)]
    entry = lambda a: main(EXPERIMENTS["coarse_digits"], a)  # noqa: E731
    assert run_in_process(entry, argv)[0] == 0
    record = read_json(run / wdir.EXPERIMENT_FILE)
    v1 = {k: v for k, v in record.items() if k not in ("record_version", "momentum",
                                                        "model_kwargs", "keep_checkpoints",
                                                        "eval_batch_size")}
    results = dict(read_json(run / wdir.RESULTS_FILE), experiment=v1)
    with wdir.lock(run):  # written as the run writes: recorded in its manifest
        atomic_write_json(run / wdir.EXPERIMENT_FILE, v1)
        atomic_write_json(run / wdir.RESULTS_FILE, results)
    log, results_bytes = ((run / wdir.LOG_FILE).read_bytes(),
                          (run / wdir.RESULTS_FILE).read_bytes())
    code, _, err = run_in_process(entry, argv)
    assert code == 0, err
    assert (run / wdir.LOG_FILE).read_bytes() == log  # not trained again
    assert (run / wdir.RESULTS_FILE).read_bytes() == results_bytes  # not analysed again
    assert read_json(run / wdir.EXPERIMENT_FILE)["record_version"] == RECORD_VERSION
    # Control: a version-1 record of another run (other lr) is refused, files kept.
    with wdir.lock(run):
        atomic_write_json(run / wdir.EXPERIMENT_FILE, dict(v1, lr=v1["lr"] * 2))
    before = (run / wdir.EXPERIMENT_FILE).read_bytes()
    code, _, err = run_in_process(entry, argv)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert (run / wdir.EXPERIMENT_FILE).read_bytes() == before


# ------------------------------------------------------------------ record versions


def _all_settings():
    return [f for cls in PARTS.values() for f in dataclasses.fields(cls)]


def _newest():
    """The settings the current record version added."""
    return [f for f in _all_settings() if meta(f).since == RECORD_VERSION]


def _before_engine_settings() -> int:
    """The record version before the newest one that added a setting of the engine
    (``TrainConfig``, which config.json records too)."""
    return max(meta(f).since for f in dataclasses.fields(TrainConfig)) - 1


def _added_after(version: int):
    """The settings a record of ``version`` lacks."""
    return [f for f in _all_settings() if meta(f).since > version]


def test_every_setting_declares_the_version_that_added_it_and_what_older_runs_had():
    from ncfine_jax.settings import NO_VALUE

    # ``setting`` itself refuses a bad ``since`` or a missing ``before`` (tested below);
    # here: every record version after 1 added a setting, so a raised RECORD_VERSION
    # without its setting, or a setting declared with an older version, is caught.
    added = {meta(f).since for f in _all_settings() if meta(f).before is not NO_VALUE}
    assert added == set(range(2, RECORD_VERSION + 1)), (added, RECORD_VERSION)
    assert RECORD_VERSION == 1 or _newest()  # the version test below has a setting to drop


def test_a_setting_added_later_must_say_what_older_runs_had():
    from ncfine_jax.settings import RECORD_VERSION as VERSION

    with pytest.raises(TypeError, match="needs before="):
        setting(0.0, since=VERSION)
    with pytest.raises(TypeError, match="needs before="):
        setting(0.0, before=0.0)  # since 1: every record holds it, so no "before"
    with pytest.raises(TypeError, match="raise RECORD_VERSION first"):
        setting(0.0, since=VERSION + 1, before=0.0)


def test_migrate_record_fills_only_what_an_older_version_lacked():
    from ncfine_jax.settings import migrate_record

    @dataclasses.dataclass(frozen=True)
    class Part:
        old: int = setting(1)
        newer: dict = setting(default_factory=lambda: {"a": 1}, since=RECORD_VERSION,
                              before={})

    older = migrate_record({"old": 5, "record_version": RECORD_VERSION - 1}, [Part], "x")
    assert older == {"old": 5, "newer": {}, "record_version": RECORD_VERSION}
    older["newer"]["k"] = 1  # a copy: the declaration's value is not shared
    assert meta(dataclasses.fields(Part)[1]).before == {}
    # A record of this version lacking the key is not "older": it stays lacking (damaged).
    assert "newer" not in migrate_record({"old": 5, "record_version": RECORD_VERSION},
                                         [Part], "x")
    assert migrate_record({"old": 5, "newer": {"b": 2}}, [Part], "x")["newer"] == {"b": 2}
    for bad in (RECORD_VERSION + 1, 0, "2", True):
        with pytest.raises(ConfigError, match=f"x record version {bad!r}: this ncfine_jax "
                                              f"reads versions 1..{RECORD_VERSION}"):
            migrate_record({"record_version": bad}, [Part], "x")


def _engine_workdir(tmp_path, config_record, version):
    """A workdir whose config.json holds ``config_record`` (written as a run writes it)."""
    from ncfine_jax import workdir as wdir
    from ncfine_jax.io import atomic_write_json

    run = tmp_path / "run"
    with wdir.lock(run):
        content = {"config": config_record, "data": {"n": 1}}
        if version is not None:
            content = {"record_version": version, **content}
        atomic_write_json(run / wdir.CONFIG_FILE, content)
    return run


def test_config_json_is_checked_through_the_same_declarations(tmp_path):
    from ncfine_jax.train.loop import check_engine_workdir

    older = _before_engine_settings()
    newest = {f.name for f in _added_after(older) if f.name in TrainConfig.__dataclass_fields__}
    assert older >= 1 and newest
    # A run whose newest settings had the values older runs had.
    config = dataclasses.replace(TrainConfig(), **{
        f.name: meta(f).before for f in _added_after(older) if f.name in newest})
    full = config.to_dict()
    previous = {k: v for k, v in full.items() if k not in newest}
    for version in (None, older):  # written before config.json held a version
        run = _engine_workdir(tmp_path / str(version), previous, version)
        assert check_engine_workdir(run, config, {"n": 1}, overwrite=False) is True
    # Control: the same record claiming today's version lacks those keys: another config,
    # refused with the flag that replaces it (not the Python argument).
    run = _engine_workdir(tmp_path / "now", previous, RECORD_VERSION)
    identifying = sorted(newest - set(BOOKKEEPING_FIELDS))
    with pytest.raises(ConfigError) as e:
        check_engine_workdir(run, config, {"n": 1}, overwrite=False)
    assert f"{identifying[0]}: None -> " in str(e.value), str(e.value)
    assert "--overwrite" in str(e.value) and "overwrite=True" not in str(e.value)
    # The value older runs had differs from this run's: another run, refused.
    other = dataclasses.replace(config, eval_batch_size=config.eval_batch_size + 1)
    run = _engine_workdir(tmp_path / "other", previous, None)
    if "eval_batch_size" in newest:
        with pytest.raises(ConfigError, match="eval_batch_size: 1000 -> 1001"):
            check_engine_workdir(run, other, {"n": 1}, overwrite=False)


def test_a_workdir_of_the_previous_record_version_resumes_without_training(tmp_path,
                                                                          monkeypatch):
    # experiment.json and config.json written as an older record version wrote them:
    # without the newest settings' keys (where the run had the value older runs had).
    from clirun import run_in_process

    from ncfine_jax import workdir as wdir
    from ncfine_jax.experiment import main
    from ncfine_jax.io import atomic_write_json, read_json

    monkeypatch.setenv("NCFINE_CACHE_DIR", str(tmp_path / "cache"))
    run = tmp_path / "run"
    argv = ["--epochs", "2", "--width", "16", "--subset", "200,50", "--batch-size", "50",
            "--clp-reduce", "none", "--no-progress", "--eval-every", "1",
            "--workdir", str(run)]
    entry = lambda a: main(EXPERIMENTS["coarse_digits"], a)  # noqa: E731
    assert run_in_process(entry, argv)[0] == 0
    experiment, config = (read_json(run / wdir.EXPERIMENT_FILE),
                          read_json(run / wdir.CONFIG_FILE))
    older = _before_engine_settings()
    dropped = {"experiment": [], "config": []}
    for f in _added_after(older):
        key = record_key(f)
        if experiment.get(key) == meta(f).before:
            dropped["experiment"].append(key)
            del experiment[key]
        if config["config"].get(key) == meta(f).before:
            dropped["config"].append(key)
            del config["config"][key]
    assert dropped["experiment"] and dropped["config"], dropped
    experiment["record_version"] = config["record_version"] = older
    with wdir.lock(run):  # written as the run writes: recorded in its manifest
        atomic_write_json(run / wdir.EXPERIMENT_FILE, experiment)
        atomic_write_json(run / wdir.CONFIG_FILE, config)
    kept = {p: p.read_bytes() for p in (run / wdir.LOG_FILE, run / wdir.RESULTS_FILE)}
    checkpoints = sorted(p.name for p in (run / wdir.CHECKPOINT_DIR).iterdir())
    code, _, err = run_in_process(entry, argv)
    assert code == 0 and err == "", err
    assert all(p.read_bytes() == b for p, b in kept.items())  # not trained or analysed again
    assert sorted(p.name for p in (run / wdir.CHECKPOINT_DIR).iterdir()) == checkpoints
    # Control: config.json claiming today's version without those keys is another run,
    # refused naming a key and the flag; the remedy it names works the first time.
    config["record_version"] = RECORD_VERSION
    with wdir.lock(run):
        atomic_write_json(run / wdir.CONFIG_FILE, config)
    identifying = [k for k in dropped["config"] if k not in BOOKKEEPING_FIELDS]
    code, _, err = run_in_process(entry, argv)
    assert code == 2 and err.count("\n") == 1 and "--overwrite" in err, err
    assert identifying and all(f"{k}: None -> " in err for k in identifying), err
    code, _, err = run_in_process(entry, [*argv, "--overwrite"])
    assert code == 0, err
    assert (run / wdir.LOG_FILE).read_bytes().count(b"\n") == 2
