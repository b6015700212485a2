"""Cluster-and-Linear-Probe (CLP, paper section 4.3) and the linear probe on original labels (LPO).

What ``cluster_and_linear_probe`` does, step by step:

1. For each training label ``l`` (a superclass in coarse runs), take the training
   features carrying it and reduce them: t-SNE to 2-D (default, as in the paper), PCA
   to ``pca_dims`` dimensions, or nothing.
2. Run KMeans there with ``k_l = len(classes_of_label[l])`` clusters (the number of
   original classes merged into the label), or with the k that maximises the
   silhouette score when ``k_selection="silhouette"``. Every training sample gets a
   *reconstructed label*: the pair (l, cluster), numbered globally
   ``offset[l] + cluster`` so there are ``sum_l k_l`` reconstructed labels (10 for
   Coarse CIFAR-10).
3. Train one linear probe (``probe.fit_linear_probe``: softmax regression on the
   full, unreduced, standardised features) on all training samples with the
   reconstructed labels. The probe sees neither the original classes nor, at test
   time, the test sample's training label: like the paper's classifier it predicts
   among all reconstructed labels, so a test image sent to another superclass's
   cluster counts as wrong.
4. Map reconstructed labels to original classes: within each label ``l`` the k_l
   clusters are matched one-to-one to ``classes_of_label[l]``. The paper tries every
   permutation per superclass and keeps the best; since each test prediction lies
   in exactly one superclass, the total number of correct test predictions is a sum
   of independent per-superclass terms, each maximised by a linear assignment on the
   (cluster x class) count matrix. Hungarian matching
   (``scipy.optimize.linear_sum_assignment``) therefore finds exactly the paper's
   best mapping, in polynomial time (5! = 120 permutations per CIFAR-100 superclass
   would also be fine, but 10 subclasses would not). Reported as ``clp_accuracy``.
   ``clp_accuracy_train_mapping`` uses the mapping fitted on the *training*
   clusters instead (no test labels used anywhere), the fair number to quote.
   When a selected k differs from the number of classes, a bijection does not exist
   and each cluster maps to its majority class (the best many-to-one mapping).

With ``max_tsne_points`` set, t-SNE and KMeans run on a seeded random subset of each
label and the remaining samples take the majority cluster of their 10 nearest
subset neighbours in the PCA space t-SNE was given (a k-NN extension); t-SNE of
50,000 points is otherwise the slowest step of the analysis.

ARI and NMI compare the reconstructed training labels with the original training
classes (scikit-learn, label-permutation invariant).

A label whose training features all coincide (a collapsed label, or features that
became constant) has no embedding and no cluster structure: all its samples form
cluster 0 (no t-SNE is attempted; it is undefined there), ``per_superclass`` marks it
``"constant_features": True``, and CLP inside it is at chance (the majority class).
Without test data (``test_features=None``) the clustering, its training mapping, ARI
and NMI are still computed; the probe and every test accuracy are skipped (None).
"""

from __future__ import annotations

from typing import Any, Literal, Sequence, TypedDict

import numpy as np
from scipy.optimize import linear_sum_assignment

from ncfine_jax.analysis.embedding import all_rows_equal, pca, tsne
from ncfine_jax.analysis.options import MIN_TSNE_POINTS, REDUCTIONS
from ncfine_jax.analysis.probe import check_features, fit_linear_probe
from ncfine_jax.errors import NcfineError


class CLPResult(TypedDict):
    """What ``cluster_and_linear_probe`` returns. Test-derived entries are None without
    test data; arrays are NumPy and not for JSON."""
    clp_accuracy: float | None  # test, best per-superclass mapping (the paper's number)
    clp_accuracy_train_mapping: float | None  # test, mapping from training clusters
    clp_accuracy_label_routed: float | None  # diagnostic: argmax within own label's clusters
    cluster_accuracy_train: float  # training samples whose cluster maps to their class
    ari: float  # reconstructed training labels vs original classes
    nmi: float
    mapping_train: list  # per label, cluster -> original class (from training clusters)
    mapping_test: list | None  # per label, the best mapping on the test set
    num_reconstructed_labels: int
    reduce: str
    k_selection: str | None
    max_tsne_points: int | None
    probe_iterations: int | None
    probe_converged: bool | None
    per_superclass: list  # one dict per label
    reconstructed_train_labels: np.ndarray  # [n] int
    # [m] int: each test sample's class under the training mapping
    test_predicted_classes: np.ndarray | None
    embeddings: list  # per label: {"index": rows of the training set, "points": [., 2]}, or None
    # (reduce != "tsne", or the label's features are constant)
    probe: Any  # the fitted ``LinearProbe``


Reduce = Literal["tsne", "pca", "none"]  # one of options.REDUCTIONS
# Features beyond this magnitude are rescaled (by a power of two) before clustering.
_LARGE_FEATURES = 1e15
# KMeans runs single-threaded below this many points: on a shared 2-core machine its
# OpenMP threads cost far more than they save at these sizes.
_KMEANS_THREADED_FROM = 20_000


def best_cluster_mapping(counts: np.ndarray, one_to_one: bool = True) -> np.ndarray:
    """Best assignment of clusters (rows) to classes (columns) for a count matrix.

    Args:
        counts: [k, m] non-negative counts, ``counts[c, j]`` = samples in cluster c
            whose class is the j-th candidate class.
        one_to_one: with k == m, a permutation (Hungarian matching, maximising the
            matched total). Otherwise, or when False, each cluster takes its
            majority column (the best many-to-one mapping).

    Returns:
        [k] int column index for each cluster.
    """
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 2 or counts.shape[0] == 0 or counts.shape[1] == 0:
        raise NcfineError(f"counts: expected a non-empty [k, m] matrix, got shape {counts.shape}")
    k, m = counts.shape
    if one_to_one and k == m:
        rows, cols = linear_sum_assignment(counts, maximize=True)
        out = np.empty(k, dtype=np.int64)
        out[rows] = cols
        return out
    return np.argmax(counts, axis=1).astype(np.int64)


def _validate(
    train_features, train_labels, train_classes, test_features, test_labels, test_classes,
    classes_of_label,
):
    def arr1(x, name, n):
        a = np.asarray(x)
        if a.shape != (n,) or not np.issubdtype(a.dtype, np.integer):
            raise NcfineError(f"{name}: expected int array of shape [{n}], got {a.dtype} {a.shape}")
        return a.astype(np.int64)

    xtr = check_features(train_features, "train_features")
    ytr = arr1(train_labels, "train_labels", xtr.shape[0])
    ctr = arr1(train_classes, "train_classes", xtr.shape[0])
    if test_features is None:
        xte = yte = cte = None
    else:
        xte = check_features(test_features, "test_features")
        if xte.shape[1] != xtr.shape[1]:
            raise NcfineError(
                f"test_features: dimension {xte.shape[1]} differs from train_features' {xtr.shape[1]}"
            )
        yte = arr1(test_labels, "test_labels", xte.shape[0])
        cte = arr1(test_classes, "test_classes", xte.shape[0])
    col = [tuple(int(c) for c in cs) for cs in classes_of_label]
    if not col or any(len(cs) == 0 for cs in col):
        raise NcfineError("classes_of_label: needs one non-empty class tuple per training label")
    if any(len(set(cs)) != len(cs) for cs in col):
        raise NcfineError(f"classes_of_label: a label lists a class twice: {col}")
    col = [tuple(sorted(cs)) for cs in col]  # searchsorted below relies on the order
    num_labels = len(col)
    for name, y in (("train_labels", ytr), ("test_labels", yte)):
        if y is not None and (y.min() < 0 or y.max() >= num_labels):
            raise NcfineError(
                f"{name}: values must lie in [0, {num_labels}) (len(classes_of_label)), "
                f"got range [{y.min()}, {y.max()}]"
            )
    for l, cs in enumerate(col):
        members = ctr[ytr == l]
        stray = np.setdiff1d(members, cs)
        if stray.size:
            raise NcfineError(
                f"classes_of_label: training label {l} holds classes {stray.tolist()} "
                f"not listed in {list(cs)}"
            )
    return xtr, ytr, ctr, xte, yte, cte, col


def _cluster_one_label(
    x: np.ndarray,
    k_fixed: int,
    reduce: Reduce,
    seed: int,
    k_selection: str | None,
    k_candidates: Sequence[int],
    max_tsne_points: int | None,
    tsne_backend: str | None,
    pca_dims: int,
) -> dict:
    """Cluster one label's features. Returns clusters [n], k, embedding info, silhouette."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score
    from sklearn.neighbors import KNeighborsClassifier
    from threadpoolctl import threadpool_limits

    n = x.shape[0]
    if all_rows_equal(x):
        # One point: nothing to embed or cluster (and t-SNE is undefined there).
        return {"clusters": np.zeros(n, np.int64), "k": 1 if k_selection else int(k_fixed),
                "embedding": None, "embedding_index": None, "silhouette": None, "constant": True}
    peak = float(np.abs(x).max())
    if peak > _LARGE_FEATURES:
        # Squared distances (PCA, KMeans, k-NN in float32) would overflow. Every step
        # here is invariant to a global scale, and a power of two scales exactly.
        x = x * np.float32(2.0 ** -np.ceil(np.log2(peak)))
    space, x_pca, subset = _clustering_space(x, reduce, seed, max_tsne_points, tsne_backend,
                                             pca_dims)
    m = space.shape[0]

    def kmeans(k):
        if k == 1:
            return np.zeros(m, np.int64)
        # Small problems run much slower with OpenMP threads on a busy machine.
        with threadpool_limits(limits=1 if m < _KMEANS_THREADED_FROM else None, user_api="openmp"):
            km = KMeans(n_clusters=k, n_init=10, random_state=seed)
            return km.fit_predict(space).astype(np.int64)

    silhouette = None
    if k_selection is None:
        k = k_fixed
        if k > m:
            raise NcfineError(f"classes_of_label: {k} clusters requested for only {m} samples")
        clusters = kmeans(k)
    else:  # "silhouette"
        candidates = [int(k) for k in k_candidates if 2 <= int(k) < m]
        if not candidates:
            raise NcfineError(f"k_candidates: none in [2, {m}) for a label with {m} samples")
        best = None
        for k in candidates:
            cl = kmeans(k)
            # Silhouette is O(n^2); a seeded sample of 5,000 points estimates it well.
            score = float(silhouette_score(space, cl, sample_size=min(m, 5000), random_state=seed))
            if best is None or score > best[0]:
                best = (score, k, cl)
        silhouette, k, clusters = best

    embedding = space if reduce == "tsne" else None
    if subset is not None:
        knn = KNeighborsClassifier(n_neighbors=min(10, subset.size))
        knn.fit(x_pca[subset], clusters)
        full = knn.predict(x_pca)
        full[subset] = clusters  # subset points keep their own cluster
        clusters = full.astype(np.int64)
    return {
        "clusters": clusters, "k": int(k), "embedding": embedding,
        "embedding_index": subset, "silhouette": silhouette, "constant": False,
    }


def _clustering_space(x: np.ndarray, reduce: Reduce, seed: int, max_tsne_points: int | None,
                      tsne_backend: str | None, pca_dims: int):
    """The space KMeans runs in for one label's features x [n, d].

    Returns:
      (space [m, .], the PCA'd features [n, .] (t-SNE only, else None), the sorted indices
      of the m <= n points embedded by t-SNE or None for all).
    """
    n = x.shape[0]
    if reduce == "pca":
        return pca(x, pca_dims, seed), None, None
    if reduce != "tsne":  # "none" (reduce and k_selection are checked by cluster_and_linear_probe)
        return np.asarray(x, np.float64), None, None
    subset = None
    if max_tsne_points is not None and n > max_tsne_points:
        subset = np.sort(np.random.default_rng(seed).choice(n, size=max_tsne_points,
                                                            replace=False))
    x_pca = pca(x, pca_dims, seed) if x.shape[1] > pca_dims else x.astype(np.float32)
    fit_x = x_pca if subset is None else x_pca[subset]
    if all_rows_equal(fit_x):  # the subset drew copies of one point: embed all
        subset, fit_x = None, x_pca
    return tsne(fit_x, seed=seed, backend=tsne_backend, pca_dims=None), x_pca, subset


def cluster_and_linear_probe(
    train_features: np.ndarray, train_labels: np.ndarray, train_classes: np.ndarray,
    test_features: np.ndarray, test_labels: np.ndarray, test_classes: np.ndarray,
    classes_of_label: Sequence[Sequence[int]],
    reduce: Reduce = "tsne",
    seed: int = 0,
    k_selection: Literal["silhouette"] | None = None,
    *,
    k_candidates: Sequence[int] = range(2, 11),
    max_tsne_points: int | None = None,
    tsne_backend: str | None = None,
    pca_dims: int = 50,
    probe_kwargs: dict | None = None,
) -> CLPResult:
    """Cluster-and-Linear-Probe (see module docstring for the exact procedure).

    Args:
        train_features: [n, d] float training features.
        train_labels: [n] int training labels in [0, L).
        train_classes: [n] int original classes.
        test_features: [m, d] float, or None (no probe, no test accuracies).
        test_labels: [m] int training-label-space labels of the test samples (used
            only for the label-routed diagnostic, never by the main accuracy).
        test_classes: [m] int original classes (what accuracy is measured against).
        classes_of_label: L tuples, the original classes carried by each label.
        reduce: "tsne" (paper), "pca" (to ``pca_dims`` dims) or "none" before KMeans.
        seed: seeds t-SNE, PCA, KMeans (label l uses ``(seed + l) mod 2**32``) and subsets.
        k_selection: None (k = number of classes per label) or "silhouette".
        k_candidates: k values tried by the silhouette selection.
        max_tsne_points: t-SNE at most this many points per label (k-NN extension
            for the rest); None runs t-SNE on every point.
        tsne_backend: "opentsne", "sklearn" or None (openTSNE when importable).
        pca_dims: PCA dimension for reduce="pca" and before t-SNE.
        probe_kwargs: extra arguments for ``fit_linear_probe``.

    Returns:
        a ``CLPResult``.
    """
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    _check_options(reduce, k_selection, max_tsne_points, pca_dims)
    xtr, ytr, ctr, xte, yte, cte, col = _validate(
        train_features, train_labels, train_classes, test_features, test_labels,
        test_classes, classes_of_label,
    )
    clusters = _cluster_labels(xtr, ytr, col, reduce, seed, k_selection, k_candidates,
                               max_tsne_points, tsne_backend, pca_dims)
    recon = clusters["recon"]
    has_test = xte is not None
    probe, logits, col_recon, pred = _probe_clusters(xtr, recon, xte, probe_kwargs)
    scores = _score_labels(col, ytr, ctr, cte, clusters, pred)
    mapping_train = scores["mapping_train"]
    test_predicted_classes = routed_acc = None
    if has_test:
        test_predicted_classes, routed_acc = _test_predictions(
            mapping_train, clusters["label_of_recon"], pred, logits, col_recon, yte, cte)

    n_test = xte.shape[0] if has_test else None
    test_share = (lambda correct: correct / n_test) if has_test else (lambda correct: None)
    return {
        "clp_accuracy": test_share(scores["correct_test_best"]),
        "clp_accuracy_train_mapping": test_share(scores["correct_test_train_map"]),
        "clp_accuracy_label_routed": routed_acc,
        "cluster_accuracy_train": scores["correct_train"] / xtr.shape[0],
        "ari": float(adjusted_rand_score(ctr, recon)),
        "nmi": float(normalized_mutual_info_score(ctr, recon)),
        "mapping_train": mapping_train,
        "mapping_test": scores["mapping_test"] if has_test else None,
        "num_reconstructed_labels": int(clusters["label_of_recon"].size),
        "reduce": reduce, "k_selection": k_selection, "max_tsne_points": max_tsne_points,
        "probe_iterations": None if probe is None else probe.n_iter,
        "probe_converged": None if probe is None else probe.converged,
        "per_superclass": scores["per_superclass"],
        "reconstructed_train_labels": recon,
        "test_predicted_classes": test_predicted_classes,
        "embeddings": clusters["embeddings"],
        "probe": probe,
    }


def _check_options(reduce: str, k_selection: str | None, max_tsne_points: int | None,
                   pca_dims: int) -> None:
    """One NcfineError line for an unknown or out-of-range CLP option."""
    if reduce not in REDUCTIONS:
        raise NcfineError(f"reduce: unknown {reduce!r}; choose one of {', '.join(REDUCTIONS)}")
    if k_selection not in (None, "silhouette"):
        raise NcfineError(f"k_selection: unknown {k_selection!r}; choose None or 'silhouette'")
    if max_tsne_points is not None and max_tsne_points < MIN_TSNE_POINTS:
        raise NcfineError(f"max_tsne_points: {max_tsne_points} is too few for t-SNE "
                          f"(need >= {MIN_TSNE_POINTS})")
    if pca_dims < 1:
        raise NcfineError(f"pca_dims: must be >= 1, got {pca_dims}")


def _test_predictions(mapping_train, label_of_recon, pred, logits, col_recon, yte, cte):
    """(class of each test sample under the training mapping [m] int, label-routed accuracy).

    The first is what the train-mapped CLP scores (the significance null permutes the
    test classes against it). The second is a diagnostic: each test sample is routed by
    its own training label, its argmax restricted to that label's clusters.
    """
    class_of_recon = np.concatenate([np.asarray(m, np.int64) for m in mapping_train])
    routed_logits = np.where(label_of_recon[col_recon][None, :] == yte[:, None], logits,
                             -np.inf)
    routed_pred = col_recon[np.argmax(routed_logits, axis=1)]
    return class_of_recon[pred], float(np.mean(class_of_recon[routed_pred] == cte))


def _cluster_labels(xtr, ytr, col, reduce, seed, k_selection, k_candidates, max_tsne_points,
                    tsne_backend, pca_dims) -> dict:
    """Step 1 of CLP: cluster every training label's features into its reconstructed
    labels (ids ``offsets[l] + cluster`` for label l).

    Returns:
      dict with ``recon`` [n] int (reconstructed label of each training sample),
      ``label_of_recon`` / ``cluster_of_recon`` [R] int, ``offsets`` and ``ks`` (per
      label), ``info`` (per label: ``_cluster_one_label``'s result) and ``embeddings``.
    """
    recon = np.full(xtr.shape[0], -1, dtype=np.int64)
    label_of_recon: list[int] = []
    cluster_of_recon: list[int] = []
    offsets, ks, info, embeddings = [], [], [], []
    for l, cs in enumerate(col):
        idx = np.flatnonzero(ytr == l)
        if idx.size == 0:
            raise NcfineError(f"train_labels: training label {l} has no samples")
        res = _cluster_one_label(
            # Modulo 2**32: scikit-learn takes seeds below 2**32 only.
            xtr[idx], len(cs), reduce, (seed + l) % 2**32, k_selection, k_candidates,
            max_tsne_points, tsne_backend, pca_dims,
        )
        offsets.append(len(label_of_recon))
        ks.append(res["k"])
        recon[idx] = offsets[-1] + res["clusters"]
        label_of_recon += [l] * res["k"]
        cluster_of_recon += list(range(res["k"]))
        info.append(res)
        if res["embedding"] is None:
            embeddings.append(None)
        else:
            sub = res["embedding_index"]
            embeddings.append({"index": idx if sub is None else idx[sub], "points": res["embedding"]})
    return {"recon": recon, "label_of_recon": np.asarray(label_of_recon),
            "cluster_of_recon": np.asarray(cluster_of_recon), "offsets": offsets, "ks": ks,
            "info": info, "embeddings": embeddings}


def _probe_clusters(xtr, recon, xte, probe_kwargs):
    """Step 2 of CLP: a linear probe on the reconstructed labels, applied to the test set.

    Returns:
      (probe or None, test logits [m, C] or None, recon id of each logit column [C], the
      predicted recon id of each test sample [m] or None); None without test data.
    """
    probe, logits, col_recon, pred = None, None, np.unique(recon), None
    if xte is None:
        return probe, logits, col_recon, pred
    if col_recon.size > 1:
        probe = fit_linear_probe(xtr, recon, **(probe_kwargs or {}))
        logits = probe.decision_function(xte)  # columns = probe.classes (sorted recon ids)
        # A cluster may be empty (a label with constant features has one), so map the
        # probe's columns back to recon ids.
        col_recon = probe.classes
    else:  # one reconstructed label (one training label, constant features)
        logits = np.zeros((xte.shape[0], 1))
    pred = col_recon[np.argmax(logits, axis=1)]
    return probe, logits, col_recon, pred


def _score_labels(col, ytr, ctr, cte, clusters: dict, pred) -> dict:
    """Step 3 of CLP: per training label, the cluster -> class mappings (from the training
    clusters, and the best one on the test predictions) and the counts they get right.

    Returns:
      dict with ``mapping_train`` / ``mapping_test`` (per label, cluster -> class),
      ``per_superclass`` (records), ``correct_train``, ``correct_test_best`` and
      ``correct_test_train_map`` (sample counts).
    """
    recon, offsets, ks, info = (clusters["recon"], clusters["offsets"], clusters["ks"],
                                clusters["info"])
    has_test = pred is not None
    if has_test:
        pred_label = clusters["label_of_recon"][pred]
        pred_cluster = clusters["cluster_of_recon"][pred]
    out = {"mapping_train": [], "mapping_test": [], "per_superclass": [], "correct_train": 0,
           "correct_test_best": 0, "correct_test_train_map": 0}
    for l, cs in enumerate(col):
        cs_arr = np.asarray(cs)
        k = ks[l]
        train_idx = np.flatnonzero(ytr == l)
        cnt_train = np.zeros((k, len(cs)))
        np.add.at(cnt_train, (recon[train_idx] - offsets[l], np.searchsorted(cs_arr, ctr[train_idx])), 1)
        map_tr = best_cluster_mapping(cnt_train)
        out["correct_train"] += int(cnt_train[np.arange(k), map_tr].sum())
        out["mapping_train"].append([int(cs_arr[j]) for j in map_tr])
        record = {
            "label": l,
            "classes": [int(c) for c in cs],
            "k": k,
            "n_train": int(train_idx.size),
            "n_test_in_label": None,
            "mapping_train": out["mapping_train"][-1],
            "mapping_test": None,
            "cluster_accuracy_train": float(cnt_train[np.arange(k), map_tr].sum() / train_idx.size),
            "test_accuracy_best_mapping": None,
            "silhouette": info[l]["silhouette"],
            "tsne_points": None if info[l]["embedding"] is None else int(info[l]["embedding"].shape[0]),
            "constant_features": info[l]["constant"],
        }
        if has_test:
            # Test samples the probe sent to this label's clusters, whose true class is a
            # candidate of the label (any other true class is wrong under every mapping).
            in_label = np.isin(cte, cs_arr)
            sel = np.flatnonzero((pred_label == l) & in_label)
            cnt_test = np.zeros((k, len(cs)))
            np.add.at(cnt_test, (pred_cluster[sel], np.searchsorted(cs_arr, cte[sel])), 1)
            map_te = best_cluster_mapping(cnt_test)
            out["correct_test_best"] += int(cnt_test[np.arange(k), map_te].sum())
            out["correct_test_train_map"] += int(cnt_test[np.arange(k), map_tr].sum())
            out["mapping_test"].append([int(cs_arr[j]) for j in map_te])
            record.update({
                "n_test_in_label": int(in_label.sum()),
                "mapping_test": out["mapping_test"][-1],
                "test_accuracy_best_mapping": (
                    float(cnt_test[np.arange(k), map_te].sum() / in_label.sum()) if in_label.any() else None
                ),
            })
        out["per_superclass"].append(record)
    return out


def lpo_predictions(
    train_features: np.ndarray,
    train_classes: np.ndarray,
    test_features: np.ndarray,
    probe_kwargs: dict | None = None,
) -> np.ndarray:
    """[m] test classes predicted by a linear probe trained on the original training
    classes (LPO's predictions)."""
    probe = fit_linear_probe(train_features, train_classes, **(probe_kwargs or {}))
    return probe.predict(test_features)


def lpo_accuracy(
    train_features: np.ndarray,
    train_classes: np.ndarray,
    test_features: np.ndarray,
    test_classes: np.ndarray,
    probe_kwargs: dict | None = None,
) -> float:
    """LPO: test accuracy of a linear probe trained on the original training classes."""
    predicted = lpo_predictions(train_features, train_classes, test_features, probe_kwargs)
    return float(np.mean(predicted == np.asarray(test_classes)))
