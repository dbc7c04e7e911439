"""The end-of-run checks at K = 10⁴–10⁵ (issue 24): minority collapse on count groups (vectorized, no K×K matrix)
against naive references written here; the theory's collapsed classes against the run's; SQI's outputs in row
blocks equal to the unblocked formula; SELI on count groups equal to the K×K Grams; the certificate line that
says "lower bound" first where the program only relaxes this UFM. All float64."""

import math

import numpy as np
import pytest
import torch

from analysis.blocked import budget
from analysis.certificate import nuclear_norm_certificate
from analysis.theory import group_collapse_threshold
from ufm.checks.minority import TABLE_GROUPS, index_ranges, lines, minority_summary
from ufm.config import SimConfig


def end_point(cfg, W, seed=0):
    """Parameters of a synthetic end point: the given W, random features (the checks here read W and H)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.repeat_interleave(torch.arange(cfg.K), torch.tensor(cfg.class_counts))
    H = torch.randn(len(y), cfg.d, generator=g, dtype=torch.float64)
    return {"H": H, "W": torch.as_tensor(W, dtype=torch.float64)}, y


def naive_pairwise_cosine(W, members):
    """The mean over pairs j < k of cos(w_j, w_k), from the Gram matrix, pair by pair."""
    G = W @ W.T
    cos = [G[j, k] / math.sqrt(G[j, j] * G[k, k]) for a, j in enumerate(members) for k in members[a + 1:]]
    return sum(cos) / len(cos)


def test_minority_block_equals_a_naive_reference():
    """Per count group: the mean pairwise cosine (‖Σŵ‖² − Σ‖ŵ‖²)/(m(m − 1)) equals the pair-by-pair mean of the
    Gram's cosines, the norms and the minority's cosine and norm ratio equal their definitions (1e-13)."""
    counts = (9, 4, 9, 1, 4, 9, 1, 4)
    cfg = SimConfig(counts=counts, d=5, loss="ce", wd=1e-3, certificate=False)
    W = np.random.default_rng(1).normal(size=(len(counts), 5))
    params, y = end_point(cfg, W)
    m = minority_summary(params, y, cfg)
    for group in m["groups"]:
        members = [k for k in range(len(counts)) if counts[k] == group["count"]]
        assert group["classes"] == len(members)
        if len(members) > 1:
            assert group["cosine"] == pytest.approx(naive_pairwise_cosine(W, members), abs=1e-13)
        top = [k for k in range(len(counts)) if counts[k] == 9]
        norms = np.linalg.norm(W, axis=1)
        assert group["norm_ratio"] == pytest.approx(norms[members].mean() / norms[top].mean(), rel=1e-13)
    minority = [k for k in range(len(counts)) if counts[k] == 1]
    assert m["cosine"] == pytest.approx(naive_pairwise_cosine(W, minority), abs=1e-13)
    assert (m["K_A"], m["K_B"], m["ratio"]) == (6, 2, 9.0)


def zipf_end_point(cfg, collapsed_counts, seed=0):
    """A K×d classifier whose classes with a count in `collapsed_counts` sit on their group's mean row up to
    1e-7 of the RMS row norm (collapsed), the others random."""
    rng = np.random.default_rng(seed)
    counts = np.asarray(cfg.class_counts)
    W = rng.normal(size=(cfg.K, cfg.d))
    for c in collapsed_counts:
        rows = counts == c
        W[rows] = rng.normal(size=cfg.d) + 1e-7 * rng.normal(size=(rows.sum(), cfg.d))
    return W


def test_minority_collapse_at_32768_classes():
    """A Zipf vocabulary `zipf:1:1000`, K = 32 768, on its end point's W (K×8): at λ = 5e-4 every count shared by
    two or more classes collapses (N·√(λ_Wλ_H) = 19.6 >= √29), by the closed form and by the certified count-group
    program, which agree; the run collapsed the groups of counts <= 20 only. The numbers of classes and their
    ranges are those written here; the block is computed by group sums (a K×K float64 matrix would be 8.6 GB)."""
    cfg = SimConfig(K=32768, counts="zipf:1:1000", d=8, loss="ce", wd=5e-4)
    counts = np.asarray(cfg.class_counts)
    values, multiplicity = np.unique(counts, return_counts=True)
    shared = values[multiplicity >= 2]
    assert shared.max() == 29 and len(values) == 62
    W = zipf_end_point(cfg, [c for c in shared if c <= 20])
    params, y = end_point(cfg, W)
    convex = nuclear_norm_certificate(cfg.class_counts, "ce", 5e-4, 5e-4)
    m = minority_summary(params, y, cfg, convex)
    c = m["collapse"]
    theory = np.isin(counts, shared)
    run = np.isin(counts, [v for v in shared if v <= 20])
    assert c["theory_source"].startswith("certificate") and c["closed_form_agrees"] and c["disagreeing_counts"] == []
    assert c["theory_classes"] == int(theory.sum()) and c["theory_class_ranges"] == index_ranges(theory)
    assert c["run_classes"] == int(run.sum()) and c["run_class_ranges"] == index_ranges(run)
    assert (c["both"], c["theory_only"], c["run_only"]) == (int(run.sum()), int((theory & ~run).sum()), 0)
    assert c["theory_counts"] == sorted(int(v) for v in shared)
    # the tail of the vocabulary: 1000/34 and 1000/35 round to 29, 1000/38 and 1000/39 to 26, and from class 40 on
    # every count is shared
    assert c["theory_class_ranges"] == [[33, 35], [37, 39], [40, 32768]]
    assert len(m["groups"]) == 62 and m["groups"][0]["count"] == 1000
    assert all(g["collapsed_at_optimum"] == (g["count"] in shared) for g in m["groups"])
    assert m["groups"][-1]["cosine"] == pytest.approx(1.0, abs=1e-12)  # count 1: 30 768 classes on one row
    text = "\n".join(lines(m))
    assert "collapsed classes: theory" in text and "the closed-form threshold agrees" in text
    assert f"{len(m['groups']) - TABLE_GROUPS} more in summary.json" in text
    # without the certificate: the closed-form threshold alone, the same classes
    alone = minority_summary(params, y, cfg)["collapse"]
    assert alone["theory_source"].startswith("closed form") and alone["theory_classes"] == c["theory_classes"]


def test_bias_free_mse_collapse_is_the_vanishing_of_classes():
    """Bias-free MSE: class k vanishes iff s·√n_k <= N·√(λ_Wλ_H) (analysis.theory.mse_bias_free), alone in its count
    group or not; the run's vanished rows (norm <= rtol × RMS) count as collapsed."""
    counts = (400, 100, 100, 30, 30, 30, 9, 9, 4, 1)
    cfg = SimConfig(counts=counts, d=12, loss="mse", wd=4e-3)
    N, rho = sum(counts), 4e-3
    vanishing = np.sqrt(counts) <= N * rho  # N·ρ = 2.85: counts 4 and 1 (and not 9)
    assert vanishing.tolist() == [False] * 8 + [True, True]
    W = np.random.default_rng(0).normal(size=(10, 12))
    W[vanishing] = 0.0
    params, y = end_point(cfg, W)
    c = minority_summary(params, y, cfg)["collapse"]
    assert c["theory_source"].startswith("closed form (bias-free MSE)")
    assert c["theory_classes"] == 2 and c["theory_class_ranges"] == [[8, 10]] and c["theory_counts"] == [1, 4]
    assert c["run_classes"] == 2 and c["both"] == 2
    # the certified program agrees (its groups of >= 2 classes: none collapses here)
    convex = nuclear_norm_certificate(counts, "mse", 4e-3, 4e-3)
    assert minority_summary(params, y, cfg, convex)["collapse"]["certificate_agrees"]
    assert not any(group_collapse_threshold(counts, 4e-3, 4e-3).values())


def test_sqi_in_row_blocks_equals_the_unblocked_formula():
    """ε, the off-class mean and spread and the stationarity identity ‖w_c‖² = (1/(λN)) Σ_i (y_i − f_i)_c (f_i − b)_c,
    computed in blocks of 3 rows (a 4 KiB budget) and in one block, equal the N×K formula written here (1e-13)."""
    from ufm.checks.sqi import sqi_summary

    counts = (6, 5, 5, 4, 3)
    for bias in (False, True):
        cfg = SimConfig.from_dict({"counts": counts, "d": 6, "loss": "mse", "wd": 1e-2, "bias": bias,
                                   "target_scale": 1.5})
        g = torch.Generator().manual_seed(2)
        params, y = end_point(cfg, torch.randn(5, 6, generator=g, dtype=torch.float64))
        if bias:
            params["b"] = torch.randn(5, generator=g, dtype=torch.float64)
        F = params["H"] @ params["W"].T + params.get("b", 0)
        Y = 1.5 * torch.nn.functional.one_hot(y, 5).double()
        off = F[Y == 0]
        lin = F - params.get("b", 0)
        identity = ((Y - F) * lin).sum(0) / (1e-2 * len(y))
        for nbytes in (4096, None):
            with budget(nbytes):
                q = sqi_summary(params, y, cfg)
            assert q["epsilon"] == pytest.approx(float((1.5 - F.gather(1, y[:, None])).mean()) / 1.5, abs=1e-13)
            assert q["off_class_mean"] == pytest.approx(float(off.mean()) / 1.5, abs=1e-13)
            assert q["off_class_std"] == pytest.approx(float(off.std(unbiased=False)) / 1.5, abs=1e-13)
            assert np.allclose(q["identity_W_row_norm_sq"], identity.numpy(), rtol=1e-13, atol=0)


def test_seli_on_count_groups_equals_the_dense_grams(monkeypatch):
    """Above GRAMS_MAX_K (lowered here to 2) the SELI distances of the run and of the certified optimum, computed on
    count groups, equal the K×K ones (1e-9: the run's distances subtract two numbers of size 1)."""
    import analysis.theory as theory
    from ufm.checks.seli import seli_summary

    counts = (20, 20, 20, 5, 5, 2)
    cfg = SimConfig(counts=counts, d=8, loss="ce", wd=1e-3)
    params, y = end_point(cfg, np.random.default_rng(4).normal(size=(6, 8)))
    convex = nuclear_norm_certificate(counts, "ce", 1e-3, 1e-3)
    dense = seli_summary(params, y, cfg, convex)
    monkeypatch.setattr(theory, "GRAMS_MAX_K", 2)
    grouped = seli_summary(params, y, cfg, convex)
    assert "computed" in grouped and "computed" not in dense
    for key in ("W_distance", "means_distance", "optimum_W_distance", "optimum_means_distance"):
        assert grouped[key] == pytest.approx(dense[key], abs=1e-9), key


def test_grams_are_not_written_into_the_summary_beyond_the_list_cap():
    from ufm.checks.grams import LIST_MAX_K, gram_errors

    K = LIST_MAX_K + 1
    cfg = SimConfig(K=K, n=1, d=4, loss="ce")
    params, y = end_point(cfg, np.random.default_rng(0).normal(size=(K, 4)))
    block = gram_errors(params, y, cfg, {"W": np.eye(K)})
    assert set(block["W"]) == {"rel_error", "matrices"} and math.isfinite(block["W"]["rel_error"])


def test_the_certificate_of_a_relaxation_says_lower_bound_first(tmp_path, capsys):
    """`--K 20 --d 4 --loss ce`: d < rank 19 of the convex optimum, so the program only relaxes this UFM. The
    certificate line first says it bounds the convex relaxation, a lower bound on F*; no line of the run says
    "global optimum"; the summary says what the number means."""
    import json

    from ufm.cli.simulate import main

    argv = ["--K", "20", "--d", "4", "--loss", "ce", "--steps", "30", "--n", "5", "--out", str(tmp_path / "r")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("certificate:"))
    assert line.startswith("certificate: bounds the convex relaxation, a lower bound on this UFM's F* "
                           "(d = 4 < rank 19)")
    assert "global optimum" not in out
    assert "lower bound on F*" in out.splitlines()[-1]  # the verdict
    c = json.loads((tmp_path / "r" / "summary.json").read_text())["certificate"]
    assert c["lower_bound_only"] and c["rank"] == 19 and "lower bound on this UFM's F*" in c["meaning"]


def test_programs_of_more_than_max_groups_are_not_solved_at_the_end_of_a_run():
    from ufm.checks.certificate import MAX_GROUPS, convex_optimum
    from ufm.problem import resolve

    convex, why = convex_optimum(resolve(SimConfig(counts=tuple(range(1, MAX_GROUPS + 2)), d=4, loss="ce")))
    assert convex is None and f"{MAX_GROUPS + 1} distinct counts" in why


def test_the_optimum_cosine_from_count_groups_equals_the_dense_one(monkeypatch):
    """Beyond the dense cap the minority's cosine at the certified optimum is read from the count-group Gram; it
    equals the K×K Gram's mean pairwise cosine (the cap lowered to 2 here so that both exist)."""
    import analysis.certificate as certificate

    counts = (50, 50, 50, 50, 5, 5, 5)
    cfg = SimConfig(counts=counts, d=8, loss="ce", wd=1e-3)
    params, y = end_point(cfg, np.random.default_rng(5).normal(size=(7, 8)))
    dense = minority_summary(params, y, cfg, nuclear_norm_certificate(counts, "ce", 1e-3, 1e-3),
                             with_critical_ratio=False)
    monkeypatch.setattr(certificate, "GRAMS_MAX_K", 2)
    grouped = minority_summary(params, y, cfg, nuclear_norm_certificate(counts, "ce", 1e-3, 1e-3),
                               with_critical_ratio=False)
    assert -1 < dense["ufm_optimum_cosine"] < 1
    assert grouped["ufm_optimum_cosine"] == pytest.approx(dense["ufm_optimum_cosine"], abs=1e-12)
    assert grouped["collapse"] == dense["collapse"]
