"""A simulated Talos Linux cluster for the talosops.pki tests and demo (see ../README.md)."""

from .cluster import SimCluster
from .node import SimNode

__all__ = ["SimCluster", "SimNode"]
