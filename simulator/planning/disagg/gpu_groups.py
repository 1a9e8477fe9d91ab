"""Split a cluster's GPUs into model-serving groups (HexGen-2 planner, step a).

HexGen-2 (Jiang, Yan, Yuan, ICLR'25, arXiv 2502.07903) builds a graph whose nodes are
GPUs and whose edge weights are link bandwidths, and splits it into K groups by
spectral partitioning refined with Kernighan-Lin: fast links stay inside a group (the
tensor/pipeline traffic of a replica stays inside it) and every group can hold one
model replica. The paper gives no more detail and has no public code, so everything
below the idea is ours; the assumptions are listed here and in the docstrings.

API
---
* :func:`gpu_graph` -- the networkx graph over :class:`GPU` (edge ``weight`` = bytes/s).
* :func:`group_count` -- K from memory: ``floor(total usable / (weights x (1 + KV_HEADROOM)))``.
* :func:`partition` -- a :class:`Grouping`: the groups, the cut bandwidth, the usable
  memory per group, and ``notes`` that explain every decision (reductions of k,
  machines split, Kernighan-Lin moves kept or refused).

Assumptions (none of them is in the paper)
------------------------------------------
1. **Replica size.** A replica needs its layer weights, ``layers x bytes_per_layer``
   (embeddings and LM head are left out, as in :func:`simulator.placement.model.check_fits`),
   plus :data:`KV_HEADROOM` = 20 % of that again for KV cache: ``need = weights x 1.2``.
   A group's memory is its GPUs' usable memory (:class:`~simulator.placement.model.MemoryModel`,
   GPU memory x 0.9); a GPU holds ``usable(machine) / gpus_per_machine``.
2. **Graph.** Nodes are GPUs ``(node id, local index)``. GPUs of one machine are linked
   at ``machine.gpu.intra_machine_bandwidth`` (NVLink or PCIe, one direction). GPUs of
   machines ``a`` and ``b`` are linked at ``min(bandwidth[a, b], bandwidth[b, a])``
   (collectives go both ways, so the slower direction counts; 0 = no edge); every GPU
   pair of the two machines gets that value (NIC sharing is ignored: the weights rank
   links for partitioning, they are not a capacity model). The coordinator is no GPU.
3. **K.** :func:`group_count` is the brief's formula, which ignores that a GPU cannot
   be shared by two groups. :func:`partition` therefore also caps k by a packing count:
   per connected component, the better of two greedy packings of its GPUs sorted by
   memory (next fit, largest first; and largest-plus-smallest), a group closing as soon
   as it holds ``need``; a set's capacity is the sum over its components (a group that
   spans two unlinked components could not run TP/PP). Both are lower bounds of the
   best packing (bin covering is NP-hard). Every cut of k is noted.
4. **Recursive bisection.** A set that must become ``k`` groups is split into sides
   that become ``k // 2`` and ``k - k // 2`` groups (k = 5 -> 2 and 3). Each side must
   have capacity (assumption 3) for its number of groups. A disconnected set is first
   split by components (see 7).
5. **Spectral sweep.** The Fiedler vector is the second eigenvector of the normalised
   Laplacian ``I - D^-1/2 W D^-1/2`` (scaled back by ``D^-1/2``, i.e. Shi-Malik's
   normalised cut) of the set's GPU graph, among vectors that are constant on each
   *block* (a whole machine, or the part of a machine an earlier cut left on this
   side). The GPUs of a block have identical links, so this is solved exactly and
   cheaply on the block quotient graph (an equitable partition); modes that vary inside
   a block would split a machine and give no order of blocks. Sign: the entry of
   largest magnitude is made positive. Blocks are sorted by their Fiedler value (ties:
   lowest GPU) and cut between two blocks ("sweep cut"). Where the sides need
   different numbers of groups, both ends of the order are tried. The
   target is the memory-proportional point ``memory(A) = memory x k_A / k``. Among the
   feasible cuts, the one closest to the target and every one within
   ``BALANCE_SLACK x memory / k`` of it (at least as close as the closest) are
   candidates. Among them, those whose ratio cut ``cut x (1/memory(A) + 1/memory(B))``
   is within ``RATIO_TOLERANCE`` (10 %) of the lowest count as equally good, and the
   one closest to the target wins. So the split is memory-proportional give or take
   half a group, leaves that point only for a clearly sparser link cut (an island
   boundary), and is not pulled off balance by link jitter of a few percent.
6. **Whole machines.** A cut falls between blocks, and cuts whose sides can form their
   groups from whole blocks (the packing of assumption 3 over blocks instead of GPUs)
   are preferred (``level`` "whole" in ``notes["bisections"]``); next come block cuts
   that are feasible only at GPU granularity ("machine": a later bisection will split
   a machine). Only when no block cut is feasible (a machine alone holds more than a
   side needs, e.g. one 8-GPU machine becoming 2 groups) is a cut allowed inside one
   block ("gpu"): GPUs keep the block order, by local index inside a block, so at most
   one machine is split per bisection. ``notes["split_machines"]`` names the machines
   whose GPUs end up in more than one group. When the spectral order offers no "whole"
   cut but the set's blocks could form all k groups whole, the chosen "machine" cut (or,
   if there is none, the block cut nearest the target) is repaired by the one block
   move or swap that makes both sides whole-feasible with the lowest ratio cut (same
   10 % rule; "whole (repaired)"). The spectral order carries little information on a
   uniform network, which is where this matters (e.g. the ``hexgen2-het1`` preset).
7. **Disconnected sets.** Components are handed groups one at a time by the D'Hondt
   rule on memory (next group to the component with the largest
   ``memory / (groups so far + 1)``), never beyond a component's capacity. A component
   too small for one replica joins the group of that set with the least memory, and the
   final clean-up (9) moves it where it has links, if anywhere.
8. **Kernighan-Lin.** Each bisection is refined with
   ``networkx.algorithms.community.kernighan_lin_bisection`` on the graph whose nodes
   are the blocks (edge weight = sum of bandwidth between their GPUs, node weights
   ignored), so machines stay whole and the block counts of the sides stay the same.
   The result is kept only if it lowers the cut bandwidth and both sides still have
   capacity for their groups; otherwise the spectral split stays. networkx uses the
   seed only when it draws a starting partition, which it never does here, so the
   result is the same for every seed (the seed is forwarded all the same).
9. **Clean-up.** A finished group whose GPUs are not all linked keeps its component
   with the most capacity (then memory); every other component moves to the group it
   has the most bandwidth to (none: it stays, and ``notes["unlinked"]`` names it).
   Moving only adds memory to the receiving group, so every group still holds a
   replica.
10. **Determinism.** Every tie is broken by GPU order (node id, then local index); the
    eigensolver (LAPACK) is deterministic for the same input on the same machine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import networkx as nx
import numpy as np
from scipy.linalg import eigh
from scipy.sparse.csgraph import connected_components

from ...cluster.model import Cluster
from ...errors import SimError
from ...catalog.models import ModelSpec
from ...placement.model import MemoryModel

KV_HEADROOM = 0.2  # assumption: KV cache room = 20 % of the weights again
KL_PASSES = 10  # networkx's default max_iter for kernighan_lin_bisection
BALANCE_SLACK = 0.5  # cuts within half a group's memory of the proportional point compete
DEFAULT_MEMORY = MemoryModel()
RATIO_TOLERANCE = 0.1  # ratio cuts within 10 % of the best count as equal (balance decides)


@dataclass(frozen=True, order=True)
class GPU:
    """One GPU: the cluster node (machine) id and its index inside the machine."""

    node: int
    index: int

    def name(self, cluster: Cluster) -> str:
        """``machine-name/index``, e.g. ``a100x8-3/5``."""
        return f"{cluster.nodes[self.node].name}/{self.index}"

    def __str__(self) -> str:
        return f"{self.node}.{self.index}"


@dataclass
class Grouping:
    """GPU groups, each meant to serve one model replica."""

    groups: list[list[GPU]]  # each sorted; groups sorted by first GPU
    cut_bandwidth: float  # bytes/s: sum of the GPU-pair edges between different groups
    memory: list[float]  # usable bytes per group
    notes: dict = field(default_factory=dict)

    @property
    def k(self) -> int:
        return len(self.groups)

    def group_of(self, gpu: GPU) -> int:
        for i, group in enumerate(self.groups):
            if gpu in group:
                return i
        raise KeyError(gpu)

    def machines(self, i: int) -> list[int]:
        """Node ids with at least one GPU in group ``i``."""
        return sorted({gpu.node for gpu in self.groups[i]})

    def describe(self, cluster: Cluster) -> str:
        lines = [f"{self.k} GPU groups, cut bandwidth {self.cut_bandwidth / 1e9:.3g} GB/s"]
        for i, (group, mem) in enumerate(zip(self.groups, self.memory)):
            parts = []
            for node in self.machines(i):
                mine = [g.index for g in group if g.node == node]
                total = cluster.nodes[node].machine.count
                name = cluster.nodes[node].name
                parts.append(name if len(mine) == total else f"{name}/{','.join(map(str, mine))}")
            lines.append(f"  group {i}: {len(group)} GPUs, {mem / 1e9:.1f} GB usable: {' '.join(parts)}")
        return "\n".join(lines)


# ---- graph ------------------------------------------------------------------------

def _gpus(cluster: Cluster) -> list[GPU]:
    return [GPU(node.id, i) for node in cluster.nodes for i in range(node.machine.count)]


def _bandwidth_matrix(cluster: Cluster, gpus: list[GPU]) -> np.ndarray:
    """GPU x GPU bandwidth (bytes/s), symmetric, zero diagonal (assumption 2)."""
    n = len(cluster.nodes)
    node_of = np.array([g.node for g in gpus], dtype=int)
    links = np.asarray(cluster.bandwidth[:n, :n], dtype=float)
    links = np.minimum(links, links.T)
    w = links[np.ix_(node_of, node_of)]
    intra = np.array([node.machine.gpu.intra_machine_bandwidth for node in cluster.nodes])[node_of]
    same = node_of[:, None] == node_of[None, :]
    w = np.where(same, intra[:, None], w)
    np.fill_diagonal(w, 0.0)
    return w


def gpu_graph(cluster: Cluster) -> nx.Graph:
    """Graph over :class:`GPU` nodes; edge ``weight`` = bandwidth in bytes/s (assumption 2).

    Node attributes: ``machine`` (node name), ``region``, ``gpu`` (GPU model) and
    ``memory_bytes`` (the GPU's datasheet memory).
    """
    gpus = _gpus(cluster)
    w = _bandwidth_matrix(cluster, gpus)
    graph = nx.Graph()
    for g in gpus:
        node = cluster.nodes[g.node]
        graph.add_node(g, machine=node.name, region=node.region, gpu=node.machine.gpu.name,
                       memory_bytes=node.machine.gpu.memory_bytes)
    rows, cols = np.nonzero(np.triu(w, 1))
    graph.add_edges_from((gpus[i], gpus[j], {"weight": float(w[i, j])}) for i, j in zip(rows, cols))
    return graph


# ---- group count ------------------------------------------------------------------

def replica_bytes(model: ModelSpec) -> float:
    """Weight bytes of one replica: ``layers x bytes_per_layer`` (assumption 1)."""
    return float(model.layers * model.bytes_per_layer)


def group_count(cluster: Cluster, model: ModelSpec, memory: MemoryModel | None = DEFAULT_MEMORY,
                kv_headroom: float = KV_HEADROOM) -> int:
    """Most groups that could each hold a replica with KV headroom, by total memory.

    ``floor(total usable / (weights x (1 + kv_headroom)))``, at least 1; :class:`SimError`
    saying how much is missing if the whole cluster cannot hold one replica.
    """
    memory = memory or DEFAULT_MEMORY
    if kv_headroom < 0:
        raise SimError(f"kv_headroom must be >= 0, got {kv_headroom}")
    weights = replica_bytes(model)
    need = weights * (1.0 + kv_headroom)
    total = math.fsum(memory.usable_bytes(cluster, n) for n in range(len(cluster.nodes)))
    if total < need:
        raise SimError(
            f"{model.name} does not fit on cluster {cluster.name}: one replica with {kv_headroom:.0%} KV headroom "
            f"needs {need / 1e9:.1f} GB ({weights / 1e9:.1f} GB of weights), the cluster has "
            f"{total / 1e9:.1f} GB usable; short by {(need - total) / 1e9:.1f} GB")
    return max(1, math.floor(total / need))


# ---- partition ----------------------------------------------------------------------

def partition(cluster: Cluster, model: ModelSpec, k: int | None = None, *,
              memory: MemoryModel | None = DEFAULT_MEMORY, seed: int = 0, kl_passes: int = KL_PASSES,
              kv_headroom: float = KV_HEADROOM) -> Grouping:
    """Split the cluster's GPUs into ``k`` groups (default :func:`group_count`).

    Recursive spectral bisection of the GPU bandwidth graph, each bisection refined by
    Kernighan-Lin over whole machines; every group holds one replica with KV headroom.
    If ``k`` groups cannot all hold a replica, fewer are made and ``notes["reductions"]``
    says where and why. See the module docstring for every assumption.
    """
    memory = memory or DEFAULT_MEMORY
    k_max = group_count(cluster, model, memory, kv_headroom)  # raises if nothing fits
    if k is None:
        k = k_max
    elif isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise SimError(f"number of GPU groups must be a positive integer, got {k!r}")
    if kl_passes < 0:
        raise SimError(f"kl_passes must be >= 0, got {kl_passes}")
    return _Partitioner(cluster, model, memory, kv_headroom, seed, kl_passes).run(int(k), k_max)


@dataclass
class _Cut:
    dev: float  # |memory(A) - target|
    orient: int  # 0: A is a prefix of the Fiedler order, 1: of the reversed order
    pos: int  # position of the cut in the (block or GPU) sequence
    mem_a: float
    mem_b: float
    cut: float  # bytes/s

    @property
    def ratio(self) -> float:
        return self.cut * (1.0 / self.mem_a + 1.0 / self.mem_b)


class _Partitioner:
    """State of one :func:`partition` call. GPUs are ints (positions in ``self.gpus``);
    a block is a sorted int array of GPUs of one machine that stay together."""

    def __init__(self, cluster: Cluster, model: ModelSpec, memory: MemoryModel, kv_headroom: float,
                 seed: int, kl_passes: int):
        self.cluster = cluster
        self.model = model
        self.seed = seed
        self.kl_passes = kl_passes
        self.gpus = _gpus(cluster)
        self.w = _bandwidth_matrix(cluster, self.gpus)
        self.node_of = np.array([g.node for g in self.gpus], dtype=int)
        self.mem = np.array([memory.usable_bytes(cluster, g.node) / cluster.nodes[g.node].machine.count
                             for g in self.gpus])
        self.weights = replica_bytes(model)
        self.kv_headroom = kv_headroom
        self.need = self.weights * (1.0 + kv_headroom)
        self.reductions: list[str] = []
        self.bisections: list[dict] = []
        self.unlinked: list[str] = []
        self.kl = {"tried": 0, "kept": 0}

    # ---- driver -------------------------------------------------------------------
    def run(self, k: int, k_max: int) -> Grouping:
        blocks = [np.flatnonzero(self.node_of == node.id) for node in self.cluster.nodes]
        groups = self._cleanup(self._split(blocks, k, "root"))
        groups = sorted((sorted(int(i) for i in g) for g in groups), key=lambda g: g[0])
        label = np.empty(len(self.gpus), dtype=int)
        for gi, g in enumerate(groups):
            label[g] = gi
        cross = label[:, None] != label[None, :]
        cut = float(np.triu(self.w * cross, 1).sum())
        mem = [float(self.mem[g].sum()) for g in groups]
        split = sorted({int(self.node_of[i]) for g in groups for i in g
                        if np.any(label[self.node_of == self.node_of[i]] != label[i])})
        notes = {
            "k_requested": k, "k_memory": k_max, "k": len(groups),
            "weights_bytes": self.weights, "kv_headroom": self.kv_headroom, "need_bytes": self.need,
            "reductions": self.reductions, "split_machines": [self.cluster.nodes[n].name for n in split],
            "unlinked": self.unlinked, "kernighan_lin": dict(self.kl), "bisections": self.bisections,
            "seed": self.seed,
        }
        return Grouping([[self.gpus[i] for i in g] for g in groups], cut, mem, notes)

    # ---- capacity -------------------------------------------------------------------
    def _cover(self, gpus: np.ndarray) -> int:
        """Packing count of GPUs (assumption 3)."""
        return self._cover_mems(self.mem[gpus])

    def _cover_mems(self, mems: np.ndarray) -> int:
        """Packing count (assumption 3): the better of two greedy packings of the items
        sorted by memory, largest first: "next fit" (fill a group in that order) and
        "largest plus smallest" (a group starts with the largest item left and is topped
        up with the smallest ones)."""
        mems = np.sort(np.asarray(mems, dtype=float))[::-1]
        if mems.size == 0 or mems[0] <= 0:
            return 0
        if mems[0] == mems[-1]:
            return int(mems.size // math.ceil(self.need / mems[0] - 1e-12))
        next_fit, acc = 0, 0.0
        for x in mems:
            acc += x
            if acc >= self.need:
                next_fit, acc = next_fit + 1, 0.0
        pair_up, lo, hi = 0, 0, mems.size - 1
        while lo <= hi:
            acc = mems[lo]
            lo += 1
            while acc < self.need and lo <= hi:
                acc += mems[hi]
                hi -= 1
            if acc >= self.need:
                pair_up += 1
        return max(next_fit, pair_up)

    def _components(self, adjacency: np.ndarray) -> list[list[int]]:
        """Connected components of a (block-level) adjacency matrix, in index order."""
        linked = np.asarray(adjacency) > 0
        seen = np.zeros(len(linked), dtype=bool)
        comps = []
        for start in range(len(linked)):
            if seen[start]:
                continue
            reach = np.zeros(len(linked), dtype=bool)
            reach[start] = True
            while True:
                grown = reach | linked[reach].any(axis=0)
                if (grown == reach).all():
                    break
                reach = grown
            seen |= reach
            comps.append([int(i) for i in np.flatnonzero(reach)])
        return comps

    def _capacity(self, parts: list[np.ndarray], adjacency: np.ndarray, whole: bool = False) -> int:
        """Sum over linked components of the packing count; ``adjacency`` is the
        block-level matrix of ``parts`` (blocks of one machine share all links).
        ``whole``: pack whole blocks instead of GPUs (groups that split no machine)."""
        if whole:
            return sum(self._cover_mems(np.array([self.mem[parts[i]].sum() for i in comp]))
                       for comp in self._components(adjacency))
        return sum(self._cover(np.concatenate([parts[i] for i in comp])) for comp in self._components(adjacency))

    def _block_matrix(self, blocks: list[np.ndarray]) -> np.ndarray:
        """Block x block sum of GPU-pair bandwidth."""
        idx = np.concatenate(blocks)
        member = np.zeros((len(idx), len(blocks)))
        member[np.arange(len(idx)), np.repeat(np.arange(len(blocks)), [len(b) for b in blocks])] = 1.0
        return member.T @ self.w[np.ix_(idx, idx)] @ member

    # ---- recursion ------------------------------------------------------------------
    def _split(self, blocks: list[np.ndarray], k: int, path: str) -> list[np.ndarray]:
        idx = np.concatenate(blocks)
        wb = self._block_matrix(blocks)
        cap = self._capacity(blocks, wb)
        if cap < k:
            self.reductions.append(f"{path}: {len(idx)} GPUs ({self.mem[idx].sum() / 1e9:.1f} GB) can hold "
                                   f"{cap} replica(s) with headroom, not {k}; making {cap}")
            k = cap
        if k <= 1:
            return [idx]
        comps = self._components(wb)
        if len(comps) > 1:
            return self._split_components(blocks, comps, k, path)
        for kk in range(k, 1, -1):
            found = self._bisect(blocks, wb, kk, path)
            if found is not None:
                (side_a, k_a), (side_b, k_b) = found
                return self._split(side_a, k_a, path + ".0") + self._split(side_b, k_b, path + ".1")
            self.reductions.append(f"{path}: no bisection of {len(idx)} GPUs gives every one of {kk} groups "
                                   f"a replica; trying {kk - 1}")
        return [idx]

    def _split_components(self, blocks, comps, k, path) -> list[np.ndarray]:
        """Assumption 7: D'Hondt over the components, capped by their capacity."""
        parts = [[blocks[i] for i in comp] for comp in comps]
        mems = [float(self.mem[np.concatenate(p)].sum()) for p in parts]
        caps = [self._capacity(p, self._block_matrix(p)) for p in parts]
        share = [0] * len(parts)
        for _ in range(k):
            open_ = [c for c in range(len(parts)) if share[c] < caps[c]]
            if not open_:
                break
            best = max(open_, key=lambda c: (mems[c] / (share[c] + 1), -c))
            share[best] += 1
        if sum(share) < k:
            self.reductions.append(f"{path}: {len(parts)} unlinked parts can hold {sum(share)} replica(s), "
                                   f"not {k}; making {sum(share)}")
        groups: list[np.ndarray] = []
        dust: list[np.ndarray] = []
        for c, part in enumerate(parts):
            if share[c]:
                groups += self._split(part, share[c], f"{path}.c{c}")
            else:
                dust.append(np.concatenate(part))
        for d in dust:  # joins the least-memory group; the clean-up may move it where it has links
            j = min(range(len(groups)), key=lambda i: (self.mem[groups[i]].sum(), i))
            groups[j] = np.concatenate([groups[j], d])
        return groups

    # ---- one bisection ----------------------------------------------------------------
    @staticmethod
    def _fiedler(wb: np.ndarray) -> np.ndarray:
        """Fiedler vector of the set's normalised GPU Laplacian, one value per block
        (assumption 5), solved on the block quotient graph.

        GPUs of one block have identical links (same machine), so the blocks are an
        equitable partition of the GPU graph: its block-constant eigenvectors are
        exactly the solutions of ``L_q x = lambda D_q x`` with ``L_q`` the Laplacian of
        the block graph ``wb`` (between-block sums) and ``D_q`` the blocks' total GPU
        degree (within-block links included). Modes that vary inside a block would
        split a machine and give no order of blocks, so they are not looked at.
        """
        scale = wb.max()
        w = wb / scale
        degree = w.sum(axis=1)  # includes the within-block links on the diagonal
        between = w - np.diag(np.diag(w))
        lap = np.diag(between.sum(axis=1)) - between
        inv = 1.0 / np.sqrt(degree)
        _, vec = eigh(inv[:, None] * lap * inv[None, :], subset_by_index=[1, 1])
        v = vec[:, 0] * inv
        if v[np.argmax(np.abs(v))] < 0:
            v = -v
        return v

    def _bisect(self, blocks, wb, k, path):
        """One memory-feasible bisection into sides of k//2 and k - k//2 groups, or None."""
        k_a, k_b = k // 2, k - k // 2
        idx = np.concatenate(blocks)
        value = self._fiedler(wb).tolist() if len(blocks) > 1 else [0.0]
        order = sorted(range(len(blocks)), key=lambda i: (value[i], int(blocks[i][0])))
        total = float(self.mem[idx].sum())
        target = total * k_a / k
        slack = BALANCE_SLACK * total / k
        orients = (0,) if k_a == k_b else (0, 1)
        seqs = [order if o == 0 else order[::-1] for o in orients]

        # Block cuts (whole machines): cut weight of every prefix from a 2-D cumulative sum.
        cands = []
        for o, seq in zip(orients, seqs):
            mem_blocks = np.array([self.mem[blocks[i]].sum() for i in seq])
            cum = np.cumsum(mem_blocks)
            cuts = _prefix_cuts(wb[np.ix_(seq, seq)])
            for p in range(1, len(seq)):
                cands.append(_Cut(abs(cum[p - 1] - target), o, p, float(cum[p - 1]), total - float(cum[p - 1]),
                                  float(cuts[p])))

        def block_feasible(c: _Cut, whole: bool) -> bool:
            seq = seqs[orients.index(c.orient)]
            a, b = seq[:c.pos], seq[c.pos:]
            return (self._capacity([blocks[i] for i in a], wb[np.ix_(a, a)], whole) >= k_a
                    and self._capacity([blocks[i] for i in b], wb[np.ix_(b, b)], whole) >= k_b)

        # Assumption 6: prefer cuts whose sides can form their groups from whole blocks.
        level = "whole"
        best = _choose(cands, lambda c: block_feasible(c, True), slack)
        a_ids = b_ids = None
        if best is not None:
            seq = seqs[orients.index(best.orient)]
            a_ids, b_ids = list(seq[:best.pos]), list(seq[best.pos:])
        else:
            level = "machine"
            best = _choose(cands, lambda c: block_feasible(c, False), slack)
            base = best or min(cands, key=lambda c: (c.dev, c.orient, c.pos), default=None)
            if base is not None:
                seq = seqs[orients.index(base.orient)]
                a_ids, b_ids = list(seq[:base.pos]), list(seq[base.pos:])
                repaired = None
                if self._capacity(blocks, wb, True) >= k:
                    repaired = self._whole_repair(blocks, wb, a_ids, b_ids, k_a, k_b, target)
                if repaired is not None:
                    a_ids, b_ids, best = repaired
                    level = "whole (repaired)"
                elif best is None:
                    a_ids = b_ids = None
        if best is not None:
            side_a = [blocks[i] for i in a_ids]
            side_b = [blocks[i] for i in b_ids]
        else:
            # Assumption 6: one machine split, GPUs in block order.
            level = "gpu"
            cands = []
            gseqs = {}
            for o, seq in zip(orients, seqs):
                gseq = np.concatenate([blocks[i] for i in seq])
                owner = np.repeat(np.arange(len(seq)), [len(blocks[i]) for i in seq])
                gseqs[o] = (gseq, owner)
                cum = np.cumsum(self.mem[gseq])
                cuts = _prefix_cuts(self.w[np.ix_(gseq, gseq)])
                for q in range(1, len(gseq)):
                    if owner[q - 1] == owner[q]:  # inside a block (block boundaries failed above)
                        cands.append(_Cut(abs(cum[q - 1] - target), o, q, float(cum[q - 1]),
                                          total - float(cum[q - 1]), float(cuts[q])))

            def gpu_sides(c: _Cut):
                seq = seqs[orients.index(c.orient)]
                gseq, owner = gseqs[c.orient]
                j = int(owner[c.pos])  # the split block's position in seq
                start = int(np.searchsorted(owner, j))
                a_parts = [blocks[i] for i in seq[:j]] + [gseq[start:c.pos]]
                b_parts = [gseq[c.pos:start + len(blocks[seq[j]])]] + [blocks[i] for i in seq[j + 1:]]
                return seq, j, a_parts, b_parts

            def gpu_feasible(c: _Cut) -> bool:
                seq, j, a_parts, b_parts = gpu_sides(c)
                a_ids, b_ids = list(seq[:j + 1]), list(seq[j:])  # the split block's parts keep its links
                return (self._capacity(a_parts, wb[np.ix_(a_ids, a_ids)]) >= k_a
                        and self._capacity(b_parts, wb[np.ix_(b_ids, b_ids)]) >= k_b)

            best = _choose(cands, gpu_feasible, slack)
            if best is None:
                return None
            seq, j, side_a, side_b = gpu_sides(best)

        record = {"path": path, "gpus": int(len(idx)), "k": k, "sides": [k_a, k_b], "level": level,
                  "memory_share": best.mem_a / total, "cut_spectral": best.cut}
        side_a, side_b, outcome, cut = self._kernighan_lin(side_a, side_b, k_a, k_b, best.cut,
                                                           level.startswith("whole"))
        record.update(kernighan_lin=outcome, cut=cut)
        self.bisections.append(record)
        return (side_a, k_a), (side_b, k_b)

    def _whole_repair(self, blocks, wb, a_ids, b_ids, k_a, k_b, target):
        """Assumption 6: one block moved or two swapped so that both sides can form their
        groups from whole blocks; the lowest ratio cut wins (10 % tolerance, then the
        most proportional). None if no such move exists."""
        total = float(sum(self.mem[b].sum() for b in blocks))
        options = [([x], []) for x in a_ids if len(a_ids) > 1] + [([], [y]) for y in b_ids if len(b_ids) > 1]
        options += [([x], [y]) for x in a_ids for y in b_ids]
        found = []
        for n, (out_a, out_b) in enumerate(options):
            a = [i for i in a_ids if i not in out_a] + out_b
            b = [i for i in b_ids if i not in out_b] + out_a
            if (self._capacity([blocks[i] for i in a], wb[np.ix_(a, a)], True) < k_a
                    or self._capacity([blocks[i] for i in b], wb[np.ix_(b, b)], True) < k_b):
                continue
            mem_a = float(sum(self.mem[blocks[i]].sum() for i in a))
            found.append((_Cut(abs(mem_a - target), 0, n, mem_a, total - mem_a, float(wb[np.ix_(a, b)].sum())), a, b))
        if not found:
            return None
        best = min(c.ratio for c, _, _ in found)
        cut, a, b = min((f for f in found if f[0].ratio <= best * (1.0 + RATIO_TOLERANCE)),
                        key=lambda f: (f[0].dev, f[0].pos))
        return sorted(a), sorted(b), cut

    def _kernighan_lin(self, side_a, side_b, k_a, k_b, cut, whole):
        """Assumption 8: KL over blocks; kept only if it lowers the cut and both sides
        still have capacity (of whole blocks, if the spectral split had that)."""
        parts = side_a + side_b
        if len(side_a) < 1 or len(side_b) < 1 or len(parts) < 3 or self.kl_passes == 0:
            return side_a, side_b, "skipped", cut
        self.kl["tried"] += 1
        wb = self._block_matrix(parts)
        graph = nx.Graph()
        graph.add_nodes_from(range(len(parts)))
        rows, cols = np.nonzero(np.triu(wb, 1))
        graph.add_edges_from((int(i), int(j), {"weight": float(wb[i, j])}) for i, j in zip(rows, cols))
        a0 = set(range(len(side_a)))
        b0 = set(range(len(side_a), len(parts)))
        p1, p2 = nx.algorithms.community.kernighan_lin_bisection(
            graph, partition=(a0, b0), max_iter=self.kl_passes, weight="weight", seed=self.seed)
        # networkx keeps the side sizes; find which part is A's (sizes, else overlap with A).
        if len(a0) != len(b0):
            a1 = p1 if len(p1) == len(a0) else p2
        else:
            a1 = p1 if len(p1 & a0) > len(p2 & a0) else p2
        a_ids = sorted(a1)
        b_ids = sorted(set(range(len(parts))) - a1)
        if set(a_ids) == a0:
            return side_a, side_b, "no gain", cut
        new_cut = float(wb[np.ix_(a_ids, b_ids)].sum())
        if not new_cut < cut * (1.0 - 1e-12):
            return side_a, side_b, "no gain", cut
        new_a = [parts[i] for i in a_ids]
        new_b = [parts[i] for i in b_ids]
        if (self._capacity(new_a, wb[np.ix_(a_ids, a_ids)], whole) < k_a
                or self._capacity(new_b, wb[np.ix_(b_ids, b_ids)], whole) < k_b):
            return side_a, side_b, f"refused (memory; cut {new_cut:.4g})", cut
        self.kl["kept"] += 1
        return new_a, new_b, "kept", new_cut

    # ---- clean-up ---------------------------------------------------------------------
    def _cleanup(self, groups: list[np.ndarray]) -> list[np.ndarray]:
        """Assumption 9: unlinked parts of a group move to the group they have links to."""
        groups = [np.sort(g) for g in groups]
        for gi in range(len(groups)):
            g = groups[gi]
            sub = self.w[np.ix_(g, g)]
            _, labels = connected_components(sub > 0, directed=False)
            if labels.max() == 0:
                continue
            comps = [g[labels == lab] for lab in range(labels.max() + 1)]
            keep = max(range(len(comps)), key=lambda c: (self._cover(comps[c]), self.mem[comps[c]].sum(), -c))
            groups[gi] = comps[keep]
            for c, comp in enumerate(comps):
                if c == keep:
                    continue
                links = [self.w[np.ix_(comp, other)].sum() if j != gi else -1.0 for j, other in enumerate(groups)]
                j = int(np.argmax(links))
                if links[j] > 0:
                    groups[j] = np.sort(np.concatenate([groups[j], comp]))
                else:
                    groups[gi] = np.sort(np.concatenate([groups[gi], comp]))
                    self.unlinked.append(", ".join(self.gpus[i].name(self.cluster) for i in comp))
        return groups


def _prefix_cuts(w: np.ndarray) -> np.ndarray:
    """``cut[p]`` = total weight between the first p and the other rows of symmetric ``w``."""
    rows = np.concatenate([[0.0], np.cumsum(w.sum(axis=1))])
    inner = np.concatenate([[0.0], np.diagonal(np.cumsum(np.cumsum(w, axis=0), axis=1))])
    return rows - inner


def _choose(cands: list[_Cut], feasible, slack: float) -> _Cut | None:
    """Assumption 5: the most proportional of the near-best ratio cuts among the
    feasible cuts near the proportional point."""
    window = None
    pool = []
    for c in sorted(cands, key=lambda c: (c.dev, c.orient, c.pos)):
        if window is not None and c.dev > window:
            break
        if not feasible(c):
            continue
        if window is None:
            window = max(slack, c.dev)
        pool.append(c)
    if not pool:
        return None
    best = min(c.ratio for c in pool)
    return min((c for c in pool if c.ratio <= best * (1.0 + RATIO_TOLERANCE)), key=lambda c: (c.dev, c.orient, c.pos))
