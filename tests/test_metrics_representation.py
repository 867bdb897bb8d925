"""Representation metrics against independent numpy / scipy / scikit-learn computations."""
import numpy as np
import pytest
import scipy.stats
import torch
from sklearn.linear_model import LogisticRegression, Ridge, RidgeClassifier
from sklearn.metrics import accuracy_score, f1_score, mutual_info_score, r2_score
from sklearn.preprocessing import StandardScaler

from ablation_harness.metrics import representation as R


# ---------------------------------------------------------------- plain float64 numpy references
def np_hsic(K, L, unbiased):
    """HSIC from n x n Gram matrices: biased tr(KHLH)/(n-1)^2, or Song et al.'s unbiased estimator."""
    n = K.shape[0]
    if not unbiased:  # tr(K H L H) = <HKH, L> for symmetric K, L, with H = I - 11^T/n
        Kc = K - K.mean(0, keepdims=True) - K.mean(1, keepdims=True) + K.mean()
        return np.sum(Kc * L) / (n - 1) ** 2
    K, L = K.copy(), L.copy()
    np.fill_diagonal(K, 0)
    np.fill_diagonal(L, 0)
    one = np.ones(n)
    return (np.sum(K * L) + (one @ K @ one) * (one @ L @ one) / ((n - 1) * (n - 2))
            - 2 / (n - 2) * (K @ one) @ (L @ one)) / (n * (n - 3))


def np_cka(X, Y, unbiased=False):
    X, Y = np.asarray(X, np.float64), np.asarray(Y, np.float64)
    K, L = X @ X.T, Y @ Y.T
    return np_hsic(K, L, unbiased) / np.sqrt(np_hsic(K, K, unbiased) * np_hsic(L, L, unbiased))


def rand(*shape, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).normal(size=shape))


def related(n, dx, dy, seed=0):
    x = rand(n, dx, seed=seed)
    y = torch.tanh(x[:, :min(dx, dy)] @ rand(min(dx, dy), dy, seed=seed + 1)) + 0.5 * rand(n, dy, seed=seed + 2)
    return x + 3.0, y  # shifted on purpose: the estimators must not depend on the mean


# ---------------------------------------------------------------- CKA
@pytest.mark.parametrize("unbiased", [False, True])
@pytest.mark.parametrize("n,dx,dy", [(200, 7, 5), (12, 40, 30)])  # feature-space route, Gram route
def test_cka_matches_numpy_gram_formula(unbiased, n, dx, dy):
    x, y = related(n, dx, dy)
    assert R.linear_cka(x, y, unbiased) == pytest.approx(np_cka(x.numpy(), y.numpy(), unbiased), abs=1e-10)


@pytest.mark.parametrize("unbiased", [False, True])
def test_cka_float32_inputs_close_to_float64_reference(unbiased):
    x, y = related(1000, 20, 10)
    got = R.cka_matrix([x.float(), y.float()], unbiased, chunk=128)[0, 1].item()  # chunked float64 sums
    assert got == pytest.approx(np_cka(x.numpy(), y.numpy(), unbiased), abs=1e-5)


def test_cka_matrix_all_pairs_match_pairwise_reference():
    x, y = related(150, 9, 6)
    z = rand(150, 4, seed=5)
    for unbiased in (False, True):
        M = R.cka_matrix({"x": x, "y": y, "z": z}, unbiased=unbiased).numpy()
        layers = [x.numpy(), y.numpy(), z.numpy()]
        ref = np.array([[np_cka(a, b, unbiased) for b in layers] for a in layers])
        np.testing.assert_allclose(M, ref, atol=1e-10)


@pytest.mark.parametrize("unbiased", [False, True])
def test_cka_of_a_layer_with_itself_is_one(unbiased):
    x = rand(50, 8)
    assert R.linear_cka(x, x, unbiased) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("unbiased", [False, True])
def test_cka_invariant_to_orthogonal_transform_and_isotropic_scaling(unbiased):
    x, y = related(80, 10, 6)
    Q, _ = np.linalg.qr(np.random.default_rng(3).normal(size=(10, 10)))
    base = R.linear_cka(x, y, unbiased)
    assert R.linear_cka(x @ torch.from_numpy(Q), y, unbiased) == pytest.approx(base, abs=1e-10)
    assert R.linear_cka(7.5 * x, 0.01 * y, unbiased) == pytest.approx(base, abs=1e-10)
    # ... but not to a non-isotropic scaling of the features (the test can fail)
    assert abs(R.linear_cka(x * torch.linspace(0.1, 10, 10), y, unbiased) - base) > 1e-3


def test_unbiased_cka_near_zero_for_independent_data_at_small_n_biased_not():
    biased, unbiased = [], []
    for s in range(20):
        x, y = rand(20, 50, seed=100 + s), rand(20, 50, seed=200 + s)
        biased.append(R.linear_cka(x, y))
        unbiased.append(R.linear_cka(x, y, unbiased=True))
    assert np.mean(biased) > 0.5            # the biased estimator sees similarity in pure noise
    assert abs(np.mean(unbiased)) < 0.05    # the unbiased one does not


@pytest.mark.parametrize("unbiased", [False, True])
def test_streaming_cka_equals_full_batch(unbiased):
    x, y = related(230, 12, 5)
    z = rand(230, 3, seed=9)
    acc = R.StreamingCKA()
    for s, e in [(0, 50), (50, 57), (57, 200), (200, 230)]:   # uneven batches, one of 7 samples
        acc.update([x[s:e], y[s:e], z[s:e]])
    layers = [x.numpy(), y.numpy(), z.numpy()]
    ref = np.array([[np_cka(a, b, unbiased) for b in layers] for a in layers])
    np.testing.assert_allclose(acc.compute(unbiased).numpy(), ref, atol=1e-9)


def test_minibatch_cka_is_nguyen_average_of_batch_hsic():
    x, y = related(120, 8, 6)
    acc = R.MinibatchCKA()
    hxy = hxx = hyy = 0.0
    for s in range(0, 120, 30):
        xb, yb = x[s:s + 30].numpy(), y[s:s + 30].numpy()
        acc.update({"x": x[s:s + 30], "y": y[s:s + 30]})
        K, L = xb @ xb.T, yb @ yb.T
        hxy += np_hsic(K, L, True)
        hxx += np_hsic(K, K, True)
        hyy += np_hsic(L, L, True)
    assert acc.compute()[0, 1].item() == pytest.approx(hxy / np.sqrt(hxx * hyy), abs=1e-10)
    one = R.MinibatchCKA()
    one.update([x, y])                      # a single batch is the full-batch unbiased CKA
    assert one.compute()[0, 1].item() == pytest.approx(np_cka(x.numpy(), y.numpy(), True), abs=1e-10)


@pytest.mark.parametrize("unbiased", [False, True])
@pytest.mark.parametrize("n", [100, 6])
def test_cka_with_a_constant_layer_is_zero_not_nan(unbiased, n):
    x = rand(n, 20)
    const = torch.full((n, 20), 2.5)
    M = R.cka_matrix([x, const], unbiased=unbiased)
    assert not torch.isnan(M).any()
    assert M[0, 1].item() == 0.0 and M[1, 1].item() == 0.0


# ---------------------------------------------------------------- correlations
def test_cross_correlation_matches_corrcoef():
    a, b = rand(300, 6, seed=1), rand(300, 4, seed=2)
    b[:, 0] += a[:, 2]
    ref = np.corrcoef(a.numpy().T, b.numpy().T)[:6, 6:]
    np.testing.assert_allclose(R.cross_correlation(a, b).numpy(), ref, atol=1e-12)
    np.testing.assert_allclose(R.cross_correlation(a.float(), b.float()).numpy(), ref, atol=1e-5)


def test_intra_layer_feature_and_sample_correlations_match_corrcoef():
    x = rand(40, 9)
    np.testing.assert_allclose(R.feature_correlation(x).numpy(), np.corrcoef(x.numpy().T), atol=1e-12)
    np.testing.assert_allclose(R.sample_correlation(x).numpy(), np.corrcoef(x.numpy()), atol=1e-12)


def test_layer_cross_correlations_every_pair_and_means():
    acts = {"l1": rand(200, 5, seed=1), "l2": rand(200, 3, seed=2), "l3": rand(200, 4, seed=3)}
    acts["l2"][:, 1] = acts["l1"][:, 0] * 2 - 1
    mats = R.layer_cross_correlations(acts)
    assert list(mats) == [("l1", "l1"), ("l1", "l2"), ("l1", "l3"), ("l2", "l2"), ("l2", "l3"), ("l3", "l3")]
    means = R.cross_correlation_means(acts)
    for (a, b), c in mats.items():
        da = acts[a].shape[1]
        ref = np.corrcoef(acts[a].numpy().T, acts[b].numpy().T)[:da, da:]
        np.testing.assert_allclose(c.numpy(), ref, atol=1e-12)
        vals = np.abs(ref)[~np.eye(*ref.shape, dtype=bool)] if a == b else np.abs(ref)
        assert means[(a, b)] == pytest.approx(vals.mean(), abs=1e-12)


def test_constant_feature_correlation_is_zero_not_nan():
    x = rand(100, 4)
    x[:, 2] = 0.1                            # 0.1 is not exact in binary: a naive std would be ~1e-17
    c = R.feature_correlation(x)
    assert not torch.isnan(c).any()
    assert torch.all(c[2] == 0) and torch.all(c[:, 2] == 0)
    keep = [0, 1, 3]
    np.testing.assert_allclose(c[keep][:, keep].numpy(), np.corrcoef(x[:, keep].numpy().T), atol=1e-12)
    means = R.cross_correlation_means({"x": x, "y": torch.ones(100, 3)})
    assert all(np.isfinite(v) for v in means.values()) and means[("x", "y")] == 0.0


# ---------------------------------------------------------------- spectra
def test_svd_stats_match_numpy_svd():
    x = rand(60, 8) * torch.linspace(0.5, 4, 8) + 10.0
    s = np.linalg.svd(x.numpy() - x.numpy().mean(0), compute_uv=False)
    lam = s ** 2
    got = R.svd_stats(x, topk=3)
    assert got["total_variance"] == pytest.approx(lam.sum(), rel=1e-12)
    for k in (1, 2, 3):
        assert got[f"top{k}_ratio"] == pytest.approx(lam[k - 1] / lam.sum(), rel=1e-10)
    assert got["participation_ratio"] == pytest.approx(lam.sum() ** 2 / (lam ** 2).sum(), rel=1e-10)


def test_participation_ratio_known_answers():
    assert R.participation_ratio(torch.tensor([2.0, 2.0, 2.0, 0.0, 0.0])) == pytest.approx(3.0)
    assert R.participation_ratio(torch.ones(7)) == pytest.approx(7.0)
    assert R.participation_ratio(torch.tensor([5.0, 0.0, 0.0])) == pytest.approx(1.0)
    assert R.participation_ratio(torch.tensor([3.0, 1.0])) == pytest.approx(16 / 10)
    assert R.participation_ratio(torch.zeros(4)) == 0.0
    # a representation with exactly k equal-variance directions
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(12, 3)))
    codes = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], float)
    assert R.svd_stats(torch.from_numpy(codes @ q.T))["participation_ratio"] == pytest.approx(3.0)


def test_svd_stats_of_constant_representation_are_zero_not_nan():
    got = R.svd_stats(torch.full((10, 4), 3.0))
    assert all(np.isfinite(v) for v in got.values())
    assert got["total_variance"] == 0 and got["top1_ratio"] == 0 and got["participation_ratio"] == 0


# ---------------------------------------------------------------- entropy and mutual information
def test_gaussian_entropy_matches_scipy():
    x = rand(200, 5) @ rand(5, 5, seed=1)
    cov = np.cov(x.numpy().T, bias=True)
    ref = scipy.stats.multivariate_normal(mean=np.zeros(5), cov=cov + 1e-3 * np.eye(5)).entropy()
    assert R.gaussian_entropy(x, eps=1e-3) == pytest.approx(ref, rel=1e-10)


def test_gaussian_entropy_ema_follows_the_seed_definition():
    batches = [rand(30, 4, seed=s) * (s + 1) for s in range(3)]
    est = R.GaussianEntropyEMA(alpha=0.9, eps=1e-8)
    var = None
    for b in batches:
        got = est.update(b)
        v = b.numpy().var(0)
        var = v if var is None else 0.9 * var + 0.1 * v
        assert got == pytest.approx(0.5 * np.sum(np.log(2 * np.pi * np.e * (var + 1e-8))), rel=1e-12)
    full = R.GaussianEntropyEMA(alpha=0.9, eps=1e-8, full_cov=True)
    cov = None
    for b in batches:
        c = np.cov(b.numpy().T, bias=True)
        cov = c if cov is None else 0.9 * cov + 0.1 * c
        got = full.update(b)
    ref = scipy.stats.multivariate_normal(mean=np.zeros(4), cov=cov + 1e-8 * np.eye(4)).entropy()
    assert got == pytest.approx(ref, rel=1e-10)
    const = R.GaussianEntropyEMA()
    assert np.isfinite(const.update(torch.ones(10, 3)))


def _np_pc1_bins(x, bins=50):
    x = x.reshape(len(x), -1)
    xc = x - x.mean(0)
    p = xc @ np.linalg.svd(xc, full_matrices=False)[2][0]
    counts, edges = np.histogram(p, bins=bins)
    return np.clip(np.searchsorted(edges, p, side="right") - 1, 0, bins - 1), counts


def test_mutual_information_pc1_matches_sklearn_on_numpy_pca():
    x = rand(500, 6)
    h = torch.relu(x @ rand(6, 10, seed=1)) + 0.1 * rand(500, 10, seed=2)
    lx, _ = _np_pc1_bins(x.numpy())
    lh, _ = _np_pc1_bins(h.numpy())
    assert R.mutual_information_pc1(x, h) == pytest.approx(mutual_info_score(lx, lh), abs=1e-12)


def test_mutual_information_pc1_identity_and_constant():
    x = rand(400, 5)
    _, counts = _np_pc1_bins(x.numpy())
    # I(A; A) = H(A): the entropy of the bin occupancy (nats)
    assert R.mutual_information_pc1(x, x) == pytest.approx(scipy.stats.entropy(counts), abs=1e-10)
    assert R.mutual_information_pc1(x, torch.zeros(400, 3)) == 0.0


# ---------------------------------------------------------------- probes
def _digits_like(n=300, d=12, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)
    centers = rng.normal(size=(4, d)) * 2
    return centers[y] + rng.normal(size=(n, d)) * 3, y


def test_ridge_and_logistic_probes_match_sklearn():
    x, y = _digits_like()
    tr, te = R.holdout_split(len(x), 0.3, seed=1)
    assert len(set(tr) & set(te)) == 0 and len(tr) + len(te) == len(x)
    sc = StandardScaler().fit(x[tr])
    for kind, clf in [("ridge", RidgeClassifier(alpha=1e-3)), ("logistic", LogisticRegression(max_iter=1000))]:
        pred = clf.fit(sc.transform(x[tr]), y[tr]).predict(sc.transform(x[te]))
        got = R.linear_probe(torch.from_numpy(x[tr]), torch.from_numpy(y[tr]), x[te], y[te], kind=kind)
        assert got["accuracy"] == pytest.approx(accuracy_score(y[te], pred))
        assert got["macro_f1"] == pytest.approx(f1_score(y[te], pred, average="macro"))
    with pytest.raises(ValueError):
        R.linear_probe(x[tr], y[tr], x[te], y[te], kind="svm")


def test_ridge_r2_matches_sklearn():
    x, _ = _digits_like()
    yv = np.tanh(x @ np.random.default_rng(1).normal(size=(12, 5))) + np.random.default_rng(2).normal(size=(300, 5))
    sc = StandardScaler().fit(x[:200])
    pred = Ridge(alpha=1.0).fit(sc.transform(x[:200]), yv[:200]).predict(sc.transform(x[200:]))
    ref = r2_score(yv[200:], pred, multioutput="variance_weighted")
    assert R.ridge_r2(torch.from_numpy(x[:200]), torch.from_numpy(yv[:200]), x[200:], yv[200:]) == pytest.approx(ref)


# ---------------------------------------------------------------- anchors
def test_anchor_metrics_match_numpy_cosines():
    rng = np.random.default_rng(0)
    h, y = rng.normal(size=(50, 6)), rng.integers(0, 3, 50)
    anchors = rng.normal(size=(3, 6))
    S = (h / np.linalg.norm(h, axis=1, keepdims=True)) @ (anchors / np.linalg.norm(anchors, axis=1, keepdims=True)).T
    own = S[np.arange(50), y]
    other = np.where(np.eye(3, dtype=bool)[y], -np.inf, S).max(1)
    got = R.anchor_metrics(torch.from_numpy(h), torch.from_numpy(y), torch.from_numpy(anchors))
    assert got["accuracy"] == pytest.approx(np.mean(S.argmax(1) == y))
    assert got["alignment"] == pytest.approx(own.mean(), abs=1e-12)
    assert got["margin"] == pytest.approx((own - other).mean(), abs=1e-12)


def test_class_means_match_numpy():
    rng = np.random.default_rng(0)
    h, y = rng.normal(size=(40, 3)), rng.integers(0, 3, 40)
    got = R.class_means(torch.from_numpy(h), torch.from_numpy(y), num_classes=4).numpy()
    for c in range(3):
        np.testing.assert_allclose(got[c], h[y == c].mean(0), atol=1e-12)
    assert np.all(got[3] == 0)
    res = R.anchor_metrics(torch.zeros(5, 3), torch.zeros(5, dtype=torch.long), torch.from_numpy(got))
    assert all(np.isfinite(v) for v in res.values())
