"""The serving software the engine can model, by name (``sim run --engine-profile``).

A profile names the values of the engine-only options (:data:`simulator.runs.spec.ENGINE_ONLY_FIELDS`) that
model one serving stack's software rules; the GPUs, links and tables stay as they are. No imports, so the
CLI can list the names without loading the simulator.
"""

# "runtime" (the default) is our torch runtime's rules: one transfer per next hop, one schedule per step, no host
# copies modelled, recompute on preemption, so that the engine and the runtime serve by the same rules.
# "helix-prototype" is Helix's real prototype (vLLM 0.4 under its layer-wise scheduler, Helix ASPLOS'25 section 6):
# each request is submitted to its next hop alone (llm_sys/worker.py), a node step concatenates and copies its
# inputs on the host (4 + 5 GB/s), vLLM's scheduler runs once per held layer (25 us per sequence per layer,
# fitted), and a full node swaps KV to the host. Measured (experiments/fidelity_helix.py, decode tokens/s against
# the prototype's six single-24 / Llama-2-70B points, offline / online): defaults Helix -9 / +15 %, Swarm +25 /
# +10 %, SP +54 / +11 %; this profile -6 / +2 %, +7 / -3 %, +5 / +3 % (median 4.0 %); the host time is the one
# fitted term and its leave-one-out check is in the README. It is not the default: it models that prototype's
# software, not the GPUs, and splitting transfers per request makes the engine 2.0x slower.
ENGINE_PROFILES: dict[str, dict[str, str]] = {
    "runtime": {},
    "helix-prototype": {"transfers": "per-request", "host_copies": "helix", "host_scheduling": "helix",
                        "preemption": "swap"},
}
