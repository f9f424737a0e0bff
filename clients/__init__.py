"""Clients of the engine: sending heartbeats."""

from clients.heartbeat import HeartbeatClient, InvalidHeartbeat

__all__ = ["HeartbeatClient", "InvalidHeartbeat"]
