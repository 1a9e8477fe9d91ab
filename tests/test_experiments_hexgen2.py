"""experiments/hexgen2_mixes.py: the budget family's prices, its cluster files, and the cheapest-mix picker
(pure logic; no simulation)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `experiments` is not an installed package

from experiments import hexgen2_mixes as hx  # noqa: E402
from experiments.paper import HEXGEN2_BUDGET_FRACTION, HEXGEN2_SPEEDUP  # noqa: E402
from simulator.cluster.model import load_cluster  # noqa: E402
from simulator.catalog.gpus import get_gpu  # noqa: E402


def _catalog_sum(counts) -> float:
    return math.fsum(n * get_gpu(g).price_per_hour for g, n in counts)


def test_baseline_price_is_eight_h100s_and_matches_its_cluster_file():
    assert hx.baseline_price() == pytest.approx(8 * get_gpu("H100-80GB").price_per_hour)
    cluster = load_cluster(str(hx.BASELINE))
    assert cluster.total_gpus == 8 and {n.machine.gpu.name for n in cluster.nodes} == {"H100-80GB"}
    assert cluster.price_per_hour == pytest.approx(hx.baseline_price())


def test_het1_proportions_cost_what_the_preset_costs():
    het1 = {g: c for g, c, _, _ in hx.FAMILY}
    assert hx.price_of(het1) == pytest.approx(load_cluster("hexgen2-het1").price_per_hour)


@pytest.mark.parametrize("fraction", [1.6, 1.0, 0.85, 0.70, 0.55, 0.40, 0.25])
def test_family_prices_are_catalog_sums_within_budget(fraction):
    (mix,) = hx.budget_family((fraction,))
    budget = fraction * hx.baseline_price()
    assert mix.price == pytest.approx(_catalog_sum(mix.counts))
    assert mix.fraction == pytest.approx(mix.price / hx.baseline_price())
    assert mix.price <= budget + 1e-6
    cheapest = min(get_gpu(g).price_per_hour for g, _, _, _ in hx.FAMILY)
    assert budget - mix.price < cheapest  # nothing more fits
    assert [g for g, _ in mix.counts] == [g for g, _, _, _ in hx.FAMILY]


def test_family_keeps_het1_proportions_roughly():
    (mix,) = hx.budget_family((1.0,))
    scale = hx.baseline_price() / hx.price_of({g: c for g, c, _, _ in hx.FAMILY})
    for (g, n), (g2, c, _, _) in zip(mix.counts, hx.FAMILY):
        assert g == g2 and abs(n - c * scale) <= 1.5


def test_family_is_cheaper_as_the_fraction_falls():
    prices = [m.price for m in hx.budget_family((1.0, 0.85, 0.70, 0.55, 0.40))]
    assert prices == sorted(prices, reverse=True)


def test_machines_use_het1_sizes_with_one_smaller_remainder():
    assert hx.machines("RTX-A6000", 11) == [(4, 2), (3, 1)]
    assert hx.machines("RTX-A6000", 3) == [(3, 1)]
    assert hx.machines("H100-80GB", 4) == [(2, 2)]
    assert hx.machines("H100-80GB", 1) == [(1, 1)]


def test_generated_toml_loads_with_the_mix_and_its_price(tmp_path):
    mixes = hx.budget_family((1.0, 0.55, 0.40))
    paths = hx.write_mix_files(mixes, tmp_path)
    for mix, path in zip(mixes, paths):
        cluster = load_cluster(str(path))
        assert cluster.name == mix.name
        got: dict[str, int] = {}
        for node in cluster.nodes:
            got[node.machine.gpu.name] = got.get(node.machine.gpu.name, 0) + node.machine.count
        assert got == {g: n for g, n in mix.counts if n}
        assert cluster.price_per_hour == pytest.approx(mix.price)
        cluster.check_connected()
        assert f"{mix.price:.2f} USD/h" in path.read_text()


def test_write_mix_files_leaves_an_unchanged_file_alone(tmp_path):
    mixes = hx.budget_family((0.70,))
    (path,) = hx.write_mix_files(mixes, tmp_path)
    stamp = path.stat().st_mtime_ns
    hx.write_mix_files(mixes, tmp_path)
    assert path.stat().st_mtime_ns == stamp


def test_cheapest_reaching_picks_the_lowest_price_at_or_above_the_baseline():
    points = [("a", 1.0, 120.0), ("b", 0.85, 100.0), ("c", 0.70, 99.9), ("d", 0.55, 101.0), ("e", 0.40, None)]
    assert hx.cheapest_reaching(points, 100.0) == ("d", 0.55, 101.0)  # not monotone: d beats b
    assert hx.cheapest_reaching(points, 110.0) == ("a", 1.0, 120.0)
    assert hx.cheapest_reaching(points, 121.0) is None
    assert hx.cheapest_reaching(points, None) is None  # the baseline failed
    assert hx.cheapest_reaching([("x", 0.5, None)], 1.0) is None  # a failed run never reaches


def test_specs_cover_every_cell_once(monkeypatch):
    monkeypatch.setattr(hx, "repeated_trace", lambda: Path("conv_x10.csv"))  # no trace needed
    names = [n for n, _ in hx.specs()]
    assert len(names) == len(set(names))
    per_class = len(hx.MODELS) * len(hx.CLASSES) * (len(hx.MIXES) * len(hx.POLICIES) + len(hx.BASELINE_POLICIES))
    budget = len(hx.MODELS) * (len(hx.BASELINE_POLICIES)
                               + (len(hx.BUDGET_FRACTIONS) + len(hx.MIXES)) * len(hx.BUDGET_POLICIES))
    assert len(names) == per_class + budget
    for name, spec in hx.specs():
        assert spec.mode == "offline" and spec.seed == 0
        assert spec.trace == ("conv_x10.csv" if name.startswith("class|") else "azure_conv")
        assert (spec.workload_class is None) == name.startswith("budget|")


def test_ran_out_means_nothing_left_in_flight():
    assert hx.ran_out({"requests_unfinished": 0, "total_tokens_per_s": 1.0})
    assert not hx.ran_out({"requests_unfinished": 3})
    assert not hx.ran_out({"error": "x"}) and not hx.ran_out(None)


def test_repeated_trace_keeps_lengths_and_class_medians(tmp_path, monkeypatch):
    src = tmp_path / "conv.csv"
    src.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.6805900,374,44\n"
                   "2023-11-16 18:15:50.9951690,396,109\n2023-11-16 18:15:51.0000000,2000,7\n")
    monkeypatch.setattr(hx, "resolve_trace", lambda name: src)
    path = hx.repeated_trace(3, tmp_path / "out")
    from simulator.workload.requests import load_trace, workload_class

    once, thrice = load_trace(src), load_trace(path)
    assert [(r.input_tokens, r.output_tokens) for r in thrice.requests] == \
        [(r.input_tokens, r.output_tokens) for r in once.requests] * 3
    assert len(workload_class(thrice, "LPLD").requests) == 3 * len(workload_class(once, "LPLD").requests)


def test_paper_numbers():
    assert HEXGEN2_SPEEDUP == {"mean": 1.3, "max": 2.0}
    assert HEXGEN2_BUDGET_FRACTION == 0.70
