"""Import Helix's INI cluster files (Helix, ASPLOS'25) as our cluster TOML.

Helix (github.com/Thesys-lab/Helix-ASPLOS25) describes a cluster in INI:

* ``[NodeNames] total_compute_nodes = N`` and ``[ComputeNode-i] type = T4`` for
  ``i = 0..N-1`` (``connected_nodes`` lists are implied by the link sections and
  not needed);
* ``[Link-a-b] bandwidth = 1250.0 * mbps``, ``latency = 50.0 * MilliSec`` where
  ``a``/``b`` are node ids, ``source`` or ``sink``. ``Link-i-j`` between two nodes
  carries both directions; ``Link-source-i`` is coordinator -> i and
  ``Link-i-sink`` is i -> coordinator (source and sink are our coordinator).
  Pairs without a section have no link.
* ``machine_profiles.ini`` (next to the file, or given) holds per machine type
  ``inbound_nic_speed`` / ``outbound_nic_speed``; ``[SourceNode]`` outbound and
  ``[SinkNode]`` inbound are the coordinator's NIC; ``-1`` means unlimited.

Values are Python-like expressions over Helix's unit names. In Helix's code
``kbps/mbps/gbps`` are 1e3/1e6/1e9 and used as **bytes** per second, so
``1000 * mbps`` is 1e9 B/s (and ``10 * gbps`` is 1e10 B/s). They are read with a
small arithmetic evaluator (numbers, ``+ - * /``, parentheses, whitelisted unit
names), never with ``eval``.
"""

from __future__ import annotations

import ast
import configparser
import math
import operator
import re
from pathlib import Path

from .model import COORDINATOR_NAME, toml_number, toml_string
from ..errors import SimError, unknown

# Unit names of Helix's simulator/utils.py (bandwidth names are bytes/s there).
HELIX_UNITS = {
    "kbps": 1e3, "mbps": 1e6, "gbps": 1e9,
    "KB": 1e3, "MB": 1e6, "GB": 1e9, "Byte": 1.0,
    "Sec": 1.0, "MilliSec": 1e-3, "MicroSec": 1e-6,
}
# Helix machine type -> our catalog machine (Helix's A100 is the 40 GB part, its
# V100 the 16 GB one: machine_profiles.ini vram_size 40 GB / 16 GB).
HELIX_MACHINES = {
    "A100": "A100-40GB", "V100": "V100-16GB", "L4": "L4", "L4x2": "L4x2",
    "T4": "T4", "T4x2": "T4x2", "T4x4": "T4x4",
}
HELIX_UNLIMITED = -1  # machine_profiles.ini: "not applicable / no limit"
MACHINE_PROFILES = "machine_profiles.ini"
REGION = "helix"  # Helix files have no regions: everything goes into one
SOURCE, SINK = "source", "sink"
_MAX_EXPRESSION = 200  # characters; Helix's values are a few dozen

_OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}
_SIGNS = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_LINK = re.compile(r"^Link-(\w+)-(\w+)$")
_NODE = re.compile(r"^ComputeNode-(\d+)$")


def evaluate(text: str, where: str) -> float:
    """Value of an arithmetic expression such as ``1250.0 * mbps`` (never ``eval``).

    Allowed: int/float literals, ``+ - * /``, unary ``+ -``, parentheses and the
    names in :data:`HELIX_UNITS`. Anything else raises SimError naming ``where``.
    """
    if len(text) > _MAX_EXPRESSION:
        raise SimError(f"{where}: expression longer than {_MAX_EXPRESSION} characters")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError:
        raise SimError(f"{where}: cannot parse '{text}'") from None
    try:
        value = float(_evaluate(tree.body, text, where))
    except ZeroDivisionError:
        raise SimError(f"{where}: division by zero in '{text}'") from None
    if not math.isfinite(value):
        raise SimError(f"{where}: '{text}' is not a finite number")
    return value


def _evaluate(node: ast.AST, text: str, where: str) -> float:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.Name):
        if node.id not in HELIX_UNITS:
            raise SimError(f"{where}: unknown name '{node.id}' in '{text}'; "
                           f"allowed: {', '.join(HELIX_UNITS)}")
        return HELIX_UNITS[node.id]
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        return _OPERATORS[type(node.op)](_evaluate(node.left, text, where), _evaluate(node.right, text, where))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _SIGNS:
        return _SIGNS[type(node.op)](_evaluate(node.operand, text, where))
    raise SimError(f"{where}: '{text}' is not plain arithmetic "
                   "(numbers, + - * /, parentheses and unit names only)")


def _read_ini(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with path.open(encoding="utf-8") as fh:
            parser.read_file(fh)
    except FileNotFoundError:
        raise SimError(f"Helix file not found: {path}") from None
    except (configparser.Error, UnicodeDecodeError) as exc:
        raise SimError(f"{path}: not a valid INI file: {str(exc).splitlines()[0]}") from None
    return parser


def _get(parser: configparser.ConfigParser, path: Path, section: str, key: str) -> str:
    if not parser.has_option(section, key):
        raise SimError(f"{path}: [{section}]: missing key '{key}'")
    return parser.get(section, key)


def _value(parser, path: Path, section: str, key: str) -> float:
    return evaluate(_get(parser, path, section, key), f"{path}: [{section}] {key}")


def _nic(parser, path: Path, section: str, key: str) -> float:
    """A NIC speed in bytes/s; Helix's -1 means unlimited."""
    value = _value(parser, path, section, key)
    if value == HELIX_UNLIMITED:
        return math.inf
    if value <= 0:
        raise SimError(f"{path}: [{section}] {key}: must be positive or {HELIX_UNLIMITED}, got {value}")
    return value


def import_helix_ini(path, machine_profiles=None) -> str:
    """Convert a Helix cluster INI file to our cluster TOML text.

    ``machine_profiles`` defaults to ``machine_profiles.ini`` next to ``path``; if
    there is none, NICs are left unlimited. Nodes are named ``<type>-<helix id>``
    (``l4-0``, ``t4-1``, ...), every Helix link becomes an exact ``[[links]]`` entry.
    """
    path = Path(path)
    ini = _read_ini(path)
    if not ini.has_section("NodeNames"):
        raise SimError(f"{path}: missing section [NodeNames] (is this a Helix cluster file?)")
    total = _get(ini, path, "NodeNames", "total_compute_nodes")
    if not total.strip().isdigit() or int(total) < 1:
        raise SimError(f"{path}: [NodeNames] total_compute_nodes: must be a positive integer, got '{total}'")
    count = int(total)

    types, links = {}, []
    for section in ini.sections():
        node, link = _NODE.match(section), _LINK.match(section)
        if node:
            helix_type = _get(ini, path, section, "type").strip()
            if helix_type not in HELIX_MACHINES:
                raise SimError(f"{path}: [{section}] type: {unknown('Helix machine type', helix_type, HELIX_MACHINES)}")
            types[int(node.group(1))] = helix_type
        elif link:
            links.append((section, link.group(1), link.group(2)))
        elif section not in ("NodeNames", "SourceNode", "SinkNode"):
            raise SimError(f"{path}: unexpected section [{section}]; expected [NodeNames], [SourceNode], "
                           "[SinkNode], [ComputeNode-<i>] or [Link-<a>-<b>]")
    if sorted(types) != list(range(count)):
        raise SimError(f"{path}: [ComputeNode-i] sections must be exactly i = 0..{count - 1} "
                       f"(total_compute_nodes), found {sorted(types)}")
    names = {i: f"{t.lower()}-{i}" for i, t in types.items()}

    profiles = Path(machine_profiles) if machine_profiles is not None else path.with_name(MACHINE_PROFILES)
    nics, coordinator_nic = {}, (math.inf, math.inf)
    if machine_profiles is not None or profiles.is_file():
        prof = _read_ini(profiles)
        for helix_type in sorted(set(types.values())):
            if not prof.has_section(helix_type):
                raise SimError(f"{profiles}: no section [{helix_type}] for machine type {helix_type}")
            nics[helix_type] = (_nic(prof, profiles, helix_type, "inbound_nic_speed"),
                                _nic(prof, profiles, helix_type, "outbound_nic_speed"))
        coordinator_nic = (_nic(prof, profiles, "SinkNode", "inbound_nic_speed") if prof.has_section("SinkNode")
                           else math.inf,
                           _nic(prof, profiles, "SourceNode", "outbound_nic_speed") if prof.has_section("SourceNode")
                           else math.inf)

    machines = ", ".join(f"{sum(t == k for t in types.values())} {k}" for k in HELIX_MACHINES if k in types.values())
    out = [f"# Imported from the Helix cluster file {path.name} by simulator.cluster.helix_ini.",
           "# SI units: bandwidth in bytes/s, latency in seconds. Only the listed links exist.",
           f"name = {toml_string(path.stem)}",
           f"description = {toml_string(f'Helix cluster {path.name}: {machines}; links as listed in the file')}",
           f"coordinator = {toml_string(REGION)}",
           f"coordinator_nic_in = {toml_number(coordinator_nic[0])}",
           f"coordinator_nic_out = {toml_number(coordinator_nic[1])}",
           "", f"[regions.{REGION}]", "bandwidth = 0  # no link unless listed below", "latency = 0"]
    for i in range(count):
        out += ["", "[[nodes]]", f"names = [{toml_string(names[i])}]  # Helix ComputeNode-{i}",
                f"gpu = {toml_string(HELIX_MACHINES[types[i]])}"]
        if types[i] in nics:
            out += [f"nic_in = {toml_number(nics[types[i]][0])}", f"nic_out = {toml_number(nics[types[i]][1])}"]

    def end(token: str, section: str) -> str:
        if token in (SOURCE, SINK):
            return token
        if token.isdigit() and int(token) in names:
            return names[int(token)]
        raise SimError(f"{path}: [{section}]: '{token}' is not a compute node id (0..{count - 1}), source or sink")

    for section, a, b in links:
        a, b = end(a, section), end(b, section)
        if a in (SOURCE, SINK) and b in (SOURCE, SINK) or a == SINK or b == SOURCE or a == b:
            raise SimError(f"{path}: [{section}]: links go node-node, source-node or node-sink")
        directed = a == SOURCE or b == SINK
        a = COORDINATOR_NAME if a == SOURCE else a
        b = COORDINATOR_NAME if b == SINK else b
        bandwidth = _value(ini, path, section, "bandwidth")
        latency = _value(ini, path, section, "latency")
        if bandwidth < 0 or latency < 0:
            raise SimError(f"{path}: [{section}]: bandwidth and latency must not be negative")
        out += ["", "[[links]]", f"a = {toml_string(a)}", f"b = {toml_string(b)}",
                f"bandwidth = {toml_number(bandwidth)}", f"latency = {toml_number(latency)}",
                f"directed = {'true' if directed else 'false'}"]
    return "\n".join(out) + "\n"
