"""The flow network of a placed cluster and its max-flow (Helix, ASPLOS'25, sections 3-4).

What is modelled
----------------
Helix models serving as a flow of tokens (tokens/s) from the coordinator (``SOURCE``,
which sends prompts) through the nodes holding consecutive layer ranges to the
coordinator again (``SINK``, which collects tokens). Given a :class:`PlacementProblem`
and a placement ``{node: (start, end)}`` (end exclusive):

* **Node capacity** (section 4, "node capacity"): node ``i`` holding ``k_i = end - start``
  layers processes at most ``T_i(k_i)`` tokens/s. In the network each node is split in
  two, ``i_in -> i_out`` with capacity ``T_i(k_i)``, so the capacity bounds the flow
  *through* the node (Helix's runtime max-flow does the same node splitting).
* **Link capacity**: a directed link ``a -> b`` carries at most the problem's link
  capacity (tokens/s = bytes/s of the link, NICs included, / bytes per token).
* **Valid edges** (section 4, "edge validity"): ``SOURCE -> i`` iff ``i`` starts at
  layer 0; ``i -> SINK`` iff ``i`` ends at layer ``L``; ``i -> j`` iff ``end_i == start_j``.
  With *partial inference* (Helix's runtime, Petals) also iff ``start_j <= end_i < end_j``:
  ``j`` runs only its layers from ``end_i`` on.
* The **max-flow** value is the throughput bound of the placement in tokens/s (the
  MILP's objective for a fixed placement); the per-edge flows are what Helix's
  scheduler uses as interleaved-weighted-round-robin weights (section 5).

Latency, batching and KV cache are not in this model (they are not in Helix's MILP
either; KV enters only through ``T_i(k)``).

Besides the flow, this module builds problems from our clusters
(:func:`problem_from_cluster`) or from Helix's MILP-input JSON
(:func:`problem_from_helix_json`), and reads/writes placements: our JSON
(:meth:`simulator.placement.model.Placement.to_dict`) and Helix's stored ``*_sol.ini``.
"""

from __future__ import annotations

import configparser
import json
import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import networkx as nx
import numpy as np

from ..cluster.model import Cluster
from ..errors import SimError
from ..catalog.models import ModelSpec
from ..placement.model import Placement, layer_spans
from ..placement.problem import SINK, SOURCE, Endpoint, PlacementProblem, ProblemNode, Ranges

# Bytes per token between the coordinator and a node (one int32 token id). The engine
# (simulator.engine.simulation) imports it from here.
TOKEN_ID_BYTES = 4
HEADER_BYTES = 64  # per request in a transfer: id, position, route hop (small control header)
# Disaggregated KV hand-off in slices of whole layers up to this size (transfer engines move KV
# layer-wise in chunks: Splitwise layer-wise transfer, Mooncake's transfer engine); 16 MB is 5 ms
# at 25 Gb/s, the longest a token or activation message waits behind a KV slice on a NIC. The engine
# slices by it and the disaggregated serving model counts the waits it causes.
KV_SLICE_BYTES = 16e6
# spread_max_flow: maximum flows averaged (helix-42node / Llama-2-70B, Helix's IWRR, offline, seed 1: 8 orders
# 653.1, 32 orders 662.4, 64 orders 666.2 decode tokens/s, against 615.8 for one)
SPREAD_ORDERS = 32


@dataclass
class FlowResult:
    """Max-flow of a placement: the value and the flow on each used edge and node (tokens/s)."""

    value: float  # tokens/s from SOURCE to SINK: the placement's throughput bound
    edge_flows: dict[tuple[Endpoint, Endpoint], float] = field(default_factory=dict)  # used edges only (flow > 0)
    node_flows: dict[int, float] = field(default_factory=dict)  # tokens/s through each node that carries flow

    def out_flows(self, a: Endpoint) -> dict[Endpoint, float]:
        """Successors of ``a`` (a node index or SOURCE) with the flow on each edge (e.g. IWRR weights)."""
        return {b: f for (x, b), f in self.edge_flows.items() if x == a}

    def in_flows(self, b: Endpoint) -> dict[Endpoint, float]:
        """Predecessors of ``b`` (a node index or SINK) with the flow on each edge."""
        return {a: f for (a, x), f in self.edge_flows.items() if x == b}


# ---- the flow network -------------------------------------------------------------

def _node_label(problem: PlacementProblem, i) -> str:
    if isinstance(i, numbers.Integral) and not isinstance(i, bool) and 0 <= i < len(problem.nodes):
        return f"node {problem.nodes[i].name}"
    return f"node {i!r}"


def _held(problem: PlacementProblem, ranges: Ranges) -> dict[int, tuple[int, int]]:
    """The nodes that hold at least one layer, checked: known node, range inside the model, k <= K_i."""
    out = {}
    L = problem.layers
    for i in ranges:
        if isinstance(i, bool) or not isinstance(i, numbers.Integral) or not 0 <= i < len(problem.nodes):
            raise SimError(f"placement names {_node_label(problem, i)}, but problem '{problem.name}' has nodes "
                           f"0..{len(problem.nodes) - 1}")
    for i in sorted(ranges):
        s, e = ranges[i]
        i = int(i)
        if not (0 <= s <= e <= L):
            raise SimError(f"placement: {_node_label(problem, i)} has invalid layer range [{s}, {e}) for {L} layers")
        if e == s:
            continue
        node = problem.nodes[i]
        if e - s > node.max_layers:
            raise SimError(f"placement: {_node_label(problem, i)} holds {e - s} layers [{s}, {e}) but may hold at "
                           f"most {node.max_layers}")
        out[i] = (s, e)
    return out


def _order(x: Endpoint) -> tuple[int, int]:
    return (-1, 0) if x == SOURCE else (1, 0) if x == SINK else (0, int(x))


def _valid(a: Endpoint, b: Endpoint, held: dict[int, tuple[int, int]], L: int, partial: bool) -> bool:
    if a == b or a == SINK or b == SOURCE:
        return False
    if a == SOURCE:
        return b in held and held[b][0] == 0
    if a not in held:
        return False
    end_a = held[a][1]
    if b == SINK:
        return end_a == L
    if b not in held:
        return False
    s_b, e_b = held[b]
    return s_b <= end_a < e_b if partial else end_a == s_b


def valid_edges(problem: PlacementProblem, ranges: Ranges, partial: bool = False) -> list[tuple[Endpoint, Endpoint]]:
    """Links (capacity > 0) that may carry flow under ``ranges`` (Helix section 4, edge validity).

    ``SOURCE -> i`` iff ``i`` starts at layer 0; ``i -> SINK`` iff ``i`` ends at layer L;
    ``i -> j`` iff ``end_i == start_j``, or with ``partial`` iff ``start_j <= end_i < end_j``.
    Nodes without layers have no edges. Sorted: source edges, node edges, sink edges.
    """
    held = _held(problem, ranges)
    edges = [(a, b) for (a, b), cap in problem.links.items() if cap > 0 and _valid(a, b, held, problem.layers, partial)]
    return sorted(edges, key=lambda ab: (_order(ab[0]), _order(ab[1])))


def within_groups(problem: PlacementProblem, groups: list[list[int]] | None) -> PlacementProblem:
    """``problem`` without the links between nodes of different ``groups`` (:attr:`Placement.groups`: sub-clusters
    served apart); the coordinator's links stay. ``problem`` itself when there are no groups."""
    if not groups:
        return problem
    group = {n: g for g, nodes in enumerate(groups) for n in nodes}
    links = {(a, b): c for (a, b), c in problem.links.items()
             if not (isinstance(a, int) and isinstance(b, int) and group.get(a) != group.get(b))}
    return PlacementProblem(problem.layers, problem.nodes, links, problem.name, dict(problem.notes))


def max_flow(problem: PlacementProblem, ranges: Ranges, partial: bool = False,
             order: int | None = None) -> FlowResult:
    """Max-flow from SOURCE to SINK (tokens/s) of ``problem`` placed as ``ranges``.

    Each node holding ``k`` layers is split into ``in -> out`` with capacity ``T(k)``
    (Helix section 4 "node capacity"; its runtime max-flow splits nodes the same way);
    the edges of :func:`valid_edges` carry the problem's link capacities. Nodes holding
    nothing are left out; a node holding more than its ``max_layers`` raises
    :class:`SimError` naming it. The result is deterministic (fixed graph order, integer
    node labels whatever ``PYTHONHASHSEED``, networkx's preflow-push on integer capacities: tokens/s in steps of 2^-40 of the
    largest node capacity, rounded down, so relative error below 1e-11). ``order``: build the graph with
    its nodes and edges in the order of this seed (the same value, maybe another of the maximum flows).
    """
    held = _held(problem, ranges)
    edges = valid_edges(problem, ranges, partial)
    node_cap = {i: problem.nodes[i].T(e - s) for i, (s, e) in held.items()}
    for i, t in node_cap.items():
        if not (math.isfinite(t) and t >= 0):
            raise SimError(f"placement: {_node_label(problem, i)} has capacity {t} for {held[i][1] - held[i][0]} layers; "
                           "capacities must be finite and >= 0")
    top = max(node_cap.values(), default=0.0)
    if top <= 0:
        return FlowResult(value=0.0)
    # networkx's max-flow algorithms are exact on integers but can fail on floats (e.g. a 1e-38 capacity
    # next to 1.0). Capacities become integer multiples of 2^-40 of the largest node capacity,
    # rounded down, so every flow stays within the true capacities; links are first clamped to the
    # capacities of the nodes they join, which bound their flow anyway (and make unlimited links finite).
    scale = 2**40

    def ticks(cap: float) -> int:  # cap <= top after clamping
        return int(min(cap / top, 1.0) * scale) if cap > 0 else 0

    def rate(t: int) -> float:
        return t / scale * top

    # Graph nodes are ints (source 0, sink 1, node i split into 2i+2 -> 2i+3): preflow-push keeps its
    # active nodes in sets, and the hash of a string (SOURCE, or a tuple holding one) changes with
    # PYTHONHASHSEED, which picked a different one of several maximum flows in every process.
    def n_in(i: int) -> int:
        return 2 * i + 2

    def ends(a: Endpoint, b: Endpoint) -> tuple[int, int]:
        return (0 if a == SOURCE else n_in(a) + 1), (1 if b == SINK else n_in(b))

    graph = nx.DiGraph()
    graph.add_node(0)
    graph.add_node(1)
    if order is not None:
        rng = np.random.default_rng(order)
        edges = [edges[k] for k in rng.permutation(len(edges))]
        nodes = list(node_cap)
        node_cap = {nodes[k]: node_cap[nodes[k]] for k in rng.permutation(len(nodes))}
    for i, t in node_cap.items():
        graph.add_edge(n_in(i), n_in(i) + 1, capacity=ticks(t))
    for a, b in edges:
        cap = min(problem.links[(a, b)], *(node_cap[x] for x in (a, b) if x in node_cap))
        graph.add_edge(*ends(a, b), capacity=ticks(cap))
    value, flows = nx.maximum_flow(graph, 0, 1, flow_func=nx.algorithms.flow.preflow_push)
    edge_flows: dict[tuple[Endpoint, Endpoint], float] = {}
    for a, b in edges:
        u, v = ends(a, b)
        if flows[u][v] > 0:
            edge_flows[(a, b)] = rate(flows[u][v])
    node_flows = {i: rate(flows[n_in(i)][n_in(i) + 1]) for i in held if flows[n_in(i)][n_in(i) + 1] > 0}
    return FlowResult(value=rate(value), edge_flows=edge_flows, node_flows=node_flows)


def spread_max_flow(problem: PlacementProblem, ranges: Ranges, partial: bool = False,
                    orders: int = SPREAD_ORDERS) -> FlowResult:
    """A maximum flow spread over the placement's equivalent paths: the mean of the maximum flows found with
    the graph built in ``orders`` seeded orders (:func:`max_flow`). A convex combination of maximum flows
    is a maximum flow (same value; conservation and capacities hold for the mean), but preflow-push returns
    one vertex of their polytope, which routes on few edges: a scheduler weighting by it leaves the
    other holders of a layer idle although, KV-bound, each could hold residents of its own (Helix's IWRR
    on helix-42node / Llama-2-70B, offline, seed 1: 615.8 -> 662.4 decode tokens/s with 32 orders)."""
    flows = [max_flow(problem, ranges, partial, order=k) for k in range(orders)]
    edge_flows: dict[tuple[Endpoint, Endpoint], float] = {}
    node_flows: dict[int, float] = {}
    for f in flows:
        for e, v in f.edge_flows.items():
            edge_flows[e] = edge_flows.get(e, 0.0) + v / orders
        for i, v in f.node_flows.items():
            node_flows[i] = node_flows.get(i, 0.0) + v / orders
    return FlowResult(value=min(f.value for f in flows), edge_flows=edge_flows, node_flows=node_flows)


def placement_flow(placement: Placement, problem: PlacementProblem, partial: bool = False,
                   spread: bool = False) -> FlowResult:
    """:func:`max_flow` of one of our placements on a problem built for its cluster (same node order);
    ``spread``: :func:`spread_max_flow`."""
    if len(problem.nodes) != len(placement.cluster.nodes):
        raise SimError(f"problem '{problem.name}' has {len(problem.nodes)} nodes but cluster "
                       f"'{placement.cluster.name}' has {len(placement.cluster.nodes)}")
    if problem.layers != placement.model.layers:
        raise SimError(f"problem '{problem.name}' has {problem.layers} layers but {placement.model.name} has "
                       f"{placement.model.layers}")
    if spread:
        return spread_max_flow(within_groups(problem, placement.groups), placement.ranges, partial)
    return max_flow(within_groups(problem, placement.groups), placement.ranges, partial)


# ---- problems ---------------------------------------------------------------------

def problem_from_cluster(cluster: Cluster, model: ModelSpec, capacity: Callable[[int, int], float],
                         max_layers: Callable[[int], int], name: str = "") -> PlacementProblem:
    """The placement problem of ``model`` on ``cluster`` (Helix section 4 inputs).

    Node ``i`` (type = machine name) may hold ``K_i = max_layers(i)`` layers and then
    sustains ``T_i(k) = capacity(i, k)`` tokens/s, k = 1..K_i. Link ``i -> j`` carries
    ``min(bandwidth[i][j], nic_out[i], nic_in[j]) / model.activation_bytes_per_token``
    tokens/s; the coordinator's links (``SOURCE -> i``, ``i -> SINK``) the same minimum
    over :data:`TOKEN_ID_BYTES` (token ids, not activations). Pairs with bandwidth 0
    have no link. NIC sharing between a node's links is not modelled here (as in
    Helix's MILP, fold it into ``capacity`` if wanted).
    """
    n = len(cluster.nodes)
    c = cluster.coordinator
    nodes = []
    for i, node in enumerate(cluster.nodes):
        k_max = int(max_layers(i))
        if k_max < 0:
            raise SimError(f"node {node.name}: max_layers is {k_max}, must be >= 0")
        caps = tuple(float(capacity(i, k)) for k in range(1, k_max + 1))
        bad = [k for k, t in enumerate(caps, 1) if not (math.isfinite(t) and t >= 0)]
        if bad:
            raise SimError(f"node {node.name}: capacity for {bad[0]} layers is {caps[bad[0] - 1]}, must be finite and >= 0")
        nodes.append(ProblemNode(name=node.name, type=node.machine.name, max_layers=k_max, capacity=caps))
    bw, nic_in, nic_out = cluster.bandwidth, cluster.nic_in, cluster.nic_out
    act = model.activation_bytes_per_token

    def rate(i: int, j: int) -> float:
        return float(min(bw[i][j], nic_out[i], nic_in[j]))

    links: dict[tuple[Endpoint, Endpoint], float] = {}
    for i in range(n):
        if bw[c][i] > 0:
            links[(SOURCE, i)] = rate(c, i) / TOKEN_ID_BYTES
    for i in range(n):
        for j in range(n):
            if i != j and bw[i][j] > 0:
                links[(i, j)] = rate(i, j) / act
    for i in range(n):
        if bw[i][c] > 0:
            links[(i, SINK)] = rate(i, c) / TOKEN_ID_BYTES
    notes = {"cluster": cluster.name, "model": model.name, "act_bytes": act, "token_bytes": TOKEN_ID_BYTES}
    return PlacementProblem(layers=model.layers, nodes=nodes, links=links, name=name or f"{cluster.name}/{model.name}",
                            notes=notes)


def problem_from_helix_json(path) -> PlacementProblem:
    """Read Helix's MILP-input JSON (format: ``shared/milp/README.md``) as a problem.

    Fields used: ``L``; ``nodes[]`` with ``idx`` (0..n-1; node name = ``str(idx)``),
    ``type``, ``K`` and ``T`` (``T[k-1]``, tokens/s); ``links[]`` with ``a``, ``b``
    (node ids, ``"source"``, ``"sink"``) and ``cap`` (tokens/s). A link between two
    nodes listed only once carries both directions (Helix's ``[Link-i-j]`` cluster
    sections do; the files list each node pair once, ``a < b``; taking them as one-way
    gives the stored placements a max-flow of 0). An explicit reverse entry overrides.
    Other fields (``act_size``, ``token_size``, ``helix_bound``...) go into ``notes``.
    """
    path = Path(path)

    def bad(where: str, why: str) -> SimError:
        return SimError(f"{path}: {where}: {why}")

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SimError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SimError(f"{path}: not a valid JSON file: {exc}") from None
    if not isinstance(data, dict):
        raise bad("top level", "must be an object")
    for key in ("L", "nodes", "links"):
        if key not in data:
            raise bad(key, "missing")
    L = data["L"]
    if not _is_int(L) or L < 1:
        raise bad("L", f"must be a positive integer, got {L!r}")
    if not isinstance(data["nodes"], list) or not data["nodes"]:
        raise bad("nodes", "must be a non-empty list")
    by_idx: dict[int, ProblemNode] = {}
    for k, raw in enumerate(data["nodes"]):
        where = f"nodes[{k}]"
        if not isinstance(raw, dict):
            raise bad(where, "must be an object")
        for key in ("idx", "K", "T"):
            if key not in raw:
                raise bad(f"{where}.{key}", "missing")
        idx, K, T = raw["idx"], raw["K"], raw["T"]
        if not _is_int(idx) or idx < 0:
            raise bad(f"{where}.idx", f"must be a non-negative integer, got {idx!r}")
        if idx in by_idx:
            raise bad(f"{where}.idx", f"node {idx} is listed twice")
        if not _is_int(K) or K < 0:
            raise bad(f"{where}.K", f"must be a non-negative integer, got {K!r}")
        if not isinstance(T, list) or len(T) < K or not all(_is_number(t) and t >= 0 for t in T[:K]):
            raise bad(f"{where}.T", f"must be a list of at least K={K} non-negative numbers")
        by_idx[idx] = ProblemNode(name=str(idx), type=str(raw.get("type", "")), max_layers=K,
                                  capacity=tuple(float(t) for t in T[:K]))
    n = len(by_idx)
    if sorted(by_idx) != list(range(n)):
        missing = sorted(set(range(n)) - set(by_idx))
        raise bad("nodes", f"idx must be 0..{n - 1}; missing {missing}")
    if not isinstance(data["links"], list):
        raise bad("links", "must be a list")
    listed: dict[tuple[Endpoint, Endpoint], float] = {}
    for k, raw in enumerate(data["links"]):
        where = f"links[{k}]"
        if not isinstance(raw, dict):
            raise bad(where, "must be an object")
        for key in ("a", "b", "cap"):
            if key not in raw:
                raise bad(f"{where}.{key}", "missing")
        a, b, cap = raw["a"], raw["b"], raw["cap"]
        for key, x, ok_str in (("a", a, SOURCE), ("b", b, SINK)):
            if not (x == ok_str or (_is_int(x) and 0 <= x < n)):
                raise bad(f"{where}.{key}", f"must be a node id 0..{n - 1} or '{ok_str}', got {x!r}")
        if a == b:
            raise bad(where, f"link from node {a} to itself")
        if not _is_number(cap) or cap < 0:
            raise bad(f"{where}.cap", f"must be a non-negative number, got {cap!r}")
        if (a, b) in listed:
            raise bad(where, f"link {a} -> {b} is listed twice")
        listed[(a, b)] = float(cap)
    links = dict(listed)
    for (a, b), cap in listed.items():
        if isinstance(a, int) and isinstance(b, int) and (b, a) not in listed:
            links[(b, a)] = cap
    notes = {key: value for key, value in data.items() if key not in ("L", "nodes", "links")}
    notes["file"] = str(path)
    return PlacementProblem(layers=int(L), nodes=[by_idx[i] for i in range(n)], links=links, name=path.stem,
                            notes=notes)


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


# ---- placement files --------------------------------------------------------------

def _names(where) -> list[str]:
    if isinstance(where, PlacementProblem):
        return [nd.name for nd in where.nodes]
    if isinstance(where, Cluster):
        return [nd.name for nd in where.nodes]
    raise TypeError(f"expected a Cluster or PlacementProblem, got {type(where).__name__}")


def _read_ini_ranges(path: Path, names: list[str], layers: int | None) -> Ranges:
    parser = configparser.ConfigParser()
    try:
        with path.open(encoding="utf-8") as fh:
            parser.read_file(fh)
    except FileNotFoundError:
        raise SimError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError, configparser.Error) as exc:
        msg = " ".join(str(exc).split())
        raise SimError(f"{path}: not a valid INI file: {msg}") from None
    for section in ("Settings", "Solution"):
        if not parser.has_section(section):
            raise SimError(f"{path}: missing section [{section}]")
    try:
        offset = int(parser.get("Settings", "offset"))
    except configparser.NoOptionError:
        raise SimError(f"{path}: [Settings] offset is missing") from None
    except ValueError:
        raise SimError(f"{path}: [Settings] offset must be an integer") from None
    ranges: Ranges = {}
    for key, value in parser.items("Solution"):
        prefix = "compute_node_"
        if not key.startswith(prefix) or not key[len(prefix):].isdigit():
            raise SimError(f"{path}: [Solution] {key}: expected keys compute_node_N")
        i = int(key[len(prefix):]) - offset
        if not 0 <= i < len(names):
            raise SimError(f"{path}: [Solution] {key}: node id {i} (N - offset {offset}) is not one of 0..{len(names) - 1}")
        try:
            held = json.loads(value)
        except json.JSONDecodeError:
            held = None
        if not isinstance(held, list) or not all(_is_int(x) for x in held):
            raise SimError(f"{path}: [Solution] {key}: expected a list of layer numbers, got {value!r}")
        if not held:
            continue
        s, e = held[0], held[-1] + 1
        if held != list(range(s, e)):
            raise SimError(f"{path}: node {names[i]} ({key}): layers {held} are not contiguous and increasing")
        if s < 0 or (layers is not None and e > layers):
            raise SimError(f"{path}: node {names[i]} ({key}): layers [{s}, {e}) outside the model's {layers} layers")
        ranges[i] = (s, e)
    return ranges


def read_helix_placement_ini(path, problem: PlacementProblem) -> Ranges:
    """Read Helix's stored solution ``[Solution] compute_node_N=[layers...]`` as ranges.

    Node index = ``N - offset`` (``[Settings] offset``, 2 in Helix's files); each layer
    list must be contiguous and increasing; empty lists hold nothing. Coverage of all
    layers is not checked here (see :func:`read_placement_file`).
    """
    return _read_ini_ranges(Path(path), _names(problem), problem.layers)


def read_placement_file(path, cluster_or_problem: Cluster | PlacementProblem, layers: int | None = None) -> Ranges:
    """Ranges from our placement JSON (:meth:`Placement.to_dict`) or Helix's ``.ini`` (by suffix).

    Node names in our JSON are looked up in the cluster or problem. ``layers`` is the
    model's layer count (taken from a problem; for a cluster, the highest end layer
    if not given). Unknown node names, layers held by no node and ranges outside
    the model raise :class:`SimError` naming them.
    """
    path = Path(path)
    names = _names(cluster_or_problem)
    if isinstance(cluster_or_problem, PlacementProblem):
        layers = cluster_or_problem.layers
    suffix = path.suffix.lower()
    if suffix == ".ini":
        ranges = _read_ini_ranges(path, names, layers)
    elif suffix == ".json":
        ranges = _read_json_ranges(path, names, layers)
    else:
        raise SimError(f"{path}: unknown placement format '{suffix}' (expected .json or .ini)")
    if not ranges:
        raise SimError(f"{path}: the placement holds no layers")
    total = layers if layers is not None else max(e for _, e in ranges.values())
    covered = [False] * total
    for s, e in ranges.values():
        for layer in range(s, e):
            covered[layer] = True
    missing = [k for k, c in enumerate(covered) if not c]
    if missing:
        raise SimError(f"{path}: layers {layer_spans(missing)} are held by no node")
    return ranges


def _read_json_ranges(path: Path, names: list[str], layers: int | None) -> Ranges:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SimError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SimError(f"{path}: not a valid JSON file: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("ranges"), dict):
        raise SimError(f"{path}: ranges: missing (expected an object node name -> [start, end])")
    index = {name: i for i, name in enumerate(names)}
    unknown_names = [name for name in data["ranges"] if name not in index]
    if unknown_names:
        raise SimError(f"{path}: ranges: unknown nodes {', '.join(unknown_names)}")
    ranges: Ranges = {}
    for name, r in data["ranges"].items():
        if not (isinstance(r, list) and len(r) == 2 and all(_is_int(x) for x in r)):
            raise SimError(f"{path}: ranges.{name}: expected [start, end] integers, got {r!r}")
        s, e = r
        if not (0 <= s <= e) or (layers is not None and e > layers):
            raise SimError(f"{path}: ranges.{name}: invalid layer range [{s}, {e})"
                           + (f" for {layers} layers" if layers is not None else ""))
        if e > s:
            ranges[index[name]] = (s, e)
    return ranges


def read_placement_groups(path, cluster: Cluster) -> list[list[int]] | None:
    """The ``groups`` of one of our JSON placements (:attr:`Placement.groups`), as node ids; None when it has
    none (and for Helix's ``.ini`` files)."""
    path = Path(path)
    if path.suffix != ".json":
        return None
    groups = json.loads(path.read_text(encoding="utf-8")).get("groups")
    if groups is None:
        return None
    names = {n.name: n.id for n in cluster.nodes}
    if not (isinstance(groups, list) and all(isinstance(g, list) and all(x in names for x in g) for g in groups)):
        raise SimError(f"{path}: groups: expected lists of node names of cluster '{cluster.name}'")
    return [[names[x] for x in g] for g in groups]


def write_ranges_json(path, ranges: Ranges | Placement, cluster_or_problem: Cluster | PlacementProblem | None = None, *,
                      planner: str = "", model: str = "", notes: dict | None = None) -> None:
    """Write a placement as our JSON (the format of :meth:`Placement.to_dict`).

    Given a :class:`Placement`, writes its ``to_dict()``; given ranges, the node names
    come from ``cluster_or_problem``.
    """
    if isinstance(ranges, Placement):
        data = ranges.to_dict()
    else:
        if cluster_or_problem is None:
            raise TypeError("write_ranges_json needs the cluster or problem to name the nodes")
        names = _names(cluster_or_problem)
        data = {"planner": planner, "model": model,
                "ranges": {names[i]: [int(s), int(e)] for i, (s, e) in sorted(ranges.items())},
                "pipelines": None, "notes": notes or {}}
    Path(path).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")

