"""Trajectories, the on-disk store, readers of the real dataset formats, and splits."""

from force2geo.data.store import TrajectoryStore, TrajectoryWriter
from force2geo.data.trajectory import STAGES, Trajectory

__all__ = ["STAGES", "Trajectory", "TrajectoryStore", "TrajectoryWriter"]
