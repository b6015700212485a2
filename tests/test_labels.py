"""Label transforms (paper eqs. 4-5, App. F), LabelMapping and the CIFAR-100 tables."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ncfine_jax.errors import ConfigError, DataError, NcfineError
from ncfine_jax.labels import (
    CIFAR10_CLASS_NAMES,
    CIFAR100_CLASS_NAMES,
    CIFAR100_SUPERCLASS,
    CIFAR100_SUPERCLASS_MEMBERS,
    CIFAR100_SUPERCLASS_NAMES,
    KINDS,
    LabelMapping,
    class_names_of_labels,
    coarsen,
    random_coarsen,
    random_permutation,
    refine,
    transform_labels,
)

# Fine -> coarse table as widely circulated for CIFAR-100 (e.g. the "sparse2coarse"
# helper); an independent check of the member lists in labels.py.
REFERENCE_SUPERCLASS = [
    4, 1, 14, 8, 0, 6, 7, 7, 18, 3, 3, 14, 9, 18, 7, 11, 3, 9, 7, 11,
    6, 11, 5, 10, 7, 6, 13, 15, 3, 15, 0, 11, 1, 10, 12, 14, 16, 9, 11, 5,
    5, 19, 8, 8, 15, 13, 14, 17, 18, 10, 16, 4, 17, 4, 2, 0, 17, 4, 18, 17,
    10, 3, 2, 12, 12, 16, 12, 1, 9, 19, 2, 10, 0, 1, 16, 12, 9, 13, 15, 13,
    16, 19, 2, 4, 6, 19, 5, 5, 8, 19, 18, 1, 2, 15, 6, 0, 17, 8, 14, 13,
]


def test_cifar_tables():
    assert len(CIFAR10_CLASS_NAMES) == 10 and CIFAR10_CLASS_NAMES[0] == "airplane"
    assert len(CIFAR100_CLASS_NAMES) == 100 == len(set(CIFAR100_CLASS_NAMES))
    assert list(CIFAR100_CLASS_NAMES) == sorted(CIFAR100_CLASS_NAMES)  # official order
    assert len(CIFAR100_SUPERCLASS_NAMES) == 20
    assert CIFAR100_SUPERCLASS_NAMES[0] == "aquatic_mammals"
    assert CIFAR100_SUPERCLASS_NAMES[-1] == "vehicles_2"
    assert CIFAR100_SUPERCLASS.shape == (100,) and CIFAR100_SUPERCLASS.dtype == np.int32
    np.testing.assert_array_equal(CIFAR100_SUPERCLASS, REFERENCE_SUPERCLASS)
    idx = CIFAR100_CLASS_NAMES.index
    assert CIFAR100_SUPERCLASS_NAMES[CIFAR100_SUPERCLASS[idx("whale")]] == "aquatic_mammals"
    assert CIFAR100_SUPERCLASS_NAMES[CIFAR100_SUPERCLASS[idx("lawn_mower")]] == "vehicles_2"
    for name, members in CIFAR100_SUPERCLASS_MEMBERS:
        assert len(members) == 5, name


def test_coarsen_eq4():
    y = np.arange(10)
    np.testing.assert_array_equal(coarsen(y, 10, 5), [0, 1, 2, 3, 4, 0, 1, 2, 3, 4])
    np.testing.assert_array_equal(coarsen(y, 10, 2), y % 2)
    np.testing.assert_array_equal(coarsen(y, 10, 10), y)
    out = coarsen(jnp.arange(10), 10, 5)
    assert isinstance(out, jax.Array)
    np.testing.assert_array_equal(jax.jit(lambda v: coarsen(v, 10, 5))(jnp.arange(10)), y % 5)


@pytest.mark.parametrize(
    "args, err",
    [
        ((np.arange(10), 10, 3), ConfigError),  # 3 does not divide 10
        ((np.arange(10), 10, 0), ConfigError),
        ((np.array([0, 10]), 10, 5), DataError),  # out of range
        ((np.array([-1, 0]), 10, 5), DataError),
        ((np.array([0.0, 1.0]), 10, 5), DataError),  # not integers
    ],
)
def test_coarsen_errors(args, err):
    with pytest.raises(err):
        coarsen(*args)
    assert issubclass(err, ValueError)


def test_refine_eq5():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 10, size=20_000)
    fine = refine(y, 10, seed=3)
    assert set(np.unique(fine - y)) == {0, 10}  # y~ = y + beta * C
    beta = (fine >= 10).mean()
    assert abs(beta - 0.5) < 0.02  # Bernoulli(1/2); 0.02 is > 5 std for n = 20,000
    np.testing.assert_array_equal(refine(y, 10, seed=3), fine)  # deterministic
    assert not np.array_equal(refine(y, 10, seed=4), fine)
    np.testing.assert_array_equal(np.asarray(refine(jnp.asarray(y), 10, seed=3)), fine)
    assert isinstance(refine(jnp.asarray(y), 10, seed=3), jax.Array)
    np.testing.assert_array_equal(fine % 10, y)


def test_random_coarsen_app_f():
    y = np.arange(10)
    perm = random_permutation(10, seed=7)
    out = random_coarsen(y, 10, 5, seed=7)
    np.testing.assert_array_equal(out, perm[y] % 5)
    assert np.bincount(out).tolist() == [2] * 5  # each label merges C / C~ classes
    # Different seeds give different groupings, unlike the fixed pairs of eq. 4.
    groupings = {tuple(random_coarsen(y, 10, 5, seed=s).tolist()) for s in range(5)}
    assert len(groupings) > 1 and tuple(coarsen(y, 10, 5).tolist()) not in groupings
    np.testing.assert_array_equal(coarsen([0, 6, 9], 10, 5), [0, 1, 4])  # plain lists too
    np.testing.assert_array_equal(np.asarray(random_coarsen(jnp.asarray(y), 10, 5, seed=7)), out)
    jitted = jax.jit(lambda v: random_coarsen(v, 10, 5, seed=7))(jnp.asarray(y))
    np.testing.assert_array_equal(np.asarray(jitted), out)


def _divisor_case():
    return st.integers(1, 12).flatmap(
        lambda k: st.integers(1, 6).flatmap(
            lambda m: st.tuples(
                st.just(k * m),
                st.just(k),
                st.lists(st.integers(0, k * m - 1), min_size=0, max_size=40),
                st.integers(0, 2**31 - 1),
            )
        )
    )


@settings(max_examples=60, deadline=None)
@given(case=_divisor_case(), kind=st.sampled_from(["original", "coarse", "fine", "random_coarse"]))
def test_mapping_agrees_with_labels(case, kind):
    num_classes, num_coarse, ys, seed = case
    y = np.asarray(ys, dtype=np.int64)
    y_test = np.arange(num_classes)
    tr, te, mapping = transform_labels(kind, y, y_test, num_classes, num_coarse, seed=seed)
    assert tr.dtype == np.int32 and te.dtype == np.int32
    assert tr.shape == y.shape and te.shape == y_test.shape
    for labels, classes in ((tr, y), (te, y_test)):
        assert ((labels >= 0) & (labels < mapping.num_labels)).all()
        for label, c in zip(labels, classes):
            assert c in mapping.classes_of_label[label]
    if kind != "fine":
        np.testing.assert_array_equal(mapping.label_of_class, te)
    expect_coarsening = kind in ("coarse", "random_coarse") and num_classes > num_coarse
    assert mapping.is_coarsening == expect_coarsening
    assert LabelMapping.from_dict(mapping.to_dict()) == mapping


def test_fine_mapping_and_independent_test_draw():
    y = np.tile(np.arange(10), 500)
    tr, te, m = transform_labels("fine", y, y, 10, seed=5)
    np.testing.assert_array_equal(tr, refine(y, 10, 5))
    assert not np.array_equal(tr, te)  # independent draws for train and test
    assert m.num_labels == 20 and m.classes_of_label[3] == (3,) and m.classes_of_label[13] == (3,)
    assert not m.is_coarsening
    with pytest.raises(ConfigError, match="more than one label"):
        m.label_of_class


def test_cifar100_superclass_kind():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 100, size=300)
    tr, te, m = transform_labels("cifar100_superclass", y, y[:50], 100,
                                 y_train_coarse=CIFAR100_SUPERCLASS[y])
    np.testing.assert_array_equal(tr, CIFAR100_SUPERCLASS[y])
    np.testing.assert_array_equal(m.label_of_class, CIFAR100_SUPERCLASS)
    assert m.num_labels == 20 and m.is_coarsening
    wrong = (CIFAR100_SUPERCLASS[y] + 1) % 20
    with pytest.raises(DataError, match="y_train_coarse"):
        transform_labels("cifar100_superclass", y, y, 100, y_train_coarse=wrong)
    with pytest.raises(ConfigError):
        transform_labels("cifar100_superclass", y % 10, y % 10, 10)
    names = class_names_of_labels(m, CIFAR100_CLASS_NAMES)
    assert names[0] == "aquatic_mammals"


def test_mapping_save_load_and_errors(tmp_path):
    _, _, m = transform_labels("random_coarse", np.arange(10), np.arange(10), 10, 5, seed=2)
    path = tmp_path / "label_mapping.json"
    m.save(path)
    assert LabelMapping.load(path) == m
    assert class_names_of_labels(m, CIFAR10_CLASS_NAMES)[0].count("+") == 1
    with pytest.raises(ConfigError, match="not found"):
        LabelMapping.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ConfigError, match="not valid JSON"):
        LabelMapping.load(tmp_path / "bad.json")
    with pytest.raises(ConfigError, match="malformed"):  # int("ten"): ValueError, wrapped
        LabelMapping.from_dict(dict(m.to_dict(), num_classes="ten"))
    with pytest.raises(ConfigError, match="^LabelMapping: 5 label groups for num_labels=3$"):
        LabelMapping.from_dict(dict(m.to_dict(), num_labels=3))  # not re-wrapped
    with pytest.raises(ConfigError, match="unknown"):
        transform_labels("halves", np.arange(10), np.arange(10), 10)
    for bad_seed in (-1, 1.5):
        with pytest.raises(ConfigError, match="seed must be a non-negative int"):
            transform_labels("fine", np.arange(10), np.arange(10), 10, seed=bad_seed)
    with pytest.raises(ConfigError, match="seed"):
        random_coarsen(np.arange(10), 10, 5, seed=-3)
    with pytest.raises(ConfigError, match="needs num_coarse"):
        transform_labels("coarse", np.arange(10), np.arange(10), 10)
    with pytest.raises(NcfineError, match="y_test"):
        transform_labels("original", np.arange(10), np.arange(11), 10)
    assert set(KINDS) == {"original", "coarse", "fine", "random_coarse", "cifar100_superclass"}
