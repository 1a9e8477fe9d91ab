"""Test doubles shared by several test files."""


class View:
    """A ClusterView with fixed queue lengths and free KV per node."""

    def __init__(self, queues=None, free=None):
        self.queues, self.free = queues or {}, free or {}

    def now(self):
        return 0.0

    def queue_length(self, node):
        return self.queues.get(node, 0)

    def free_kv_bytes(self, node):
        return self.free.get(node, 1e18)

    def kv_room_bytes(self, node):  # no admission bookings: the room is the free KV
        return self.free_kv_bytes(node)

    def hop_delay(self, a, b):
        return None
