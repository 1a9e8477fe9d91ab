"""experiments/: cache keys follow what a run depends on; the README is filled from the results files."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `experiments` is not an installed package

from experiments import cache, report  # noqa: E402
from simulator.run_spec import RunSpec  # noqa: E402


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
