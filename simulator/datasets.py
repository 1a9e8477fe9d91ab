"""Fetch the public data the simulator uses (it is never committed to the repo).

    python -m simulator.datasets traces --dest traces [--source DIR]
    python -m simulator.datasets helix-profiles --dest profiles/helix_asplos25 [--source DIR]
    python -m simulator.datasets helix-arrivals --dest traces/helix_lengths [--source DIR]
    python -m simulator.datasets helix-placements --dest placements/helix_asplos25 [--source DIR]
    python -m simulator.datasets helix-sp-placements --dest placements/helix_asplos25 [--source DIR]

* ``traces``: the Azure LLM inference traces 2023 (Patel et al., "Splitwise", ISCA
  2024), CC BY 4.0, from GitHub Azure/AzurePublicDataset ``data/``.
* ``helix-profiles``: Helix's measured per-layer prefill/decode latency tables
  (Mei et al., "Helix", ASPLOS 2025), Apache-2.0, from GitHub
  Thesys-lab/Helix-ASPLOS25 ``simulator/model_manager/<model>/<gpu>/`` at commit 148b733.

* ``helix-arrivals``: the requests per 3-second window of Helix's Azure conv and code sets
  (1200 windows, one hour), which Helix's online trace generator samples (Apache-2.0, same
  repository and commit, ``simulator/trace_generator/arrival_rate/*.pkl``). Helix ships them
  as pickled lists of ints: they are read by an unpickler that refuses every global (so no
  code can run) and written as CSV ``interval_index,requests_in_3s``.

* ``helix-placements``: Helix's stored layer placements of Llama-2-70B (Gurobi's, and the Swarm
  and Petals heuristics' where the artifact keeps them), the ``*_sol.ini`` files of its
  ``artifact_evaluation/`` at the same commit, named ``<our preset>_<planner>.ini``.

* ``helix-sp-placements``: the artifact's hand-written per-GPU-type pipelines of its SP baseline on
  the 3-region cluster (``distributed_clusters/layout_llama70b/separate/<type>_solution_file.ini``),
  named ``helix-3region_separate_<machine>.ini``; each indexes its type's own cluster file, whose
  nodes are the preset's machines of that type in order.

With ``--source DIR`` files are copied from a local folder of the same layout,
otherwise downloaded. Every file is checked against a pinned sha256; files already
present with the right content are skipped. Errors are one line, exit code 1.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import pickle
import pathlib
import sys
import urllib.error
import urllib.request

from .errors import SimError

AZURE_URL = "https://raw.githubusercontent.com/Azure/AzurePublicDataset/master/data/{name}"
# sha256 of the files at Azure/AzurePublicDataset commit b469a11 (see the traces README).
AZURE_TRACES = {
    "AzureLLMInferenceTrace_conv.csv":
        "2f1e5b666d4e3055fdbba98598ce2ec307767b9064e03e2fa46676dbcc7d0bf8",
    "AzureLLMInferenceTrace_code.csv":
        "54e9a6d2a4bd06ba1e060304b900abbc74cbea53de96506e60fe5bb4f2277fb6",
}

HELIX_URL = (
    "https://raw.githubusercontent.com/Thesys-lab/Helix-ASPLOS25/148b733/"
    "simulator/model_manager/{name}"
)
# Every (model, gpu) pair Helix profiles at 148b733 exists for both models:
# llama1_30b and llama2_70b x a100, l4, l4x2, t4, t4x2, t4x4, v100.
# sha256 of <model>/<gpu>/{decode,prompt}_bs2time.csv at that commit.
HELIX_PROFILES = {
    "llama1_30b/a100/decode_bs2time.csv": "9c934bd9f5f81a786cc3ad0254c39ed77932577508e9f380616354295aec7187",
    "llama1_30b/a100/prompt_bs2time.csv": "0d818c127258171e90a28d3fbcc32f9e3707aecec97ded87c3369ab13ba7ae84",
    "llama1_30b/l4/decode_bs2time.csv": "4cb1642b3213a31e0d1e734cafd3166b8c90c6470d0f02eaaad97cfd1a604d55",
    "llama1_30b/l4/prompt_bs2time.csv": "3f732d39764e01847c1e61f7beeb4c2e48d65ec6720799610a173e910a31062e",
    "llama1_30b/l4x2/decode_bs2time.csv": "0503c89f5d57c6238e9a1efd6b1bb6bd487ecefa045cb27a50a46371b8748615",
    "llama1_30b/l4x2/prompt_bs2time.csv": "6e716e1e9ebb588e3e8c7aa0c4aa6dee24684735c6162b0d48c58430b6e24faf",
    "llama1_30b/t4/decode_bs2time.csv": "a7308bd1b2f06a1aa3fffe6f2ec176312c535bda8d764ba6159bb9882d756b84",
    "llama1_30b/t4/prompt_bs2time.csv": "4f74242dba9b38ff857e67d573e2a8715946f7d5ab4389918cb25e1ee09a455f",
    "llama1_30b/t4x2/decode_bs2time.csv": "4ca11f914fe257f40d034a91a57106ace8c9987601a0e87a0cee48a4bef62de5",
    "llama1_30b/t4x2/prompt_bs2time.csv": "251246e3de84aeb94c6666f158db068880833b2208872e9b33028f96f06dfa29",
    "llama1_30b/t4x4/decode_bs2time.csv": "1b6f5ac19427a586dd510ba83b58d74090fd17e9064440d0d40ca3b87ee90c2d",
    "llama1_30b/t4x4/prompt_bs2time.csv": "df87a27a29316173c0d6c943295ba357cad41def7a1ceb43f0e765e267532587",
    "llama1_30b/v100/decode_bs2time.csv": "3c3484993b5ec568d2b18b6001c338cbda86d8ce0eaf45b6603ccb4ca01ee025",
    "llama1_30b/v100/prompt_bs2time.csv": "9a4d2df57e41844fd606847b1e3302517bc01f56944f85a616ee73e5c87510a0",
    "llama2_70b/a100/decode_bs2time.csv": "1d8302ad8503ce5f734bf1a4b43e3dc0c642063acdc8f59ad6d58a67f3cb90e0",
    "llama2_70b/a100/prompt_bs2time.csv": "00867a592d8aadccb87deb68e8ea417bab2de4d44ebfac84ac110d535601c07c",
    "llama2_70b/l4/decode_bs2time.csv": "568a5227b9c3b9205038ac9296c7915e826a81b9fb249d212929e8c61e9f6e7b",
    "llama2_70b/l4/prompt_bs2time.csv": "2e083325c8020bf30a12b8fd3cfa5197b9c9d7c599a6f1496fd84b3482475ac7",
    "llama2_70b/l4x2/decode_bs2time.csv": "2916886177c002ef0c3a6a3bb0b15864992e311698abf9646c22e6f1223e23be",
    "llama2_70b/l4x2/prompt_bs2time.csv": "b8152b37d50981f13b8e457397cbc31013db57b9fd61d58d2748006910234bcf",
    "llama2_70b/t4/decode_bs2time.csv": "136176f0fb07a9c6bad81438dde79614e33fc27ef47585c16d54c184d268f4ff",
    "llama2_70b/t4/prompt_bs2time.csv": "75a9d9d39d25326f5651bace00c1b5c13bd56da5ffb81b476ea06769916c7d51",
    "llama2_70b/t4x2/decode_bs2time.csv": "b1eef3c50370df8fa4d5590a6ae46359904eebe40898dac2ff6e8b976131ddd5",
    "llama2_70b/t4x2/prompt_bs2time.csv": "124b79b95ed6791787d908788938634ffdb0c27c3fae5b833fa3780730a4f789",
    "llama2_70b/t4x4/decode_bs2time.csv": "09ed378b48592784b2f6a7169021c4211623f27291b6bf75a7a36e0d5558c983",
    "llama2_70b/t4x4/prompt_bs2time.csv": "4e69a786ea24bc82356411c7fb7844c752d23ed99ae2b693acf66014ae564fe5",
    "llama2_70b/v100/decode_bs2time.csv": "84ec33fa819ca13bfce082a54765c95cd7e8aa6ffe3af263d04ddfa44b0ec780",
    "llama2_70b/v100/prompt_bs2time.csv": "05e5051641aecb0345e1b54cd16e713be12ef1334424a390958677a577cedd0e",
}

HELIX_ARRIVALS_URL = (
    "https://raw.githubusercontent.com/Thesys-lab/Helix-ASPLOS25/148b733/"
    "simulator/trace_generator/arrival_rate/{name}"
)
# sha256 of the CSV written from each pickle; the pickle itself is pinned in HELIX_ARRIVAL_PICKLES.
HELIX_ARRIVALS = {
    "azure_conv_arrivals_per_3s.csv": "dc87ff52a0683277368ab69a822972a5f4f47075d650987e26e4db8cb901d78f",
    "azure_code_arrivals_per_3s.csv": "93542341d4a4ff6c15dcdd4929596b9c8d47588d286898a6f0e0aae39aedb652",
}
HELIX_ARRIVAL_PICKLES = {  # CSV name -> (pickle name at 148b733, its sha256)
    "azure_conv_arrivals_per_3s.csv":
        ("azure_conv_arrive_time.pkl", "1ae6dec376d39a7c9fa7ed8239cf5b10b5349b540697c94df8d1d1055b35f2a3"),
    "azure_code_arrivals_per_3s.csv":
        ("azure_code_arrive_time.pkl", "2a11571428f5f704ece7109bfe57a4bdfa24c50079f840cab96c0bea0140d112"),
}

HELIX_REPO_URL = "https://raw.githubusercontent.com/Thesys-lab/Helix-ASPLOS25/148b733/"
_AE = "artifact_evaluation/"
# our name -> (path in Helix's repository at 148b733, sha256)
HELIX_PLACEMENT_FILES = {
    "helix-single24_gurobi.ini": (_AE + "model_placement/layout_single/ilp/ilp_sol.ini",
                                  "123bbd0d7db49dbd940a4680096e72aa9d243aad8d2a87b9d555eb86dde6726b"),
    "helix-single24_swarm.ini": (_AE + "model_placement/layout_single/swarm/swarm_sol.ini",
                                 "3cb166167722a15e1f5dcd7fe7cba10716344daaee133949627b8ce2048a94fd"),
    "helix-single24_petals.ini": (_AE + "model_placement/layout_single/petals/petals_sol.ini",
                                  "f258a552cfd26d4267ef4e36c8a6d69ab2ff461e1be7727a2244c7abb42e8a75"),
    "helix-3region_gurobi.ini": (_AE + "model_placement/layout_distributed/ilp/ilp_sol.ini",
                                 "dfb0aabfd36592236cf3be79f35dfe5a84f23aeb0b84e4f776251630cce227a7"),
    "helix-42node_gurobi.ini": (_AE + "high_heterogeneity/layout_llama70b/ilp/ilp_sol.ini",
                                "a053a380d4ad86a7aa9bf0d7cb3f81c0d5cc7c9e8d0843e8d36e1d37df4d69c3"),
    "helix-42node_swarm.ini": (_AE + "high_heterogeneity/layout_llama70b/swarm/swarm_sol.ini",
                               "51278b9eee1027c727f92a4d35b0984c95d0d3a248e400f81959b36a2588c44d"),
}
HELIX_PLACEMENTS = {name: sha for name, (_, sha) in HELIX_PLACEMENT_FILES.items()}
_SP3 = _AE + "distributed_clusters/layout_llama70b/separate/"
HELIX_SP_PLACEMENT_FILES = {
    "helix-3region_separate_A100-40GB.ini": (_SP3 + "a100_solution_file.ini",
                                             "068c04945897c9e844c5b8478e86685151ec2d13be5691b81522581f9cdcfc4b"),
    "helix-3region_separate_L4.ini": (_SP3 + "l4_solution_file.ini",
                                      "e2f3662dfe4bc85d3620b83a0ca16ab7f0746773f64b827f583f18ec3e4c1849"),
    "helix-3region_separate_T4.ini": (_SP3 + "t4_solution_file.ini",
                                      "f047efbf8b0f78d1fb4b37ce7e11b9bf12b2549253e649aa95251a1a043a07e9"),
}
HELIX_SP_PLACEMENTS = {name: sha for name, (_, sha) in HELIX_SP_PLACEMENT_FILES.items()}


_PLACEMENT_PATHS = {name: path for name, (path, _) in {**HELIX_PLACEMENT_FILES, **HELIX_SP_PLACEMENT_FILES}.items()}


def _placement_url(name: str) -> str:
    return HELIX_REPO_URL + _PLACEMENT_PATHS[name]


DATASETS = {
    "traces": (AZURE_TRACES, AZURE_URL),
    "helix-profiles": (HELIX_PROFILES, HELIX_URL),
    "helix-arrivals": (HELIX_ARRIVALS, HELIX_ARRIVALS_URL),
    "helix-placements": (HELIX_PLACEMENTS, _placement_url),
    "helix-sp-placements": (HELIX_SP_PLACEMENTS, _placement_url),
}
DOWNLOAD_TIMEOUT_S = 60.0


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _file_sha256(path: pathlib.Path) -> str | None:
    try:
        return _sha256(path.read_bytes())
    except OSError:
        return None


def _download(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as resp:
            return resp.read()
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", None) or e
        raise SimError(f"cannot download {url}: {reason}") from None


def fetch(dataset: str, dest, source=None, log=print) -> dict[str, int]:
    """Fetch every file of ``dataset`` into ``dest``; returns counts by action."""
    if dataset not in DATASETS:
        raise SimError(f"unknown dataset '{dataset}'; known: {', '.join(DATASETS)}")
    files, url_pattern = DATASETS[dataset]
    dest = pathlib.Path(dest)
    counts = {"present": 0, "copied": 0, "downloaded": 0}
    for name, sha in files.items():
        target = dest / name
        if _file_sha256(target) == sha:
            counts["present"] += 1
            continue
        if source is not None:
            origin = pathlib.Path(source) / name
            try:
                data = origin.read_bytes()
            except OSError as e:
                raise SimError(f"cannot read {origin}: {e.strerror}") from None
            action = "copied"
        elif name in HELIX_ARRIVAL_PICKLES:
            pickle_name, pickle_sha = HELIX_ARRIVAL_PICKLES[name]
            origin = url_pattern.format(name=pickle_name)
            raw = _download(origin)
            if _sha256(raw) != pickle_sha:
                raise SimError(f"{origin}: sha256 {_sha256(raw)} does not match the pinned {pickle_sha}")
            data = counts_csv(int_list_from_pickle(raw, origin))
            action = "downloaded"
        else:
            origin = url_pattern(name) if callable(url_pattern) else url_pattern.format(name=name)
            data = _download(origin)
            action = "downloaded"
        if _sha256(data) != sha:
            raise SimError(f"{origin}: sha256 {_sha256(data)} does not match the pinned {sha}")
        _write(target, data)
        counts[action] += 1
        log(f"{action} {origin} -> {target}")
    log(f"{dataset}: {len(files)} files in {dest} ({counts['copied']} copied, "
        f"{counts['downloaded']} downloaded, {counts['present']} already present)")
    return counts


class _DataOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain data (lists, ints, floats, strings); any global (a class, a function) is refused."""

    def find_class(self, module, name):
        raise SimError(f"refusing to load {module}.{name} from a data pickle")


def int_list_from_pickle(raw: bytes, origin: str) -> list[int]:
    """The list of ints pickled in ``raw``, read without running any code."""
    try:
        value = _DataOnlyUnpickler(io.BytesIO(raw)).load()
    except SimError:
        raise
    except Exception as e:  # a truncated or foreign pickle: one line, no traceback
        raise SimError(f"{origin}: not a pickled list: {e}") from None
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise SimError(f"{origin}: expected a pickled list of ints")
    return value


def counts_csv(counts: list[int]) -> bytes:
    """Per-window request counts as CSV ``interval_index,requests_in_3s`` (CRLF rows, as csv writes)."""
    rows = ["interval_index,requests_in_3s"] + [f"{i},{c}" for i, c in enumerate(counts)]
    return ("\r\n".join(rows) + "\r\n").encode()


def _write(target: pathlib.Path, data: bytes) -> None:
    """Write atomically, so an interrupted fetch never leaves a partial file."""
    tmp = target.with_name(target.name + ".part")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(data)
        os.replace(tmp, target)
    except OSError as e:
        raise SimError(f"cannot write {target}: {e.strerror}") from None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m simulator.datasets",
        description="Fetch public traces and profiles (pinned by sha256).",
    )
    parser.add_argument("dataset", choices=sorted(DATASETS))
    parser.add_argument("--dest", required=True, help="folder to put the files in")
    parser.add_argument("--source", help="copy from this local folder instead of downloading")
    args = parser.parse_args(argv)
    try:
        fetch(args.dataset, args.dest, args.source)
    except SimError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
