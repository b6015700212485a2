"""Analysis of any network's features: ``analyze_features`` and ``python -m ncfine_jax.analyze``.

Synthetic features with planted subclasses (CLP must recover them, D must show the
superclass blocks), collapsed and constant features (no crash, CLP at chance, skipped
steps reported), the file formats (.npz stored / compressed, .npy groups, folders) and
bad input (one ``error:`` line, exit 2, nothing written).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ncfine_jax import metrics
from ncfine_jax.analysis import analyze_features
from ncfine_jax.analysis.inputs import read_npz
from ncfine_jax.analysis.options import AnalysisOptions
from ncfine_jax.errors import ConfigError, DataError
from ncfine_jax.labels import LabelMapping

from clirun import run_in_process

COL = ((0, 2, 4), (1, 3, 5))  # y mod 2 over 6 classes
FAST = {"probe_kwargs": {"solver": "sklearn"}, "reduce": "pca"}


def planted(classes_of_label=COL, n_train=40, n_test=20, d=12, sub_scale=3.0, noise=1.0, seed=0,
            collapse=False, classifier=False):
    """A feature set: one far-apart centre per label, a planted subcluster per class.

    ``collapse``: every sample of a label sits at the label's centre.
    """
    rng = np.random.default_rng(seed)
    num_classes = sum(len(cs) for cs in classes_of_label)
    label_of_class = np.empty(num_classes, np.int32)
    for label, cs in enumerate(classes_of_label):
        label_of_class[list(cs)] = label
    centres = rng.normal(size=(len(classes_of_label), d)) * 10.0
    means = centres[label_of_class] + rng.normal(size=(num_classes, d)) * sub_scale
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        classes = np.repeat(np.arange(num_classes), n).astype(np.int32)
        if collapse:
            feats = centres[label_of_class[classes]]
        else:
            feats = means[classes] + rng.normal(size=(classes.size, d)) * noise
        out[f"{split}_features"] = feats.astype(np.float32)
        out[f"{split}_classes"] = classes
        out[f"{split}_labels"] = label_of_class[classes]
    if classifier:
        out["classifier_kernel"] = rng.normal(size=(d, len(classes_of_label))).astype(np.float32)
        out["classifier_bias"] = rng.normal(size=len(classes_of_label)).astype(np.float32)
    return out


def cli(argv):
    """``python -m ncfine_jax.analyze`` in-process: (exit code, stdout, stderr)."""
    from ncfine_jax.analyze import main

    return run_in_process(main, argv)


# ----------------------------------------------------------------------------- what is found


def test_planted_subclasses_recovered_and_D_has_superclass_blocks(tmp_path):
    res = analyze_features({5: planted(seed=1), 9: planted(seed=2)}, tmp_path / "out", num_coarse=2,
                           class_names=[f"c{i}" for i in range(6)], source="synthetic",
        options=AnalysisOptions(**FAST))
    assert res["clp_accuracy"] > 0.95 and res["ari"] > 0.9 and res["lpo_accuracy"] > 0.95
    assert res["label_mapping"]["classes_of_label"] == [list(cs) for cs in COL]
    with np.load(tmp_path / "out" / "distance_matrices.npz") as z:
        assert z["epochs"].tolist() == [5, 9]
        D, superclass = z["epoch_0009"], z["superclass_of_class"]
    assert superclass.tolist() == [0, 1, 0, 1, 0, 1]
    same = (superclass[:, None] == superclass[None, :]) & ~np.eye(6, dtype=bool)
    cross = superclass[:, None] != superclass[None, :]
    # Block structure: classes of different labels are farthest apart, classes merged
    # into one label still farther apart than samples within a class.
    assert D[cross].min() > 3 * D[same].max()
    assert D[same].min() > 3 * np.diag(D).max()
    assert res["msdr"][9] > 3
    assert res["nc3"][9] is None and res["nc4"][9] is None  # no classifier given
    assert res["analysis"]["inputs"][9] == {"source": "features (epoch 9)", "n_train": 240, "n_test": 120,
                                            "dim": 12, "classifier": False}
    report = (tmp_path / "out" / "report.md").read_text()
    for f in res["figures"]:
        assert (tmp_path / "out" / f).read_bytes()[:4] == b"\x89PNG" and f in report
    assert "Source: synthetic." in report


def test_analyze_writes_nothing_and_its_writer_gives_what_analyze_features_writes(tmp_path):
    from ncfine_jax.analysis.pipeline import analyze, write_analysis

    opts = AnalysisOptions(**FAST, make_figures=False)
    sets = {3: planted(seed=4), 7: planted(seed=5)}
    done = analyze(sets, options=opts, num_coarse=2)
    assert list(tmp_path.iterdir()) == []  # reading and measuring only
    assert done.epochs == [3, 7] and done.mapping.is_coarsening
    assert done.results.clp_accuracy > 0.95 and done.results.figures == []
    assert done.results.epochs == [3, 7]
    written = write_analysis(done, tmp_path / "split", opts)
    whole = analyze_features(sets, tmp_path / "whole", options=opts, num_coarse=2)
    on_disk = [json.loads((tmp_path / d / "results.json").read_text()) for d in ("split", "whole")]
    for res in on_disk:
        res["analysis"].pop("timings_s")
    assert on_disk[0] == on_disk[1]
    assert written["clp_accuracy"] == whole["clp_accuracy"]
    assert sorted(p.name for p in (tmp_path / "split").iterdir()) == sorted(
        p.name for p in (tmp_path / "whole").iterdir())


def test_collapsed_labels_give_chance_clp_and_report_what_was_skipped(tmp_path):
    data = planted(collapse=True, seed=3)
    res = analyze_features([data], tmp_path, num_coarse=2,
        options=AnalysisOptions(reduce="tsne", tsne_backend="sklearn", probe_kwargs={"solver": "sklearn"}))
    # Each label holds 3 classes at one point: the best any mapping can do is 1/3.
    assert res["clp_accuracy"] == pytest.approx(1 / 3)
    assert res["lpo_accuracy"] == pytest.approx(1 / 3)
    assert res["nc1"][1] == pytest.approx(0.0, abs=1e-12)  # within-label variance is 0
    # The classes of a label coincide: D between them equals D within them (both float32
    # rounding of 0), so MSDR is 1, "no fine structure".
    assert res["msdr"][1] == pytest.approx(1.0, abs=1e-3)
    steps = [s["step"] for s in res["skipped"]]
    assert sum("CLP clustering of training label" in s for s in steps) == 2
    assert "figure tsne_superclasses.png" in steps
    assert not (tmp_path / "figures" / "tsne_superclasses.png").exists()
    assert all(s["constant_features"] for s in res["clp_details"]["per_superclass"])
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk["skipped"] == res["skipped"]
    assert "## Skipped" in (tmp_path / "report.md").read_text()


def test_identical_features_everywhere_do_not_crash(tmp_path):
    data = planted(seed=4)
    data["train_features"] = np.full_like(data["train_features"], 2.5)
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "pca.png").write_bytes(b"stale")  # from an earlier analysis
    res = analyze_features([data], tmp_path, num_coarse=2, options=AnalysisOptions(**FAST))
    assert all(res[k][1] is None for k in ("nc1", "nc2", "nc3", "nc4", "cdnv", "msdr"))
    steps = [s["step"] for s in res["skipped"]]
    assert "figure pca.png" in steps and "NC1-NC4, CDNV and MSDR at epoch 1" in steps
    assert not (tmp_path / "figures" / "pca.png").exists()  # no stale figure beside the report
    assert (tmp_path / "figures" / "distance_heatmaps.png").exists()


def test_features_whose_squares_overflow_do_not_crash(tmp_path):
    data = planted(seed=10)
    for split in ("train", "test"):
        data[f"{split}_features"] = data[f"{split}_features"] * np.float32(1e20)
    res = analyze_features(data, tmp_path, num_coarse=2, options=AnalysisOptions(make_figures=False, **FAST))
    assert res["msdr"][1] is None and res["nc1"][1] is None
    assert {"step": "MSDR at epoch 1", "reason": "D is not finite: squared feature distances overflow float32"} \
        in res["skipped"]
    assert res["lpo_accuracy"] > 0.95  # the probe standardises in float64
    assert res["clp_accuracy"] > 0.95  # clustering runs on exactly rescaled features


# ----------------------------------------------------------------------------- the command


def test_cli_npz_files_stored_and_compressed_with_classifier(tmp_path):
    a, b = planted(seed=5, classifier=True), planted(seed=6, classifier=True)
    np.savez(tmp_path / "ckpt_a.npz", **a, epoch=np.int32(30))
    np.savez_compressed(tmp_path / "ckpt_b.npz", **b, epoch=np.int32(60))
    assert isinstance(read_npz(tmp_path / "ckpt_a.npz")["train_features"], np.memmap)
    assert not isinstance(read_npz(tmp_path / "ckpt_b.npz")["train_features"], np.memmap)
    code, out, err = cli([str(tmp_path / "ckpt_a.npz"), str(tmp_path / "ckpt_b.npz"), "--num-coarse", "2",
                          "--clp-reduce", "none", "--probe-solver", "sklearn", "--no-figures",
                          "--out", str(tmp_path / "out")])
    assert code == 0, err
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    assert set(res["nc1"]) == {"30", "60"}  # epochs read from the files
    for key, data in (("30", a), ("60", b)):
        x, y = data["train_features"], data["train_labels"]
        k, bias = data["classifier_kernel"], data["classifier_bias"]
        assert res["nc3"][key] == pytest.approx(float(metrics.nc3(x, y, 2, k)), rel=1e-4)
        assert res["nc4"][key] == pytest.approx(float(metrics.nc4(x, y, 2, k, bias)), abs=1e-9)
        assert res["nc1"][key] == pytest.approx(float(metrics.nc1(x, y, 2)), rel=1e-4)
    assert res["clp_accuracy"] > 0.95 and "CLP" in out


def test_cli_npy_folder_infers_labels_in_natural_order(tmp_path):
    folder = tmp_path / "feats"
    folder.mkdir()
    for prefix, seed in (("e10_", 7), ("e2_", 8)):
        data = planted(seed=seed)
        for key in ("train_features", "train_labels", "train_classes"):  # no test split
            np.save(folder / f"{prefix}{key}.npy", data[key])
    code, out, err = cli([str(folder), "--clp-reduce", "pca", "--probe-solver", "sklearn", "--no-figures",
                          "--epochs", "2", "10", "--out", str(tmp_path / "out")])
    assert code == 0, err
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    assert res["label_mapping"]["kind"] == "coarse" and res["label_mapping"]["num_labels"] == 2
    assert res["analysis"]["inputs"]["2"]["source"] == str(folder / "e2_*.npy")
    assert res["clp_accuracy"] is None and res["lpo_accuracy"] is None
    assert res["ari"] > 0.9  # the clustering is still measured on the training split
    assert {"step": "LPO and CLP test accuracies", "reason": "no test_* arrays given"} in res["skipped"]


def _bad_cases(tmp_path):
    """(name, files to write, extra flags, expected message)."""
    good = planted(seed=9)
    mapping = tmp_path / "mapping.json"
    LabelMapping.for_kind("coarse", 6, num_coarse=3).save(mapping)  # labels y mod 3, files y mod 2
    nan = {**good, "train_features": good["train_features"].copy()}
    nan["train_features"][17, 2] = np.nan
    few = {k: v for k, v in good.items()}
    few.update(test_features=good["test_features"][:4], test_labels=good["test_labels"][:4],
               test_classes=good["test_classes"][:4])
    return [
        ("missing key", {k: v for k, v in good.items() if k != "train_classes"}, ["--num-coarse", "2"],
         "missing array train_classes"),
        ("lengths", {**good, "train_labels": good["train_labels"][:-3]}, [],
         r"train_labels has shape \(237,\), expected \[240\]"),
        ("nan", nan, ["--num-coarse", "2"], "train_features has NaN or inf, e.g. in row 17"),
        ("contradicts mapping", good, ["--label-mapping", str(mapping)],
         r"160 train sample\(s\) carry a label that contradicts the label mapping, e.g. row 80: label 0 "
         r"with class 2 \(label 0 holds classes \[0, 3\]\)"),
        ("few test samples", few, ["--num-coarse", "2"],
         r"4 test sample\(s\) for 6 classes, none of class\(es\) 1, 2, 3, 4, 5; CLP and LPO need every class"),
        ("kernel shape", {**good, "classifier_kernel": np.ones((3, 2), np.float32)}, [],
         r"classifier_kernel has shape \(3, 2\), expected \[12, 2\]"),
        ("two label sources", good, ["--num-coarse", "2", "--label-mapping", str(mapping)], "not allowed with"),
        ("epochs count", good, ["--epochs", "1", "2"], "--epochs: 2 epochs for 1 feature sets"),
    ]


def test_cli_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path):
    for name, data, flags, message in _bad_cases(tmp_path):
        path = tmp_path / f"{name.replace(' ', '_')}.npz"
        np.savez(path, **data)
        out = tmp_path / f"out_{path.stem}"
        code, _, err = cli([str(path), *flags, "--clp-reduce", "none", "--out", str(out)])
        assert code == 2, (name, err)
        assert err.startswith("error: ") and err.count("\n") == 1, (name, err)
        assert re.search(message, err), (name, err)
        assert not out.exists(), name


def test_module_entry_point_runs():
    proc = subprocess.run([sys.executable, "-m", "ncfine_jax.analyze", "no_such_file.npz", "--out", "x"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr == "error: features no_such_file.npz: not found\n"


def test_api_rejects_bad_options_before_reading(tmp_path):
    with pytest.raises(ConfigError, match="heatmap_epochs: epochs \\[7\\] were not analysed"):
        analyze_features([planted()], tmp_path / "o", num_coarse=2,
            options=AnalysisOptions(heatmap_epochs=[7]))
    with pytest.raises(ConfigError, match="max_tsne_points"):
        analyze_features([planted()], tmp_path / "o", num_coarse=2,
            options=AnalysisOptions(max_tsne_points=3))
    with pytest.raises(DataError, match=r"neither a coarsening \(.*\) nor a refinement"):
        bad = planted()
        bad["train_labels"] = (np.arange(240) % 2).astype(np.int32)  # every class in both labels
        analyze_features([bad], tmp_path / "o")
    assert not (tmp_path / "o").exists()


# ----------------------------------------------------------------------------- worked example


def test_torch_example_runs(tmp_path):
    pytest.importorskip("torch")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
    try:
        import analyze_torch_features
    finally:
        sys.path.pop(0)
    res = analyze_torch_features.main(["--out", str(tmp_path), "--epochs", "3", "--width", "32",
                                       "--clp-reduce", "pca"])
    assert set(res["nc1"]) == {1, 2, 3}
    assert res["nc3"][3] is not None and res["nc4"][3] is not None
    assert res["lpo_accuracy"] > 0.5


# The results.json keys, in order: a reader of older files relies on every one of them.
RESULTS_KEYS = [
    "fine_structure", "clp_accuracy", "clp_accuracy_train_mapping", "lpo_accuracy",
    "ot_accuracy", "ari", "nmi", "nc1", "nc2", "nc3", "nc4", "cdnv", "msdr",
    "final_train_accuracy", "final_test_accuracy", "config", "experiment", "label_mapping",
    "analysis", "clp_details", "skipped", "figures"]


def test_results_json_is_the_typed_results_and_reads_back_with_int_epochs(tmp_path):
    from ncfine_jax.analysis.results import Results

    opts = AnalysisOptions(**FAST, make_figures=False)
    written = analyze_features({3: planted(seed=4), 7: planted(seed=5)}, tmp_path, options=opts,
                               num_coarse=2)
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert list(on_disk) == RESULTS_KEYS and list(written) == RESULTS_KEYS
    assert list(on_disk["nc1"]) == ["3", "7"]  # JSON object keys are strings
    back = Results.from_dict(on_disk, "results.json")
    assert back.epochs == [3, 7] and set(back.msdr) == {3, 7}
    assert back.clp_accuracy == written["clp_accuracy"] and back.nc1[7] == written["nc1"][7]
    # to_dict of what was read is what was written, once through JSON again.
    assert json.loads(json.dumps(back.to_dict())) == on_disk
    # The copy shares nothing with the Results it came from.
    record = back.to_dict()
    record["skipped"].append({"step": "x", "reason": "y"})
    assert len(back.skipped) == len(on_disk["skipped"])


def test_results_from_dict_names_a_missing_unknown_or_bad_key():
    from ncfine_jax.analysis.results import Results

    record = {k: None for k in RESULTS_KEYS} | {k: {} for k in ("nc1", "nc2", "nc3", "nc4",
                                                                  "cdnv", "msdr")}
    assert Results.from_dict(record).epochs == []
    with pytest.raises(DataError, match=r"^r.json: not a results record \(missing analysis\)$"):
        Results.from_dict({k: v for k, v in record.items() if k != "analysis"}, "r.json")
    # A results.json written before a metric was registered reads back with it empty.
    older = Results.from_dict({k: v for k, v in record.items() if k != "msdr"} | {"nc1": {"3": 0.5}})
    assert older.msdr == {} and older.nc1 == {3: 0.5}
    with pytest.raises(DataError, match=r"\(unknown extra\)$"):
        Results.from_dict(record | {"extra": 1})
    with pytest.raises(DataError, match=r"^results: nc2: an epoch key is not an integer$"):
        Results.from_dict(record | {"nc2": {"last": 1.0}})
    with pytest.raises(DataError, match=r"^results: nc1: not an object of epochs$"):
        Results.from_dict(record | {"nc1": [1.0]})
    with pytest.raises(DataError, match=r"^results: not a JSON object$"):
        Results.from_dict([1])


def test_analyze_takes_only_the_run_fields_as_extra_results():
    from ncfine_jax.analysis.pipeline import analyze

    opts = AnalysisOptions(**FAST, make_figures=False)
    done = analyze([planted(seed=1)], options=opts, num_coarse=2,
                   extra_results={"final_test_accuracy": 0.5})
    assert done.results.final_test_accuracy == 0.5 and done.results.config is None
    with pytest.raises(ConfigError, match=r"^extra_results: not run fields of Results: clp_accuracy$"):
        analyze([planted(seed=1)], options=opts, num_coarse=2, extra_results={"clp_accuracy": 1.0})
