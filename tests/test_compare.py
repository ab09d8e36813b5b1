"""compare: overlap of kept weights, chance levels, rank correlation, matched rounds, the profile plot."""

from __future__ import annotations

import math

import pytest
import torch

from ticketx import compare as C
from ticketx.errors import UsageError
from ticketx.pruning import random_like


def _mask(**layers):
    return {n: torch.tensor(v, dtype=torch.bool) for n, v in layers.items()}


def test_overlap_hand_computed():
    a = _mask(l1=[1, 1, 0, 0], l2=[1, 0, 0, 0, 0, 0, 0, 0])
    b = _mask(l1=[1, 0, 1, 0], l2=[1, 1, 0, 0, 0, 0, 0, 0])
    ov = C.overlap(a, b)
    l1, l2, net = ov["layers"]["l1"], ov["layers"]["l2"], ov["network"]
    assert (l1["kept_a"], l1["kept_b"], l1["shared"]) == (2, 2, 1)
    assert l1["a_kept_by_b"] == 0.5 and l1["jaccard"] == pytest.approx(1 / 3)
    assert l1["chance_a_kept_by_b"] == pytest.approx(0.5)  # = density_b
    assert l1["chance_shared"] == pytest.approx(1.0)  # 2 * 2 / 4
    assert l1["chance_jaccard"] == pytest.approx(1 / 3)  # 1 / (2 + 2 - 1)
    # Hypergeometric variance: 2 * (2/4) * (2/4) * (2/3) = 1/3.
    assert l1["chance_shared_sd"] == pytest.approx(math.sqrt(1 / 3))
    assert l2["a_kept_by_b"] == 1.0 and l2["b_kept_by_a"] == 0.5 and l2["jaccard"] == 0.5
    assert l2["chance_shared"] == pytest.approx(0.25)
    assert (net["kept_a"], net["kept_b"], net["shared"], net["total"]) == (3, 4, 2, 12)
    assert net["jaccard"] == pytest.approx(2 / 5)
    # Network chance sums layer expectations: 1 + 0.25 = 1.25, not 3 * 4 / 12 = 1.
    assert net["chance_shared"] == pytest.approx(1.25)
    assert net["chance_a_kept_by_b"] == pytest.approx(1.25 / 3)
    assert net["chance_jaccard"] == pytest.approx(1.25 / (7 - 1.25))


def test_overlap_with_itself_is_one():
    g = torch.Generator().manual_seed(0)
    a = {"w1": torch.rand(30, 20, generator=g) < 0.3, "w2": torch.rand(10, 30, generator=g) < 0.5}
    ov = C.overlap(a, a)
    for s in [*ov["layers"].values(), ov["network"]]:
        assert s["jaccard"] == 1.0 and s["a_kept_by_b"] == 1.0 and s["shared"] == s["kept_a"]
    assert ov["network"]["z"] > 10


def test_random_mask_of_equal_density_is_within_three_sd_of_chance():
    g = torch.Generator().manual_seed(1)
    a = {"w1": torch.rand(100, 80, generator=g) < 0.2, "w2": torch.rand(50, 100, generator=g) < 0.6,
         "w3": torch.rand(10, 50, generator=g) < 0.9}
    b = random_like(a, torch.Generator().manual_seed(2))
    ov = C.overlap(a, b)
    net = ov["network"]
    assert abs(net["jaccard"] - net["chance_jaccard"]) < 3 * net["chance_jaccard_sd"]
    assert abs(net["z"]) < 3
    for s in ov["layers"].values():
        assert s["kept_a"] == s["kept_b"]
        assert abs(s["jaccard"] - s["chance_jaccard"]) < 3 * s["chance_jaccard_sd"]


def test_overlap_empty_layer_and_mismatch():
    a = _mask(l1=[0, 0, 0])
    ov = C.overlap(a, a)
    assert ov["layers"]["l1"]["jaccard"] is None and ov["layers"]["l1"]["a_kept_by_b"] is None
    assert ov["layers"]["l1"]["z"] is None
    with pytest.raises(UsageError, match="only in A: l1"):
        C.overlap(a, _mask(l2=[0, 0, 0]))
    with pytest.raises(UsageError, match="shape"):
        C.overlap(a, _mask(l1=[0, 0]))


def test_ranks_and_spearman():
    assert C.ranks([10, 20, 20, 5]) == [2.0, 3.5, 3.5, 1.0]
    assert C.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert C.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # Hand-computed with ties: ranks x = [1, 2.5, 2.5, 4], y = [1, 2, 3, 4] -> r = 4.5 / sqrt(4.5 * 5).
    assert C.spearman([0.1, 0.5, 0.5, 0.9], [1, 2, 3, 4]) == pytest.approx(4.5 / math.sqrt(4.5 * 5))
    assert C.spearman([1, 1, 1], [1, 2, 3]) is None
    assert C.spearman([1], [2]) is None
    with pytest.raises(ValueError):
        C.spearman([1, 2], [1])


def test_match_round():
    t = {"rounds": [{"density": 1.0}, {"density": 0.8}, {"density": 0.64}, {"density": 0.512}]}
    assert C.match_round(t, 0.64) == 2
    assert C.match_round(t, 0.645) == 2  # 0.78% relative
    assert C.match_round(t, 0.66) is None  # 3% relative
    assert C.match_round(t, 0.66, tol=0.05) == 2
    assert C.match_round(t, 1.0) == 0


def test_compare_pairs_and_profile_plot(tmp_path):
    a = _mask(l1=[1, 1, 0, 0], l2=[1, 0, 0, 0, 0, 0, 0, 0], l3=[1, 1, 1, 0])
    b = _mask(l1=[1, 0, 1, 0], l2=[1, 1, 0, 0, 0, 0, 0, 0], l3=[1, 1, 1, 1])
    res = C.compare({"A": a, "B": b, "C": a})
    assert [(p["a"], p["b"]) for p in res["pairs"]] == [("A", "B"), ("A", "C"), ("B", "C")]
    assert res["pairs"][1]["network"]["jaccard"] == 1.0
    assert res["pairs"][1]["density_spearman"] == pytest.approx(1.0)
    assert res["profiles"]["B"] == {"l1": 0.5, "l2": 0.25, "l3": 1.0}
    pytest.importorskip("matplotlib")
    out = C.profile_plot({"A": a, "B": b}, tmp_path / "p.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare_refuses_the_same_file_twice(cli, tmp_path, monkeypatch):
    # Checked before any ticket is read: the file need not even be a ticket.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "A.pt").write_bytes(b"not read")
    (tmp_path / "B.pt").write_bytes(b"not read either")
    (tmp_path / "link.pt").symlink_to("A.pt")
    (tmp_path / "sub").mkdir()
    for argv in (["A.pt", "A.pt"], ["./A.pt", "A.pt"], ["A.pt", "sub/../A.pt"], ["A.pt", "link.pt"],
                 ["A.pt", "B.pt", str(tmp_path / "A.pt")]):
        code, out, err = cli("compare", *argv)
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert code == 2, (argv, err)
        assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, (argv, err)
        assert "given twice" in lines[0] or "are the same file" in lines[0], (argv, err)
        assert out == "", argv
