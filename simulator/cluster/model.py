"""Cluster model: GPU machines, the network between them, and a coordinator.

What is modelled
----------------
* A **node** is one machine: ``count`` identical GPUs used tensor-parallel (a
  :class:`~simulator.catalog.gpus.MachineType`, e.g. ``T4x4``), sitting in a *region*,
  with a NIC that caps everything it receives (``nic_in``) and sends (``nic_out``).
* A **link** is the directed path ``i -> j`` between two nodes: a bandwidth
  (bytes/s; 0 = no link) and a one-way latency (seconds). Links come from defaults
  per region (inside a region) and per region pair (across regions), optionally
  randomised per link with a seeded jitter, and can be overridden link by link.
* The **coordinator** receives requests and collects tokens (Helix's source and sink
  in one). It sits in a region, has links to the nodes like any node there (unless
  overridden) and a NIC that is unlimited unless set.

``Cluster.bandwidth`` and ``Cluster.latency`` are ``(n+1, n+1)`` matrices: rows and
columns ``0..n-1`` are the nodes, row/column ``n`` (= ``Cluster.coordinator``) is
the coordinator. Everything inside is SI (bytes/s, seconds, USD/h); human units
(``"10Gbps"``, ``"1.25GB/s"``, ``"50ms"``) appear only in the TOML file.

TOML format
-----------
Bandwidths are strings with units (``"10Gbps"`` bits, ``"1.25GB/s"`` bytes; see
:mod:`simulator.units`) or bare numbers in bytes/s; times are ``"50ms"`` or bare
seconds; ``inf`` is an unlimited NIC. ``bandwidth = 0`` means "no link".

.. code-block:: toml

    name = "example"                  # default: the file name
    description = "two regions"       # one line, shown by `sim clusters`
    seed = 0                          # link jitter; load_cluster(seed=...) overrides
    jitter = "numpy"                  # how jitter is drawn: "numpy" (default) or "helix"
    coordinator = "us"                # the coordinator's region (default: first region)
    coordinator_nic = "100Gbps"       # optional; also coordinator_nic_in / _out

    [defaults]
    nic = "10Gbps"                    # node NIC both ways; also nic_in / nic_out
                                      # (no NIC given anywhere: unlimited)

    [regions.us]                      # links between two nodes of region "us"
    bandwidth = "10Gbps"
    latency = "1ms"
    bandwidth_jitter = 0.1            # optional: x (1 +- 0.1), uniform per link
    latency_jitter = "0.2ms"          # optional: +- 0.2 ms, uniform per link

    [regions.eu]
    bandwidth = "10Gbps"
    latency = "1ms"

    [inter_region]                    # default for links between two regions
    bandwidth = "100Mbps"
    latency = "50ms"

    [[region_links]]                  # override for one region pair (keys not
    a = "us"                          # given come from [inter_region])
    b = "eu"
    latency = "80ms"

    [coordinator_links]               # optional override of all coordinator links
    bandwidth = "1Gbps"               # (keys not given: as a node in its region)

    [[nodes]]
    gpu = "A100-40GB"                 # catalog name or alias; "T4x4" = 4 GPUs
    gpus_per_machine = 1              # default 1 (or the xN suffix)
    count = 4                         # default 1
    region = "us"                     # may be left out when there is one region
    name = "a100"                     # name prefix: a100-0 .. a100-3
                                      # (default: lower-case machine name)
    # names = ["x", "y", ...]         # or the exact names (count = len(names))
    # nic / nic_in / nic_out          # override [defaults]
    # price_per_hour = 3.0            # machine USD/h (default: catalog x GPUs)
    # host = "box-1"                  # nodes naming one host are processes of one machine
                                      # sharing its cores and memory (default: a host each)

    [[links]]                         # exact per-link override (no jitter)
    a = "a100-0"                      # node name or "coordinator"
    b = "a100-1"
    bandwidth = 0                     # 0 removes the link
    latency = "2ms"
    directed = false                  # default: both directions

Numbering of automatic names counts per prefix across all ``[[nodes]]`` entries.
Jitter is drawn with ``numpy.random.default_rng(seed)`` once per unordered pair
(the same value both ways), so the same file and seed give identical matrices.
``jitter = "helix"`` draws it instead by the procedure of Helix's cluster generator
(:func:`_draw_links_helix`), which reproduces Helix's generated INI files link for link.
Every bad value raises :class:`SimError` naming the file and the key.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import networkx as nx
import numpy as np

from ..errors import SimError, unknown
from ..catalog.gpus import MachineType, parse_machine
from ..units import (
    format_bandwidth,
    format_size,
    format_time,
    parse_bandwidth,
    parse_time,
)

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover
    import tomli as tomllib

COORDINATOR_NAME = "coordinator"
PRESETS_DIR = Path(__file__).with_name("presets")
DEFAULT_SEED = 0
UNLIMITED = math.inf  # a NIC that caps nothing
_INTER, _COORD = object(), object()  # link classes besides "inside region r"

_TOP_KEYS = ("name", "description", "seed", "jitter", "coordinator", "coordinator_nic", "coordinator_nic_in",
             "coordinator_nic_out", "defaults", "regions", "inter_region", "region_links",
             "coordinator_links", "nodes", "links")
_NIC_KEYS = ("nic", "nic_in", "nic_out")
_SPEC_KEYS = ("bandwidth", "latency", "bandwidth_jitter", "latency_jitter")
_PAIR_KEYS = ("a", "b")
_NODE_KEYS = ("gpu", "gpus_per_machine", "count", "region", "name", "names", "price_per_hour", "host", *_NIC_KEYS)
_LINK_KEYS = ("a", "b", "bandwidth", "latency", "directed")


@dataclass(frozen=True)
class Node:
    """One machine of the cluster (``machine.count`` GPUs working tensor-parallel)."""

    id: int  # 0..n-1, index into Cluster.nodes and the link matrices
    name: str
    machine: MachineType
    region: str
    nic_in: float  # bytes/s
    nic_out: float  # bytes/s
    price_per_hour: float | None  # machine USD/h
    # nodes with the same host are processes of one machine sharing its cores and memory (a CPU testbed:
    # cpu2's two workers); the engine slows their iterations while they compute at once (engine.shared_host)
    host: str | None = None


@dataclass(frozen=True)
class LinkSpec:
    """Default for a class of links: mean values and uniform jitter half-widths."""

    bandwidth: float  # bytes/s, 0 = no link
    latency: float  # seconds
    bandwidth_jitter: float = 0.0  # fraction: bandwidth x (1 + U(-j, j))
    latency_jitter: float = 0.0  # seconds: latency + U(-j, j)


class Cluster:
    """Nodes, link matrices (bytes/s, seconds) and NICs, coordinator at index ``n``.

    The matrices and NIC arrays are read-only; copy them to experiment.

    ``nic_of`` (length n + 1, default ``0..n``) says which NIC each node sends and
    receives through. Nodes with the same entry share one NIC, and traffic between them
    does not cross it (it stays inside the machine). Only derived clusters whose nodes
    are parts of one machine set it (:mod:`simulator.stage_cluster`); a TOML file cannot.
    """

    def __init__(self, name: str, description: str, nodes: list[Node], regions: list[str],
                 coordinator_region: str, bandwidth, latency, nic_in, nic_out,
                 seed: int | None = None, nic_of=None):
        self.name = name
        self.description = description
        self.nodes = list(nodes)
        self.regions = list(regions)
        self.coordinator_region = coordinator_region
        self.coordinator = len(self.nodes)
        self.seed = seed
        m = self.coordinator + 1
        self.bandwidth = _frozen(bandwidth, (m, m))
        self.latency = _frozen(latency, (m, m))
        self.nic_in = _frozen(nic_in, (m,))
        self.nic_out = _frozen(nic_out, (m,))
        self.nic_of = tuple(int(x) for x in (range(m) if nic_of is None else nic_of))
        if len(self.nic_of) != m or self.nic_of[-1] in self.nic_of[:-1]:
            raise SimError(f"cluster '{name}': nic_of needs one entry per node plus the coordinator's own")
        self._by_name = {node.name: node for node in self.nodes}

    def subset(self, node_ids, name: str, description: str = "") -> Cluster:
        """The cluster restricted to ``node_ids`` (renumbered in that order) and the coordinator: the same
        machines, links and NICs (Helix's per-GPU-type sub-clusters of its separate-pipelines baseline)."""
        keep = [int(i) for i in node_ids]
        if not keep or len(set(keep)) != len(keep) or not all(0 <= i < len(self.nodes) for i in keep):
            raise SimError(f"cluster '{self.name}': a subset needs distinct node ids in 0..{len(self.nodes) - 1}")
        if self.nic_of != tuple(range(len(self.nic_of))):
            raise SimError(f"cluster '{self.name}': a derived cluster with shared NICs cannot be subset")
        rows = np.array(keep + [self.coordinator])
        nodes = [replace(self.nodes[i], id=k) for k, i in enumerate(keep)]
        return Cluster(name, description or f"{self.description} (nodes {', '.join(n.name for n in nodes)})",
                       nodes, self.regions, self.coordinator_region, self.bandwidth[np.ix_(rows, rows)],
                       self.latency[np.ix_(rows, rows)], self.nic_in[rows], self.nic_out[rows], seed=self.seed)

    # ---- lookups --------------------------------------------------------------
    def node(self, name_or_id) -> Node:
        """The node with this name or id; :class:`SimError` listing names if unknown."""
        if isinstance(name_or_id, (int, np.integer)) and not isinstance(name_or_id, bool):
            if 0 <= name_or_id < len(self.nodes):
                return self.nodes[int(name_or_id)]
            raise SimError(f"cluster '{self.name}' has no node {name_or_id} (ids 0..{len(self.nodes) - 1})")
        if name_or_id in self._by_name:
            return self._by_name[name_or_id]
        raise unknown("node", str(name_or_id), self._by_name)

    def index(self, name: str) -> int:
        """Matrix index of a node name or of ``"coordinator"``."""
        return self.coordinator if name == COORDINATOR_NAME else self.node(name).id

    @property
    def price_per_hour(self) -> float | None:
        """Total USD/h, or None if a node has no price."""
        prices = [node.price_per_hour for node in self.nodes]
        return None if any(p is None for p in prices) else math.fsum(prices)

    @property
    def total_gpus(self) -> int:
        return sum(node.machine.count for node in self.nodes)

    @property
    def memory_bytes(self) -> float:
        return float(sum(node.machine.memory_bytes for node in self.nodes))

    def machine_types(self) -> dict[str, int]:
        """Machine name -> number of nodes, in order of first appearance."""
        return dict(Counter(node.machine.name for node in self.nodes))

    def label(self, index: int) -> str:
        """Name of matrix index ``index`` (a node or the coordinator)."""
        return COORDINATOR_NAME if index == self.coordinator else self.nodes[index].name

    # ---- checks -----------------------------------------------------------------
    def check_connected(self) -> None:
        """Every node must reach the coordinator and be reached from it over links
        with bandwidth > 0 (possibly through other nodes); else SimError naming them."""
        graph = nx.DiGraph()
        graph.add_nodes_from(range(self.coordinator + 1))
        graph.add_edges_from(zip(*np.nonzero(self.bandwidth > 0)))
        reached = nx.descendants(graph, self.coordinator)
        reaching = nx.ancestors(graph, self.coordinator)
        problems = []
        for what, ok in (("not reachable from", reached), ("cannot reach", reaching)):
            cut = [node.name for node in self.nodes if node.id not in ok]
            if cut:
                problems.append(f"{what} the coordinator: {', '.join(cut)}")
        if problems:
            raise SimError(f"cluster '{self.name}': nodes cut off: " + "; ".join(problems))

    # ---- output -----------------------------------------------------------------
    def describe(self) -> str:
        """Human summary: nodes per region and type, link statistics, totals."""
        price = self.price_per_hour
        lines = [f"cluster {self.name}" + (f": {self.description}" if self.description else ""),
                 f"  {len(self.nodes)} machines, {self.total_gpus} GPUs, "
                 f"{format_size(self.memory_bytes)} GPU memory, "
                 + (f"${price:.2f}/h" if price is not None else "price unknown")
                 + f"; coordinator in region {self.coordinator_region}",
                 "  nodes:"]
        for region in self.regions:
            members = [node for node in self.nodes if node.region == region]
            if not members:
                continue
            lines.append(f"    {region}:")
            for machine, group in _groups(members, lambda nd: nd.machine.name).items():
                nics = {(nd.nic_in, nd.nic_out) for nd in group}
                nic = ", ".join(f"{_fmt_nic(i)} in / {_fmt_nic(o)} out" for i, o in sorted(nics))
                names = ", ".join(nd.name for nd in group) if len(group) <= 3 else \
                    f"{group[0].name}, {group[1].name}, ..., {group[-1].name}"
                lines.append(f"      {len(group):>3} x {machine:<14} NIC {nic}  [{names}]")
        lines.append("  links (bandwidth; latency: the value, or min .. max (mean)):")
        for label, _, mask in self._link_classes():
            lines.append(f"    {label}: {self._link_stats(mask)}")
        lines.append(f"  coordinator NIC: {_fmt_nic(self.nic_in[-1])} in / {_fmt_nic(self.nic_out[-1])} out")
        return "\n".join(lines)

    def _link_classes(self) -> list[tuple[str, str | None, np.ndarray]]:
        """(label, kind, mask) per class of directed pairs that exist; kind is the
        region for links inside it, ``_INTER`` between regions, ``_COORD`` for the
        coordinator's links."""
        m = self.coordinator + 1
        region = np.array([node.region for node in self.nodes] + [None], dtype=object)
        off_diagonal = ~np.eye(m, dtype=bool)
        out = []
        for i, a in enumerate(self.regions):
            for b in self.regions[i:]:
                in_a, in_b = region == a, region == b
                mask = off_diagonal & (np.outer(in_a, in_b) | np.outer(in_b, in_a))
                if mask.any():
                    out.append((f"in {a}", a, mask) if a == b else (f"{a} <-> {b}", _INTER, mask))
        coord = np.zeros((m, m), dtype=bool)
        coord[-1, :-1] = coord[:-1, -1] = True
        if coord.any():
            out.append(("coordinator <-> nodes", _COORD, coord))
        return out

    def _link_stats(self, mask) -> str:
        bw, lat = self.bandwidth[mask], self.latency[mask]
        up = bw > 0
        if not up.any():
            return f"no links ({mask.sum()} pairs)"
        missing = f", {int((~up).sum())} of {mask.sum()} directed pairs unlinked" if (~up).any() else ""
        return (f"{_spread(bw[up], format_bandwidth)}; {_spread(lat[up], format_time)}"
                + f" ({int(up.sum())} directed links{missing})")

    def resolved(self) -> dict:
        """JSON-able full description (unlimited NICs as None)."""
        def nic(x):
            return None if math.isinf(x) else float(x)
        return {
            "name": self.name, "description": self.description, "seed": self.seed,
            "regions": list(self.regions), "coordinator_region": self.coordinator_region,
            "coordinator_nic_in": nic(self.nic_in[-1]), "coordinator_nic_out": nic(self.nic_out[-1]),
            "price_per_hour": self.price_per_hour, "total_gpus": self.total_gpus,
            "nodes": [{"id": nd.id, "name": nd.name, "machine": nd.machine.name, "gpu": nd.machine.gpu.name,
                       "gpus": nd.machine.count, "region": nd.region, "nic_in": nic(nd.nic_in),
                       "nic_out": nic(nd.nic_out), "price_per_hour": nd.price_per_hour}
                      for nd in self.nodes],
            "bandwidth": self.bandwidth.tolist(), "latency": self.latency.tolist(),
        }

    def to_toml(self) -> str:
        """TOML text that :func:`cluster_from_toml` reads back to an equal cluster.

        Defaults are the most common value of each class of links; every link that
        differs is written as an exact ``[[links]]`` entry (no jitter).
        """
        out = [f"name = {toml_string(self.name)}", f"description = {toml_string(self.description)}"]
        if self.seed is not None:
            out.append(f"seed = {int(self.seed)}")
        out += [f"coordinator = {toml_string(self.coordinator_region)}",
                f"coordinator_nic_in = {toml_number(self.nic_in[-1])}",
                f"coordinator_nic_out = {toml_number(self.nic_out[-1])}"]

        # Defaults: the most common value per class of links (any value where a class is empty).
        m = self.coordinator + 1
        masks = {_INTER: np.zeros((m, m), dtype=bool)}
        for _, kind, mask in self._link_classes():
            masks[kind] = masks[_INTER] | mask if kind is _INTER else mask
        fallback = _mode(self.bandwidth, self.latency, ~np.eye(m, dtype=bool))
        defaults = {kind: _mode(self.bandwidth, self.latency, masks.get(kind)) or fallback
                    for kind in [*self.regions, _INTER, _COORD]}
        for region in self.regions:
            out += ["", f"[regions.{toml_key(region)}]", *_spec_lines(defaults[region])]
        if len(self.regions) > 1:
            out += ["", "[inter_region]", *_spec_lines(defaults[_INTER])]
        out += ["", "[coordinator_links]", *_spec_lines(defaults[_COORD])]

        for group in _runs(self.nodes):
            first = group[0]
            out += ["", "[[nodes]]", "names = [" + ", ".join(toml_string(nd.name) for nd in group) + "]",
                    f"gpu = {toml_string(first.machine.gpu.name)}",
                    f"gpus_per_machine = {first.machine.count}",
                    f"region = {toml_string(first.region)}",
                    f"nic_in = {toml_number(first.nic_in)}", f"nic_out = {toml_number(first.nic_out)}"]
            if first.price_per_hour is not None and first.price_per_hour != first.machine.price_per_hour:
                out.append(f"price_per_hour = {toml_number(first.price_per_hour)}")
            if first.host is not None:
                out.append(f"host = {toml_string(first.host)}")

        def default(i, j):
            if self.coordinator in (i, j):
                return defaults[_COORD]
            ri, rj = self.nodes[i].region, self.nodes[j].region
            return defaults[ri] if ri == rj else defaults[_INTER]

        for i in range(m):
            for j in range(i + 1, m):
                fwd = (self.bandwidth[i, j], self.latency[i, j])
                bwd = (self.bandwidth[j, i], self.latency[j, i])
                want = default(i, j)
                if fwd == bwd:
                    if fwd != want:
                        out += _link_lines(self.label(i), self.label(j), fwd, directed=False)
                    continue
                for a, b, value in ((i, j, fwd), (j, i, bwd)):
                    if value != want:
                        out += _link_lines(self.label(a), self.label(b), value, directed=True)
        return "\n".join(out) + "\n"

    # ---- comparisons --------------------------------------------------------------
    def __eq__(self, other) -> bool:
        if not isinstance(other, Cluster):
            return NotImplemented
        return (self.name == other.name and self.description == other.description
                and self.nodes == other.nodes and self.regions == other.regions
                and self.coordinator_region == other.coordinator_region and self.nic_of == other.nic_of
                and all(np.array_equal(getattr(self, f), getattr(other, f))
                        for f in ("bandwidth", "latency", "nic_in", "nic_out")))

    __hash__ = None

    def __repr__(self) -> str:
        return f"Cluster({self.name!r}, {len(self.nodes)} nodes, {self.total_gpus} GPUs)"


# ---- loading ----------------------------------------------------------------------

def list_presets() -> list[tuple[str, str]]:
    """(name, one-line description) of the cluster files shipped with the package."""
    out = []
    for path in sorted(PRESETS_DIR.glob("*.toml")):
        lines = str(tomllib.loads(path.read_text(encoding="utf-8")).get("description", "")).strip().splitlines()
        out.append((path.stem, lines[0] if lines else ""))
    return out


def load_cluster(name_or_path: str, *, seed: int | None = None) -> Cluster:
    """Load a preset by name or a cluster ``.toml`` file; ``seed`` overrides the file's."""
    text = str(name_or_path)
    preset = PRESETS_DIR / f"{text}.toml"
    if "/" not in text and "\\" not in text and preset.is_file():
        return cluster_from_toml(preset.read_text(encoding="utf-8"), source=f"preset {text}", seed=seed,
                                 default_name=text)
    path = Path(text)
    if path.is_file():
        return cluster_from_toml(path.read_text(encoding="utf-8"), source=text, seed=seed,
                                 default_name=path.stem)
    if text.endswith(".toml"):
        raise SimError(f"cluster file not found: {text}")
    err = unknown("cluster preset", text, [p.stem for p in PRESETS_DIR.glob("*.toml")])
    raise SimError(f"{err} (or give a path to a .toml file)")


def cluster_from_toml(text: str, *, source: str = "<cluster>", seed: int | None = None,
                      default_name: str = "cluster") -> Cluster:
    """Build a cluster from TOML text (``source`` names it in error messages)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SimError(f"{source}: invalid TOML: {exc}") from None
    return _Reader(source).cluster(data, seed, default_name)


class _Reader:
    """Turns parsed TOML into a Cluster, with errors naming ``source`` and the key."""

    def __init__(self, source: str):
        self.source = source

    def error(self, where: str, message: str) -> SimError:
        return SimError(f"{self.source}: {where}: {message}")

    # ---- value readers ----------------------------------------------------------
    def table(self, value, where: str, allowed) -> dict:
        if not isinstance(value, dict):
            raise self.error(where, "must be a table")
        extra = sorted(set(value) - set(allowed))
        if extra:
            raise self.error(f"{where}.{extra[0]}" if where else extra[0],
                             f"unknown key; allowed: {', '.join(allowed)}")
        return value

    def tables(self, value, where: str, allowed) -> list[dict]:
        if not isinstance(value, list):
            raise self.error(where, "must be an array of tables ([[...]])")
        return [self.table(item, f"{where}[{k}]", allowed) for k, item in enumerate(value)]

    def string(self, value, where: str) -> str:
        if not isinstance(value, str) or not value:
            raise self.error(where, f"must be a non-empty string, got {value!r}")
        return value

    def integer(self, value, where: str, minimum: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.error(where, f"must be an integer >= {minimum}, got {value!r}")
        return value

    def number(self, value, where: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            raise self.error(where, f"must be a non-negative number, got {value!r}")
        return float(value)

    def _unit(self, parse, value, where: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise self.error(where, f"must be a number or a string with units, got {value!r}")
        try:
            return parse(value)
        except SimError as exc:
            raise self.error(where, str(exc)) from None

    def bandwidth(self, value, where: str) -> float:
        """A link bandwidth in bytes/s; 0 (or "0", "0Gbps") means no link."""
        if _is_zero(value):
            return 0.0
        return self._unit(parse_bandwidth, value, where)

    def nic(self, value, where: str) -> float:
        return self._unit(parse_bandwidth, value, where)

    def time(self, value, where: str) -> float:
        result = self._unit(parse_time, value, where)
        if not math.isfinite(result):
            raise self.error(where, f"must be a finite time, got {value!r}")
        return result

    def spec(self, table: dict, where: str, base: LinkSpec | None) -> LinkSpec:
        """A LinkSpec from a table; keys not given come from ``base`` (required if None)."""
        if base is None:
            for key in ("bandwidth", "latency"):
                if key not in table:
                    raise self.error(where, f"missing key '{key}'")
            base = LinkSpec(0.0, 0.0)
        spec = replace(base, **{key: reader(table[key], f"{where}.{key}") for key, reader in (
            ("bandwidth", self.bandwidth), ("latency", self.time),
            ("bandwidth_jitter", self.number), ("latency_jitter", self.time)) if key in table})
        if spec.bandwidth_jitter >= 1:
            raise self.error(f"{where}.bandwidth_jitter", f"must be below 1, got {spec.bandwidth_jitter}")
        if spec.latency_jitter > spec.latency:
            raise self.error(f"{where}.latency_jitter",
                             f"{format_time(spec.latency_jitter)} exceeds the latency {format_time(spec.latency)}")
        if math.isinf(spec.bandwidth):
            raise self.error(f"{where}.bandwidth", "must be finite")
        return spec

    def nics(self, table: dict, where: str, base: tuple[float, float], prefix: str = "") -> tuple[float, float]:
        """(in, out) from keys ``<prefix>nic`` (both) and ``<prefix>nic_in/_out``."""
        nic_in, nic_out = base
        key = f"{prefix}nic"
        if key in table:
            nic_in = nic_out = self.nic(table[key], f"{where}{key}")
        if f"{key}_in" in table:
            nic_in = self.nic(table[f"{key}_in"], f"{where}{key}_in")
        if f"{key}_out" in table:
            nic_out = self.nic(table[f"{key}_out"], f"{where}{key}_out")
        return nic_in, nic_out

    def region(self, value, where: str, regions) -> str:
        name = self.string(value, where)
        if name not in regions:
            raise self.error(where, str(unknown("region", name, regions)))
        return name

    # ---- the whole file -----------------------------------------------------------
    def cluster(self, data: dict, seed: int | None, default_name: str) -> Cluster:
        self.table(data, "", _TOP_KEYS)
        name = self.string(data.get("name", default_name), "name")
        description = data.get("description", "")
        if not isinstance(description, str):
            raise self.error("description", "must be a string")
        file_seed = self.integer(data.get("seed", DEFAULT_SEED), "seed", 0)
        if seed is None:
            seed = file_seed
        elif isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise SimError(f"seed must be a non-negative integer, got {seed!r}")

        raw_regions = data.get("regions", {})
        if not isinstance(raw_regions, dict) or not raw_regions:
            raise self.error("regions", "define at least one region: [regions.<name>] with bandwidth, latency")
        regions = {r: self.spec(self.table(t, f"regions.{r}", _SPEC_KEYS), f"regions.{r}", None)
                   for r, t in raw_regions.items()}
        coordinator_region = self.region(data.get("coordinator", next(iter(regions))), "coordinator", regions)
        inter = None
        if "inter_region" in data:
            inter = self.spec(self.table(data["inter_region"], "inter_region", _SPEC_KEYS), "inter_region", None)
        pair_specs: dict[frozenset, LinkSpec] = {}
        for k, t in enumerate(self.tables(data.get("region_links", []), "region_links", _PAIR_KEYS + _SPEC_KEYS)):
            where = f"region_links[{k}]"
            for key in _PAIR_KEYS:
                if key not in t:
                    raise self.error(where, f"missing key '{key}'")
            a, b = (self.region(t[key], f"{where}.{key}", regions) for key in _PAIR_KEYS)
            if a == b:
                raise self.error(where, f"a and b are both '{a}'; set in-region links in [regions.{a}]")
            pair_specs[frozenset((a, b))] = self.spec(t, where, inter)
        coord_override = self.table(data.get("coordinator_links", {}), "coordinator_links", _SPEC_KEYS)

        defaults = self.table(data.get("defaults", {}), "defaults", _NIC_KEYS)
        node_nic = self.nics(defaults, "defaults.", (UNLIMITED, UNLIMITED))
        coord_nic = self.nics(data, "", (UNLIMITED, UNLIMITED), prefix="coordinator_")
        nodes = self.nodes(data.get("nodes"), regions, node_nic)

        def pair(ra: str, rb: str) -> LinkSpec:
            if ra == rb:
                return regions[ra]
            spec = pair_specs.get(frozenset((ra, rb)), inter)
            if spec is None:
                raise self.error("inter_region", f"no link setting between regions '{ra}' and '{rb}'; "
                                 "add [inter_region] or a [[region_links]] entry")
            return spec

        def coordinator(region: str) -> LinkSpec:
            return self.spec(coord_override, "coordinator_links", pair(region, coordinator_region))

        procedure = data.get("jitter", "numpy")
        if procedure not in _JITTER:
            raise self.error("jitter", f"unknown procedure {procedure!r}; known: {', '.join(_JITTER)}")
        bandwidth, latency = _JITTER[procedure]([nd.region for nd in nodes], pair, coordinator, seed)
        self.links(data.get("links", []), nodes, bandwidth, latency)
        latency[bandwidth == 0] = 0.0
        nic_in = np.array([nd.nic_in for nd in nodes] + [coord_nic[0]])
        nic_out = np.array([nd.nic_out for nd in nodes] + [coord_nic[1]])
        return Cluster(name, description, nodes, list(regions), coordinator_region,
                       bandwidth, latency, nic_in, nic_out, seed=seed)

    def nodes(self, raw, regions: dict, nic: tuple[float, float]) -> list[Node]:
        if raw is None:
            raise self.error("nodes", "no [[nodes]] given")
        nodes: list[Node] = []
        taken = {COORDINATOR_NAME}
        numbering: Counter = Counter()
        for k, t in enumerate(self.tables(raw, "nodes", _NODE_KEYS)):
            where = f"nodes[{k}]"
            if "gpu" not in t:
                raise self.error(where, "missing key 'gpu'")
            gpus = self.integer(t["gpus_per_machine"], f"{where}.gpus_per_machine", 1) \
                if "gpus_per_machine" in t else None
            try:
                machine = parse_machine(self.string(t["gpu"], f"{where}.gpu"), gpus)
            except SimError as exc:
                raise self.error(f"{where}.gpu", str(exc)) from None
            if "region" in t:
                region = self.region(t["region"], f"{where}.region", regions)
            elif len(regions) == 1:
                region = next(iter(regions))
            else:
                raise self.error(where, f"missing key 'region' (regions: {', '.join(regions)})")
            nic_in, nic_out = self.nics(t, f"{where}.", nic)
            price = self.number(t["price_per_hour"], f"{where}.price_per_hour") \
                if "price_per_hour" in t else machine.price_per_hour
            host = self.string(t["host"], f"{where}.host") if "host" in t else None
            names = self.node_names(t, where, machine, numbering)
            for name in names:
                if name in taken:
                    raise self.error(where, f"node name '{name}' is "
                                     + ("reserved" if name == COORDINATOR_NAME else "used twice"))
                taken.add(name)
                nodes.append(Node(len(nodes), name, machine, region, nic_in, nic_out, price, host))
        if not nodes:
            raise self.error("nodes", "the cluster has no nodes")
        return nodes

    def node_names(self, t: dict, where: str, machine: MachineType, numbering: Counter) -> list[str]:
        if "names" in t:
            names = t["names"]
            if not isinstance(names, list) or not names:
                raise self.error(f"{where}.names", "must be a non-empty list of strings")
            names = [self.string(n, f"{where}.names") for n in names]
            if "count" in t and t["count"] != len(names):
                raise self.error(f"{where}.count", f"is {t['count']} but {len(names)} names are given")
            if "name" in t:
                raise self.error(f"{where}.name", "give either 'name' (a prefix) or 'names'")
            return names
        count = self.integer(t.get("count", 1), f"{where}.count", 1)
        prefix = self.string(t["name"], f"{where}.name") if "name" in t else machine.name.lower()
        start = numbering[prefix]
        numbering[prefix] += count
        return [f"{prefix}-{i}" for i in range(start, start + count)]

    def links(self, raw, nodes: list[Node], bandwidth: np.ndarray, latency: np.ndarray) -> None:
        """Apply ``[[links]]`` overrides in file order."""
        index = {nd.name: nd.id for nd in nodes}
        index[COORDINATOR_NAME] = len(nodes)
        for k, t in enumerate(self.tables(raw, "links", _LINK_KEYS)):
            where = f"links[{k}]"
            ends = []
            for key in _PAIR_KEYS:
                if key not in t:
                    raise self.error(where, f"missing key '{key}'")
                name = self.string(t[key], f"{where}.{key}")
                if name not in index:
                    raise self.error(f"{where}.{key}", str(unknown("node", name, index)))
                ends.append(index[name])
            a, b = ends
            if a == b:
                raise self.error(where, "a link needs two different ends")
            directed = t.get("directed", False)
            if not isinstance(directed, bool):
                raise self.error(f"{where}.directed", "must be true or false")
            if "bandwidth" not in t and "latency" not in t:
                raise self.error(where, "give bandwidth and/or latency")
            pairs = [(a, b)] if directed else [(a, b), (b, a)]
            if "bandwidth" in t:
                value = self.bandwidth(t["bandwidth"], f"{where}.bandwidth")
                if math.isinf(value):
                    raise self.error(f"{where}.bandwidth", "must be finite")
                for i, j in pairs:
                    bandwidth[i, j] = value
            if "latency" in t:
                value = self.time(t["latency"], f"{where}.latency")
                for i, j in pairs:
                    latency[i, j] = value


def _link_fields(node_regions: list[str], pair, coordinator) -> dict[str, np.ndarray]:
    """Per-link mean bandwidth and latency and their jitter half-widths, ``(n+1, n+1)`` each."""
    n = len(node_regions)
    m = n + 1
    fields = {f: np.zeros((m, m)) for f in ("bandwidth", "latency", "bandwidth_jitter", "latency_jitter")}
    members = {r: np.array([i for i, x in enumerate(node_regions) if x == r]) for r in dict.fromkeys(node_regions)}

    def fill(rows, cols, spec: LinkSpec):
        for f, arr in fields.items():
            arr[np.ix_(rows, cols)] = getattr(spec, f)
            arr[np.ix_(cols, rows)] = getattr(spec, f)

    names = list(members)
    for i, ra in enumerate(names):
        for rb in names[i:]:
            fill(members[ra], members[rb], pair(ra, rb))
        fill(members[ra], np.array([n]), coordinator(ra))
    return fields


def _draw_links(node_regions: list[str], pair, coordinator, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Link matrices from per-region-pair specs plus seeded symmetric jitter.

    One uniform draw per unordered pair (upper triangle of an (n+1)x(n+1) draw), for
    bandwidth and latency each, so the values do not depend on which specs jitter.
    """
    fields = _link_fields(node_regions, pair, coordinator)
    m = len(node_regions) + 1
    rng = np.random.default_rng(seed)
    u_bw, u_lat = (_symmetric(rng.uniform(-1.0, 1.0, (m, m))) for _ in range(2))
    bandwidth = fields["bandwidth"] * (1.0 + fields["bandwidth_jitter"] * u_bw)
    latency = np.maximum(fields["latency"] + fields["latency_jitter"] * u_lat, 0.0)
    np.fill_diagonal(bandwidth, 0.0)
    np.fill_diagonal(latency, 0.0)
    return bandwidth, latency


HELIX_MBPS = 1e6  # Helix's "mbps" unit, used as bytes/s in its code (simulator/event_simulator/utils.py)


def _draw_links_helix(node_regions: list[str], pair, coordinator, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Link matrices drawn as Helix's cluster generator draws them (Helix, ASPLOS'25 artifact,
    ``simulator/initial_layout/fake_cluster_generator.py``, ``PartitionedClusterGenerator``).

    Python's ``random`` seeded with ``seed``; one draw per written link, in Helix's order: the
    coordinator -> node links (Helix's ``Link-source-i``), then node -> coordinator
    (``Link-i-sink``), then every node pair ``i < j`` (both directions equal). Each link takes a
    uniform bandwidth ``mean +- jitter x mean``, then a uniform latency ``mean +- jitter``, and
    keeps them as Helix writes them into its INI file: bandwidth in whole MB/s above 100 MB/s,
    to 0.1 MB/s above 1 MB/s (else 0.001), latency truncated to whole milliseconds. With the
    3-region preset this gives ``3cluster24.ini`` of Helix's artifact link for link (a test
    compares every link when the file is at hand).
    """
    import random

    fields = _link_fields(node_regions, pair, coordinator)
    n = len(node_regions)
    rng = random.Random(seed)
    bandwidth, latency = np.zeros((n + 1, n + 1)), np.zeros((n + 1, n + 1))

    def draw(i: int, j: int) -> tuple[float, float]:
        mean_bw, var_bw = fields["bandwidth"][i, j], fields["bandwidth_jitter"][i, j] * fields["bandwidth"][i, j]
        mean_lat, var_lat = fields["latency"][i, j], fields["latency_jitter"][i, j]
        raw = float(mean_bw) + rng.uniform(-float(var_bw), float(var_bw))
        ms = int((float(mean_lat) + rng.uniform(-float(var_lat), float(var_lat))) * 1000)
        if raw > 100 * HELIX_MBPS:
            bw = int(raw / HELIX_MBPS)
        elif raw > 1 * HELIX_MBPS:
            bw = round(raw / HELIX_MBPS, 1)
        else:
            bw = round(raw / HELIX_MBPS, 3)
        return bw * HELIX_MBPS, ms * 1e-3

    c = n
    for i in range(n):
        bandwidth[c, i], latency[c, i] = draw(c, i)
    for i in range(n):
        bandwidth[i, c], latency[i, c] = draw(i, c)
    for i in range(n):
        for j in range(i + 1, n):
            bandwidth[i, j], latency[i, j] = draw(i, j)
            bandwidth[j, i], latency[j, i] = bandwidth[i, j], latency[i, j]
    return bandwidth, latency


_JITTER = {"numpy": _draw_links, "helix": _draw_links_helix}


def _symmetric(draw: np.ndarray) -> np.ndarray:
    upper = np.triu(draw, 1)
    return upper + upper.T


# ---- small helpers ----------------------------------------------------------------

_ZERO = re.compile(r"^\s*[-+]?(?:0+\.?0*|\.0+)(?:[eE][-+]?\d+)?\s*[A-Za-z/]*\s*$")


def _is_zero(value) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return value == 0
    return isinstance(value, str) and bool(_ZERO.match(value))


def _frozen(values, shape) -> np.ndarray:
    arr = np.array(values, dtype=float)
    if arr.shape != shape:
        raise ValueError(f"expected shape {shape}, got {arr.shape}")
    arr.flags.writeable = False
    return arr


def _groups(items, key) -> dict:
    out: dict = {}
    for item in items:
        out.setdefault(key(item), []).append(item)
    return out


def _runs(nodes: list[Node]) -> list[list[Node]]:
    """Consecutive nodes that differ only in name (one ``[[nodes]]`` entry each)."""
    runs: list[list[Node]] = []
    for node in nodes:
        prev = runs[-1][0] if runs else None
        if prev is not None and replace(prev, id=node.id, name=node.name) == node:
            runs[-1].append(node)
        else:
            runs.append([node])
    return runs


def _mode(bandwidth, latency, mask) -> tuple[float, float] | None:
    """Most common (bandwidth, latency) over the masked pairs; None if none."""
    if mask is None or not mask.any():
        return None
    return Counter(zip(bandwidth[mask].tolist(), latency[mask].tolist())).most_common(1)[0][0]


def _spec_lines(value: tuple[float, float] | None) -> list[str]:
    bandwidth, latency = value or (0.0, 0.0)
    return [f"bandwidth = {toml_number(bandwidth)}  # bytes/s", f"latency = {toml_number(latency)}  # s"]


def _link_lines(a: str, b: str, value: tuple[float, float], directed: bool) -> list[str]:
    return ["", "[[links]]", f"a = {toml_string(a)}", f"b = {toml_string(b)}",
            f"bandwidth = {toml_number(value[0])}", f"latency = {toml_number(value[1])}",
            f"directed = {'true' if directed else 'false'}"]


def _spread(values: np.ndarray, fmt) -> str:
    low, high = values.min(), values.max()
    return fmt(low) if low == high else f"{fmt(low)} .. {fmt(high)} (mean {fmt(values.mean())})"


def _fmt_nic(x: float) -> str:
    return "unlimited" if math.isinf(x) else format_bandwidth(x)


def toml_number(x: float) -> str:
    """A float as TOML, exact (``repr``), ``inf`` for infinity."""
    x = float(x)
    if math.isnan(x):
        raise ValueError("NaN has no place in a cluster file")
    return ("inf" if x > 0 else "-inf") if math.isinf(x) else repr(x)


def toml_string(s: str) -> str:
    """A TOML basic string (quotes, backslashes and control characters escaped)."""
    out = []
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def toml_key(s: str) -> str:
    """A TOML key: bare when it can be, quoted otherwise."""
    return s if re.fullmatch(r"[A-Za-z0-9_-]+", s) else toml_string(s)
