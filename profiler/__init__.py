"""Times real transformer layers and writes the simulator's latency tables."""
