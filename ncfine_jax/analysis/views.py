"""What the analysis does for each kind of label mapping, decided in one place.

A coarsening (``coarse``, ``random_coarse``, CIFAR-100 superclasses: every label merges
classes) has its fine structure *inside* the labels: D is over the original classes,
grouped by training label, the null shuffles the classes inside each label, and CLP
clusters each label back into its classes. A refinement (``fine``: each class split into
labels) is the mirror image: D is over the training labels, grouped by original class,
and the null shuffles the labels inside each class. ``original`` (labels are the
classes) and any other mapping have no structure to test: D is over the classes, in one
group.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class LabelView:
    """How one label mapping is analysed.

    Attributes:
      kind: the mapping's kind ("coarse", "fine", "original", ...).
      grouping: "coarsening", "refinement" or "none".
      superclass: [units of D] int32, the group of each row of D (MSDR's grouping, the
        heatmap's blocks): the training label of each class (coarsening), the original
        class of each label (refinement), all zeros (none).
      labels_are_classes: the mapping is the identity ("original").
      unit: what a row of D is ("class" or "training label").
    """
    kind: str
    grouping: str
    superclass: np.ndarray
    labels_are_classes: bool = False

    @property
    def is_coarsening(self) -> bool:
        """Each label merges classes: CLP can reconstruct them."""
        return self.grouping == "coarsening"

    @property
    def is_refinement(self) -> bool:
        return self.grouping == "refinement"

    @property
    def has_structure(self) -> bool:
        """Labels and classes differ, so MSDR and its permutation null mean something."""
        return self.grouping != "none"

    @property
    def distances_over_labels(self) -> bool:
        """D's rows are the training labels (a refinement), not the original classes."""
        return self.is_refinement

    @property
    def unit(self) -> str:
        return "training label" if self.distances_over_labels else "class"

    def null_roles(self, labels: np.ndarray, classes: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(groups [n], members [n], group of each member [M]) of the fine-structure
        null, from the training labels and classes [n] of the samples: the members
        (the rows of D) are shuffled inside their groups."""
        labels, classes = np.asarray(labels, np.int64), np.asarray(classes, np.int64)
        group_of_member = self.superclass.astype(np.int64)
        if self.is_refinement:
            return classes, labels, group_of_member
        return labels, classes, group_of_member


def label_view(mapping) -> LabelView:
    """The ``LabelView`` of a ``LabelMapping`` (the one branch on the label kind)."""
    if mapping.kind == "fine":
        return LabelView(mapping.kind, "refinement",
                         np.array([cs[0] for cs in mapping.classes_of_label], np.int32))
    if mapping.is_coarsening:
        return LabelView(mapping.kind, "coarsening",
                         np.asarray(mapping.label_of_class, np.int32))
    return LabelView(mapping.kind, "none", np.zeros(mapping.num_classes, np.int32),
                     labels_are_classes=mapping.kind == "original")
