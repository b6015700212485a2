"""Class and label ids that are not 0..C-1: one line saying what was found, never a class
count taken from the largest id."""

from __future__ import annotations

import re

import numpy as np
import pytest

from ncfine_jax.analysis.inputs import infer_label_mapping, resolve_label_mapping
from ncfine_jax.data.dataset import Dataset
from ncfine_jax.errors import DataError
from ncfine_jax.labels import count_ids
from ncfine_jax.train.data import TrainData


@pytest.mark.parametrize("ids, found", [
    (np.arange(1000, 1010), "found 10 distinct ids between 1000 and 1009; number them 0..9"),
    (np.arange(10) * 2**38, f"found 10 distinct ids between 0 and {9 * 2**38}"),
    (np.array([0, 1, 3, 3]), "found 3 distinct ids between 0 and 3; number them 0..2"),
    (np.array([-1, 0, 1]), "found 3 distinct ids between -1 and 1"),
    (np.array([5]), "found 1 distinct id between 5 and 5; number them 0..0"),
])
def test_ids_that_are_not_0_to_c_minus_1_are_refused_saying_what_was_found(ids, found):
    with pytest.raises(DataError) as e:
        count_ids(ids, "train_classes")
    message = str(e.value)
    assert message.startswith("train_classes: class ids are not 0..C-1: " + found), message
    assert "numpy.unique(ids, return_inverse=True)[1]" in message and "\n" not in message
    # The remedy it names gives ids that are accepted, in the same sorted order.
    renumbered = np.unique(ids, return_inverse=True)[1]
    assert count_ids(renumbered, "train_classes") == np.unique(ids).size
    assert np.array_equal(np.argsort(ids, kind="stable"),
                          np.argsort(renumbered, kind="stable"))


@pytest.mark.parametrize("ids", [np.arange(4), np.array([2, 0, 1, 1, 0]), np.array([], int)])
def test_ids_0_to_c_minus_1_in_any_order_count_their_classes(ids):
    assert count_ids(ids, "x") == np.unique(ids).size


def _features(classes, labels):
    n = len(classes)
    rng = np.random.default_rng(0)
    return {"train_features": rng.normal(size=(n, 4)).astype(np.float32),
            "train_classes": classes, "train_labels": labels}


def test_analysis_inputs_refuse_odd_class_ids_without_allocating_by_the_largest_id():
    classes = np.repeat(np.arange(10), 3) * 2**38  # the largest id + 1 would be 2.5e12 classes
    with pytest.raises(DataError, match=r"features: train_classes: class ids are not 0..C-1: "
                                        r"found 10 distinct ids between 0 and"):
        resolve_label_mapping(_features(classes, np.repeat(np.arange(10), 3) % 5),
                              num_coarse=5)
    with pytest.raises(DataError, match="found 10 distinct ids between 1000 and 1009"):
        infer_label_mapping(np.repeat(np.arange(10), 3) % 5, np.repeat(np.arange(1000, 1010), 3))
    with pytest.raises(DataError, match=r"train_labels: label ids are not 0..L-1: found 5 "
                                        r"distinct ids between 0 and 8"):
        infer_label_mapping(np.repeat(np.arange(10), 3) % 5 * 2, np.repeat(np.arange(10), 3))
    # Control: the same data numbered 0..C-1 is read as the coarsening it is.
    mapping = resolve_label_mapping(
        _features(np.repeat(np.arange(10), 3), np.repeat(np.arange(10), 3) % 5), num_coarse=5)
    assert (mapping.num_classes, mapping.num_labels) == (10, 5)


def test_a_dataset_and_training_data_say_what_ids_they_found():
    x = np.zeros((4, 3), np.float32)
    y = np.array([1000, 1001, 1002, 1003])
    with pytest.raises(DataError, match=re.escape(
            "toy: class ids are not 0..C-1 for its 4 class names: y_train has 4 distinct ids "
            "between 1000 and 1003")):
        Dataset("toy", x, y, x, y, ["a", "b", "c", "d"])
    good = Dataset("toy", x, np.arange(4), x, np.arange(4), ["a", "b", "c", "d"])
    with pytest.raises(DataError, match="label ids are not 0..L-1: found 2 distinct ids "
                                        "between 0 and 7"):
        TrainData.from_dataset(good, np.array([0, 7, 0, 7]), np.array([0, 7, 7, 0]))
    assert TrainData.from_dataset(good, np.array([0, 1, 0, 1]),
                                  np.array([1, 0, 0, 1])).num_labels == 2


def test_analyze_cli_names_the_ids_it_found(tmp_path):
    # The reproduction: class ids multiplied by 2**38 once gave "does not divide the
    # 2473901162497 classes".
    from clirun import run_in_process

    from ncfine_jax.analyze import main

    classes = np.repeat(np.arange(10), 6)
    data = {**_features(classes * 2**38, classes % 5),
            "test_features": np.zeros((60, 4), np.float32), "test_classes": classes * 2**38}
    np.savez(tmp_path / "f.npz", **data)
    code, _, err = run_in_process(main, [str(tmp_path / "f.npz"), "--num-coarse", "5",
                                         "--out", str(tmp_path / "out")])
    assert code == 2 and err.count("\n") == 1, err
    assert "class ids are not 0..C-1: found 10 distinct ids between 0 and" in err, err
    assert "does not divide" not in err and not (tmp_path / "out").exists()
