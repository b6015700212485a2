"""Label transforms of the paper: coarse, fine, random-coarse and CIFAR-100 superclasses.

The paper trains on labels derived from the original classes ``y in {0, ..., C-1}`` and
then asks whether the last-layer features still separate the *original* classes:

* coarse (eq. 4): ``y~ = y mod C~`` merges the ``C / C~`` classes ``k, k + C~, ...`` into
  one training label ``k`` (e.g. CIFAR-10 with ``C~ = 5`` pairs airplane with dog).
* fine (eq. 5): ``y~ = y + beta * C`` with ``beta ~ Bernoulli(1/2)`` per sample splits each
  class in two arbitrary halves, giving ``2C`` training labels.
* random coarse (App. F): permute the class indices with a seed, then coarsen.
* CIFAR-100 superclasses: the 20 official coarse labels of Krizhevsky (2009).

Every transform is a pure function of integer arrays (numpy, or concrete jax arrays; the
type of the input is kept). ``transform_labels`` is what experiments call: it transforms
train and test labels and returns a ``LabelMapping`` recording which original classes make
up each training label, saved with a run so analysis can recover the class structure.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Sequence

import numpy as np

from ncfine_jax.errors import ConfigError, DataError, NcfineError
from ncfine_jax.io import atomic_write_json, read_json
from ncfine_jax.text import squashed

__all__ = [
    "CIFAR100_CLASS_NAMES",
    "CIFAR100_SUPERCLASS",
    "CIFAR100_SUPERCLASS_MEMBERS",
    "CIFAR100_SUPERCLASS_NAMES",
    "CIFAR10_CLASS_NAMES",
    "COARSE_KINDS",
    "KINDS",
    "LabelMapping",
    "coarsen",
    "random_coarsen",
    "random_permutation",
    "refine",
    "transform_labels",
]

CIFAR10_CLASS_NAMES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)  # official label order 0..9 (batches.meta)

# Official CIFAR-100 fine label names, in label order 0..99 (alphabetical; "meta" file).
CIFAR100_CLASS_NAMES: tuple[str, ...] = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle",
    "bicycle", "bottle", "bowl", "boy", "bridge", "bus", "butterfly", "camel",
    "can", "castle", "caterpillar", "cattle", "chair", "chimpanzee", "clock",
    "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur",
    "dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster",
    "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion",
    "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain", "mouse",
    "mushroom", "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear",
    "pickup_truck", "pine_tree", "plain", "plate", "poppy", "porcupine",
    "possum", "rabbit", "raccoon", "ray", "road", "rocket", "rose", "sea",
    "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake", "spider",
    "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank",
    "telephone", "television", "tiger", "tractor", "train", "trout", "tulip",
    "turtle", "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm",
)

# The 20 official superclasses in official coarse-label order 0..19, with their 5 members
# (Krizhevsky 2009, "Learning Multiple Layers of Features from Tiny Images", App. D).
CIFAR100_SUPERCLASS_MEMBERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("aquatic_mammals", ("beaver", "dolphin", "otter", "seal", "whale")),
    ("fish", ("aquarium_fish", "flatfish", "ray", "shark", "trout")),
    ("flowers", ("orchid", "poppy", "rose", "sunflower", "tulip")),
    ("food_containers", ("bottle", "bowl", "can", "cup", "plate")),
    ("fruit_and_vegetables", ("apple", "mushroom", "orange", "pear", "sweet_pepper")),
    ("household_electrical_devices", ("clock", "keyboard", "lamp", "telephone", "television")),
    ("household_furniture", ("bed", "chair", "couch", "table", "wardrobe")),
    ("insects", ("bee", "beetle", "butterfly", "caterpillar", "cockroach")),
    ("large_carnivores", ("bear", "leopard", "lion", "tiger", "wolf")),
    ("large_man-made_outdoor_things", ("bridge", "castle", "house", "road", "skyscraper")),
    ("large_natural_outdoor_scenes", ("cloud", "forest", "mountain", "plain", "sea")),
    ("large_omnivores_and_herbivores", ("camel", "cattle", "chimpanzee", "elephant", "kangaroo")),
    ("medium_mammals", ("fox", "porcupine", "possum", "raccoon", "skunk")),
    ("non-insect_invertebrates", ("crab", "lobster", "snail", "spider", "worm")),
    ("people", ("baby", "boy", "girl", "man", "woman")),
    ("reptiles", ("crocodile", "dinosaur", "lizard", "snake", "turtle")),
    ("small_mammals", ("hamster", "mouse", "rabbit", "shrew", "squirrel")),
    ("trees", ("maple_tree", "oak_tree", "palm_tree", "pine_tree", "willow_tree")),
    ("vehicles_1", ("bicycle", "bus", "motorcycle", "pickup_truck", "train")),
    ("vehicles_2", ("lawn_mower", "rocket", "streetcar", "tank", "tractor")),
)

CIFAR100_SUPERCLASS_NAMES: tuple[str, ...] = tuple(n for n, _ in CIFAR100_SUPERCLASS_MEMBERS)


def _superclass_table() -> np.ndarray:
    index = {name: i for i, name in enumerate(CIFAR100_CLASS_NAMES)}
    table = np.full(len(CIFAR100_CLASS_NAMES), -1, dtype=np.int32)
    for coarse, (_, members) in enumerate(CIFAR100_SUPERCLASS_MEMBERS):
        for name in members:
            table[index[name]] = coarse
    assert (table >= 0).all() and np.bincount(table).tolist() == [5] * 20
    table.setflags(write=False)
    return table


#: int32 [100]: fine label -> official coarse label (superclass) of CIFAR-100.
CIFAR100_SUPERCLASS: np.ndarray = _superclass_table()

KINDS: tuple[str, ...] = ("original", "coarse", "fine", "random_coarse", "cifar100_superclass")
# The kinds that merge classes by ``y mod num_coarse`` (they take ``num_coarse``).
COARSE_KINDS: tuple[str, ...] = ("coarse", "random_coarse")


# --------------------------------------------------------------------------- helpers


def _is_jax_array(x: Any) -> bool:
    # Checked by module name so plain numpy use never imports jax.
    return type(x).__module__.startswith("jax") or "Tracer" in type(x).__name__


def _as_array(labels: Any) -> Any:
    """Lists and tuples become numpy arrays; numpy and jax arrays pass through."""
    return labels if hasattr(labels, "dtype") else np.asarray(labels)


def _concrete(labels: Any) -> np.ndarray | None:
    """numpy view of ``labels``, or None when they are traced under jit."""
    try:
        return np.asarray(labels)
    except Exception:  # jax TracerArrayConversionError: values unknown at trace time
        return None


def _check_labels(labels: Any, num_classes: int, what: str = "labels") -> np.ndarray | None:
    """Validate labels when concrete; return their numpy view (None when traced)."""
    if isinstance(num_classes, (bool, np.bool_)) or not isinstance(num_classes, (int, np.integer)) \
            or num_classes < 1:
        raise ConfigError(f"num_classes must be a positive int, got {num_classes!r}")
    # The shape and dtype are known under jit too: a bool mask or an [n, C] one-hot array
    # would otherwise be taken for class indices and give silently wrong labels.
    if np.ndim(labels) != 1:
        raise DataError(f"{what}: expected a 1-D array [n] of class indices, got shape "
                        f"{tuple(np.shape(labels))}")
    dtype = np.dtype(labels.dtype) if hasattr(labels, "dtype") else np.asarray(labels).dtype
    if dtype.kind not in "iu":
        raise DataError(f"{what}: expected an integer array, got dtype {dtype}")
    arr = _concrete(labels)
    if arr is None:
        return None
    if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
        raise DataError(
            f"{what}: values must lie in [0, {num_classes}), got range "
            f"[{int(arr.min())}, {int(arr.max())}]"
        )
    return arr


def count_ids(ids: Any, what: str, kind: str = "class") -> int:
    """The number C of distinct ``ids`` (class ids, or training label ids with ``kind``
    "label") when they are exactly 0..C-1; a count inferred from the largest id alone
    would turn ids 1000..1009 into 1010 classes.

    Raises:
      DataError: they are not 0..C-1, e.g. "train_classes: class ids are not 0..C-1: found
        10 distinct ids between 1000 and 1009; number them 0..9 in sorted order
        (numpy.unique(ids, return_inverse=True)[1])".
    """
    distinct = np.unique(np.asarray(ids))
    if distinct.size == 0:
        return 0
    lo, hi, count = int(distinct[0]), int(distinct[-1]), int(distinct.size)
    if lo != 0 or hi != count - 1:
        letter = "C" if kind == "class" else "L"
        raise DataError(
            f"{what}: {kind} ids are not 0..{letter}-1: found {count} distinct id"
            f"{'s' if count > 1 else ''} between {lo} and {hi}; number them 0..{count - 1} in "
            "sorted order (numpy.unique(ids, return_inverse=True)[1])")
    return count


def _check_num_coarse(num_classes: int, num_coarse: Any) -> None:
    if isinstance(num_coarse, (bool, np.bool_)) or not isinstance(num_coarse, (int, np.integer)) \
            or num_coarse < 1:
        raise ConfigError(f"num_coarse must be a positive int, got {num_coarse!r}")
    if num_classes % num_coarse:
        raise ConfigError(
            f"num_coarse={num_coarse} does not divide num_classes={num_classes}"
        )


def check_seed(seed: Any) -> int:
    """``seed`` as an int; ConfigError unless it is a non-negative int (numpy's rule)."""
    # numpy's generators reject negative or non-integer seeds with a bare ValueError/TypeError.
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed must be a non-negative int, got {seed!r}")
    return int(seed)


def _like(result: np.ndarray, labels: Any) -> Any:
    """Return ``result`` as the same array type (numpy or jax) as ``labels``."""
    if _is_jax_array(labels):
        import jax.numpy as jnp

        return jnp.asarray(result)
    return result


# --------------------------------------------------------------------------- transforms


def coarsen(labels: Any, num_classes: int, num_coarse: int) -> Any:
    """Coarse labels ``y~ = y mod C~`` (paper eq. 4).

    Classes ``k, k + C~, k + 2 C~, ...`` share the training label ``k``, so each coarse
    label holds ``C / C~`` original classes.

    Args:
      labels: [n] int, original labels in ``[0, num_classes)`` (numpy or jax; also works
        traced under jit, where the range check is skipped).
      num_classes: C, the number of original classes.
      num_coarse: C~, the number of coarse labels; must divide C.

    Returns:
      [n] coarse labels in ``[0, num_coarse)``, same array type and dtype as ``labels``.

    Raises:
      ConfigError: num_coarse does not divide num_classes.
      DataError: labels are not integers or fall outside ``[0, num_classes)``.
    """
    _check_num_coarse(num_classes, num_coarse)
    labels = _as_array(labels)
    _check_labels(labels, num_classes)
    return labels % num_coarse


def refine(labels: Any, num_classes: int, seed: int) -> Any:
    """Fine labels ``y~ = y + beta * C`` with ``beta ~ Bernoulli(1/2)`` per sample (eq. 5).

    Each class c is split at random into labels c and c + C, giving 2C training labels.
    The draws come from ``numpy.random.default_rng(seed)``, so a seed gives the same
    labels for numpy and jax inputs.

    Args:
      labels: [n] int, original labels in ``[0, num_classes)``; must be concrete (not
        traced under jit).
      num_classes: C.
      seed: seed of the Bernoulli draws.

    Returns:
      [n] fine labels in ``[0, 2 * num_classes)``, same array type and dtype as ``labels``.
    """
    labels = _as_array(labels)
    arr = _check_labels(labels, num_classes)
    if arr is None:
        raise TypeError("refine needs concrete labels (it draws with numpy); call it outside jit")
    beta = np.random.default_rng(check_seed(seed)).integers(0, 2, size=arr.shape)
    return _like((arr + beta * num_classes).astype(arr.dtype, copy=False), labels)


def random_permutation(num_classes: int, seed: int) -> np.ndarray:
    """The class permutation used by ``random_coarsen``: int64 [C], class -> new index."""
    return np.random.default_rng(check_seed(seed)).permutation(num_classes)


def random_coarsen(labels: Any, num_classes: int, num_coarse: int, seed: int) -> Any:
    """Random coarsening (paper App. F): ``y~ = pi(y) mod C~`` for a seeded permutation pi.

    Shuffling the class indices before eq. 4 makes the groups of merged classes random
    instead of the fixed pairs ``k, k + C~``.

    Args:
      labels: [n] int, original labels in ``[0, num_classes)`` (numpy or jax).
      num_classes: C.
      num_coarse: C~; must divide C.
      seed: seed of the permutation (``random_permutation(num_classes, seed)``).

    Returns:
      [n] coarse labels in ``[0, num_coarse)``, same array type as ``labels``.
    """
    _check_num_coarse(num_classes, num_coarse)
    labels = _as_array(labels)
    _check_labels(labels, num_classes)
    perm = random_permutation(num_classes, seed)
    if _is_jax_array(labels):
        import jax.numpy as jnp

        return jnp.asarray(perm, dtype=labels.dtype)[labels] % num_coarse
    return (perm.astype(np.asarray(labels).dtype)[labels]) % num_coarse


def _test_seed(seed: int) -> int:
    # Independent stream for the test split, derived from the run seed.
    return int(np.random.SeedSequence(seed, spawn_key=(1,)).generate_state(1)[0])


# --------------------------------------------------------------------------- mapping


@dataclasses.dataclass(frozen=True)
class LabelMapping:
    """Which original classes make up each training label.

    Attributes:
      kind: "original" | "coarse" | "fine" | "random_coarse" | "cifar100_superclass".
      num_classes: C, number of original classes.
      num_labels: number of training labels (C~ for coarse kinds, 2C for "fine").
      classes_of_label: for each training label, the sorted original classes whose
        samples carry it. For "fine", labels c and c + C both hold class c.
      seed: seed of the random transforms ("fine", "random_coarse"), else None.
      num_coarse: C~ for the coarse kinds, else None.
    """

    kind: str
    num_classes: int
    num_labels: int
    classes_of_label: tuple[tuple[int, ...], ...]
    seed: int | None = None
    num_coarse: int | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ConfigError(f"label kind {self.kind!r} is unknown; expected one of {KINDS}")
        # Normalise to nested tuples of ints so equality and hashing work after JSON.
        object.__setattr__(
            self,
            "classes_of_label",
            tuple(tuple(sorted(int(c) for c in cs)) for cs in self.classes_of_label),
        )
        if len(self.classes_of_label) != self.num_labels:
            raise ConfigError(
                f"LabelMapping: {len(self.classes_of_label)} label groups for "
                f"num_labels={self.num_labels}"
            )
        covered = {c for cs in self.classes_of_label for c in cs}
        if covered != set(range(self.num_classes)):
            raise ConfigError(
                f"LabelMapping: label groups cover classes {sorted(covered)}, "
                f"expected 0..{self.num_classes - 1}"
            )

    @property
    def label_of_class(self) -> np.ndarray:
        """int32 [C]: the training label of each original class.

        Raises:
          ConfigError: for "fine", where every class carries two labels.
        """
        out = np.full(self.num_classes, -1, dtype=np.int32)
        for label, classes in enumerate(self.classes_of_label):
            for c in classes:
                if out[c] >= 0:
                    raise ConfigError(
                        f"label_of_class: class {c} carries more than one label "
                        f"(kind={self.kind!r})"
                    )
                out[c] = label
        return out

    @property
    def is_coarsening(self) -> bool:
        """True when every class is in exactly one label and some label has >1 class."""
        counts = np.zeros(self.num_classes, dtype=np.int64)
        for classes in self.classes_of_label:
            counts[list(classes)] += 1
        return bool((counts == 1).all()) and any(len(cs) > 1 for cs in self.classes_of_label)

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "num_classes": int(self.num_classes),
            "num_labels": int(self.num_labels),
            "classes_of_label": [list(cs) for cs in self.classes_of_label],
            "seed": None if self.seed is None else int(self.seed),
            "num_coarse": None if self.num_coarse is None else int(self.num_coarse),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "LabelMapping":
        try:
            return cls(
                kind=d["kind"],
                num_classes=int(d["num_classes"]),
                num_labels=int(d["num_labels"]),
                classes_of_label=tuple(tuple(cs) for cs in d["classes_of_label"]),
                seed=d.get("seed"),
                num_coarse=d.get("num_coarse"),
            )
        except NcfineError:
            raise
        except (KeyError, TypeError, ValueError) as e:  # e.g. int("ten")
            raise ConfigError(f"label mapping dict is malformed: {e!r}") from None

    def save(self, path: str | os.PathLike) -> None:
        """Write the mapping as JSON, atomically."""
        atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "LabelMapping":
        try:
            d = read_json(path)
        except FileNotFoundError:
            raise ConfigError(f"label mapping {path}: file not found") from None
        except IsADirectoryError:
            raise DataError(f"label mapping {path}: is a folder, not a label_mapping.json "
                            "file") from None
        except OSError as e:  # e.g. no read permission
            raise DataError(f"label mapping {path}: cannot be read "
                            f"({e.strerror or type(e).__name__})") from None
        except ValueError as e:
            raise ConfigError(f"label mapping {path}: not valid JSON "
                              f"({squashed(e)})") from None
        return cls.from_dict(d)

    @classmethod
    def for_kind(
        cls,
        kind: str,
        num_classes: int,
        num_coarse: int | None = None,
        seed: int | None = 0,
    ) -> "LabelMapping":
        """The mapping of ``kind`` without transforming any labels."""
        C = num_classes
        if kind == "original":
            return cls(kind, C, C, tuple((c,) for c in range(C)))
        if kind == "fine":
            groups = tuple((c,) for c in range(C)) * 2
            return cls(kind, C, 2 * C, groups, seed=seed)
        if kind == "coarse":
            _need_num_coarse(kind, num_coarse)
            _check_num_coarse(C, num_coarse)
            groups = tuple(tuple(range(k, C, num_coarse)) for k in range(num_coarse))
            return cls(kind, C, num_coarse, groups, num_coarse=num_coarse)
        if kind == "random_coarse":
            _need_num_coarse(kind, num_coarse)
            _check_num_coarse(C, num_coarse)
            perm = random_permutation(C, seed)
            groups = tuple(
                tuple(np.flatnonzero(perm % num_coarse == k).tolist()) for k in range(num_coarse)
            )
            return cls(kind, C, num_coarse, groups, seed=seed, num_coarse=num_coarse)
        if kind == "cifar100_superclass":
            if C != 100:
                raise ConfigError(f"cifar100_superclass needs num_classes=100, got {C}")
            groups = tuple(
                tuple(np.flatnonzero(CIFAR100_SUPERCLASS == k).tolist()) for k in range(20)
            )
            return cls(kind, C, 20, groups, num_coarse=20)
        raise ConfigError(f"label kind {kind!r} is unknown; expected one of {KINDS}")


def _need_num_coarse(kind: str, num_coarse: int | None) -> None:
    if num_coarse is None:
        raise ConfigError(f"label kind {kind!r} needs num_coarse")


def transform_labels(
    kind: str,
    y_train: Any,
    y_test: Any,
    num_classes: int,
    num_coarse: int | None = None,
    seed: int = 0,
    y_train_coarse: Any = None,
    y_test_coarse: Any = None,
) -> tuple[np.ndarray, np.ndarray, LabelMapping]:
    """Training labels of the given kind for train and test, plus their mapping.

    Args:
      kind: one of ``KINDS``: "original" (unchanged), "coarse" (eq. 4), "fine" (eq. 5;
        train uses ``refine(y_train, C, seed)``, test an independent draw from a stream
        derived from ``seed``), "random_coarse" (App. F), "cifar100_superclass" (the
        official coarse labels; taken from ``y_*_coarse`` when given, which must agree with
        ``CIFAR100_SUPERCLASS``, else looked up in that table).
      y_train: [n_train] int original labels.
      y_test: [n_test] int original labels.
      num_classes: C.
      num_coarse: C~ for "coarse" and "random_coarse".
      seed: seed of "fine" and "random_coarse".
      y_train_coarse, y_test_coarse: official CIFAR-100 coarse labels, optional.

    Returns:
      ``(train_labels, test_labels, mapping)``; labels are int32 numpy arrays.
    """
    check_seed(seed)
    y_train_np = _check_labels(y_train, num_classes, "y_train")
    y_test_np = _check_labels(y_test, num_classes, "y_test")
    if y_train_np is None or y_test_np is None:
        raise TypeError("transform_labels needs concrete labels; call it outside jit")
    y_train_np = y_train_np.astype(np.int32)
    y_test_np = y_test_np.astype(np.int32)
    seed_used = seed if kind in ("fine", "random_coarse") else None
    mapping = LabelMapping.for_kind(kind, num_classes, num_coarse, seed_used)
    if kind == "original":
        return y_train_np, y_test_np, mapping
    if kind == "coarse":
        return (
            coarsen(y_train_np, num_classes, num_coarse),
            coarsen(y_test_np, num_classes, num_coarse),
            mapping,
        )
    if kind == "fine":
        return (
            refine(y_train_np, num_classes, seed),
            refine(y_test_np, num_classes, _test_seed(seed)),
            mapping,
        )
    if kind == "random_coarse":
        return (
            random_coarsen(y_train_np, num_classes, num_coarse, seed),
            random_coarsen(y_test_np, num_classes, num_coarse, seed),
            mapping,
        )
    # cifar100_superclass
    out = []
    for name, y, given in (
        ("y_train_coarse", y_train_np, y_train_coarse),
        ("y_test_coarse", y_test_np, y_test_coarse),
    ):
        expected = CIFAR100_SUPERCLASS[y]
        if given is not None:
            given_np = np.asarray(given)
            if given_np.shape != y.shape or not np.array_equal(given_np, expected):
                raise DataError(
                    f"{name}: does not match the official CIFAR-100 superclass of the fine "
                    f"labels (shape {given_np.shape} vs {y.shape})"
                )
        out.append(expected.astype(np.int32))
    return out[0], out[1], mapping


def class_names_of_labels(
    mapping: LabelMapping, class_names: Sequence[str]
) -> list[str]:
    """Readable name per training label, e.g. "airplane+dog" for CIFAR-10 coarse label 0."""
    if mapping.kind == "cifar100_superclass":
        return list(CIFAR100_SUPERCLASS_NAMES)
    names = ["+".join(class_names[c] for c in cs) for cs in mapping.classes_of_label]
    if mapping.kind == "fine":
        C = mapping.num_classes
        names = [f"{n}/{'a' if i < C else 'b'}" for i, n in enumerate(names)]
    return names
