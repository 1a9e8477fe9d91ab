"""experiments/: cache keys follow what a run depends on; the README is filled from the results files."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `experiments` is not an installed package

from experiments import cache, report  # noqa: E402
from simulator.runs.spec import RunSpec  # noqa: E402


def test_run_key_follows_the_spec_not_the_progress_bar(tmp_path):
    spec = RunSpec(cluster="tiny3", model="llama2-7b", policy="separate", trace="synthetic:conv", duration=10)
    assert cache.run_key(spec) == cache.run_key(dataclasses.replace(spec, progress=False))
    assert cache.run_key(spec) != cache.run_key(dataclasses.replace(spec, seed=1))
    assert cache.run_key(spec) != cache.run_key(dataclasses.replace(spec, policy="random"))


def test_run_key_follows_the_profile_files(tmp_path):
    folder = tmp_path / "profiles"
    folder.mkdir()
    spec = RunSpec(cluster="tiny3", model="llama2-7b", policy="separate", profiles=[str(folder)])
    before = cache.run_key(spec)
    (folder / "prefill.csv").write_text("tokens,seconds\n1,0.1\n")
    assert cache.run_key(spec) != before


def test_run_cached_reuses_results(tmp_path, monkeypatch):
    calls = []

    def fake_run_all(runs, jobs=None, on_done=None):
        calls.extend(r.label for r in runs)
        return [cache.Outcome(r.label, None, summary={"decode_tokens_per_s": 1.5}) for r in runs]

    monkeypatch.setattr(cache, "run_all", fake_run_all)
    spec = RunSpec(cluster="tiny3", model="llama2-7b", policy="separate", trace="synthetic:conv", duration=10)
    named = [("a", spec), ("b", dataclasses.replace(spec, seed=2))]
    first = cache.run_cached(named, "test", cache=tmp_path)
    again = cache.run_cached(named + [("c", dataclasses.replace(spec, seed=3))], "test", cache=tmp_path)
    assert calls == ["a", "b", "c"]  # a and b came from the cache the second time
    assert first["a"] == again["a"] == {"decode_tokens_per_s": 1.5}


def test_fill_readme_replaces_only_marked_blocks(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "RESULTS", tmp_path)
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- result:one -->\nold\n<!-- end:one -->\nmiddle\n"
                      "<!-- result:two -->\nold two\n<!-- end:two -->\n")
    monkeypatch.setattr(report, "README", readme)
    (tmp_path / "one.md").write_text(report.markdown_table(["a", "b"], [[1, 2]]) + "\n")
    report.fill_readme()
    text = readme.read_text()
    assert "| a | b |\n| --- | --- |\n| 1 | 2 |" in text
    assert "old\n" not in text and "intro" in text and "middle" in text
    assert "_not run yet" in text  # two.md does not exist


def test_served_from_plan_stores_the_milp_placement_once(tmp_path, monkeypatch):
    from experiments import placements

    monkeypatch.setattr(placements, "PLANS", tmp_path / "placements")
    spec = RunSpec(cluster="tiny3", model="llama2-7b", policy="helix", trace="synthetic:conv", duration=10,
                   mode="online", rate=1.0)
    served = placements.served_from_plan(spec)
    assert served.policy is None and served.scheduler == "helix" and Path(served.placement).is_file()
    assert placements.plan_info(served)["ranges"]  # the stored plan places layers
    # another load and window of the same setup reads the same stored plan
    other = placements.served_from_plan(dataclasses.replace(spec, rate=5.0, duration=30, mode="offline"))
    assert other.placement == served.placement
    assert len(list((tmp_path / "placements").iterdir())) == 1
    # a different model is a different plan; a quick planner is left to plan inside its run
    assert placements.served_from_plan(dataclasses.replace(spec, model="llama3-8b")).placement != served.placement
    separate = dataclasses.replace(spec, policy="separate")
    assert placements.served_from_plan(separate) == separate


def test_run_key_follows_a_named_files_content(tmp_path):
    plan = tmp_path / "plan.json"
    plan.write_text('{"ranges": {"a": [0, 4]}}')
    spec = RunSpec(cluster="tiny3", model="llama2-7b", policy=None, placement=str(plan), scheduler="helix")
    before = cache.run_key(spec)
    plan.write_text('{"ranges": {"a": [0, 2]}}')
    assert cache.run_key(spec) != before
