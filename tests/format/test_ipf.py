import numpy as np
import pytest

from rhizome.format.ipf import ipf


def test_ipf_meets_row_and_column_targets():
    rng = np.random.default_rng(0)
    table = rng.uniform(0.1, 5.0, (6, 4))
    rows = rng.uniform(1, 3, 6)
    cols = rng.uniform(1, 3, 4)
    cols *= rows.sum() / cols.sum()
    result = ipf(table, [rows, cols], [0, 1], tol=1e-12)
    assert result.converged and result.max_error <= 1e-12
    np.testing.assert_allclose(result.table.sum(axis=1), rows, rtol=1e-10)
    np.testing.assert_allclose(result.table.sum(axis=0), cols, rtol=1e-10)
    # IPF only rescales rows and columns: the cross-product ratios of the original survive.
    odds = table[0, 0] * table[1, 1] / (table[0, 1] * table[1, 0])
    fitted = result.table
    assert fitted[0, 0] * fitted[1, 1] / (fitted[0, 1] * fitted[1, 0]) == pytest.approx(odds, rel=1e-9)


def test_ipf_matches_ipfn_package_on_random_table():
    import ipfn
    rng = np.random.default_rng(1)
    table = rng.uniform(0.5, 10.0, (5, 7))
    rows = rng.uniform(5, 20, 5)
    cols = rng.uniform(5, 20, 7)
    cols *= rows.sum() / cols.sum()
    ours = ipf(table, [rows, cols], [0, 1], tol=1e-12, max_iter=5000)
    theirs = ipfn.ipfn.ipfn(table.copy(), [rows.copy(), cols.copy()], [[0], [1]],
                            convergence_rate=1e-12, rate_tolerance=0.0, max_iteration=5000).iteration()
    np.testing.assert_allclose(ours.table, theirs, rtol=1e-6, atol=1e-6)


def test_ipf_three_dimensional_table_with_two_axis_margin():
    rng = np.random.default_rng(2)
    table = rng.uniform(0.1, 1.0, (3, 4, 2))
    ab = rng.uniform(1, 2, (3, 4))
    c = rng.uniform(1, 2, 2)
    c *= ab.sum() / c.sum()
    ba = ab.T  # the same margin given with its axes the other way round
    result = ipf(table, [ba, c], [(1, 0), 2], tol=1e-11)
    assert result.converged
    np.testing.assert_allclose(result.table.sum(axis=2), ab, rtol=1e-9)
    np.testing.assert_allclose(result.table.sum(axis=(0, 1)), c, rtol=1e-9)


def test_ipf_reports_non_convergence_when_a_target_is_unreachable():
    table = np.array([[1.0, 0.0], [0.0, 0.0]])  # the second row is all zeros, its target cannot be met
    result = ipf(table, [np.array([1.0, 1.0]), np.array([1.0, 1.0])], [0, 1], max_iter=50)
    assert not result.converged and result.iterations == 50


def test_ipf_rejects_targets_with_different_totals():
    with pytest.raises(ValueError, match="different totals"):
        ipf(np.ones((2, 2)), [np.array([1.0, 1.0]), np.array([1.0, 2.0])], [0, 1])
