"""lesionseg core: what every side shares — errors and exit codes, settings, user paths and the
cache, atomic file writes, the wire contract between client and server, SCT's voxel grids, and
the catalogue of sct_deepseg tasks.

It imports nothing else of lesionseg, and nothing heavy: the client, the server code and the
export scripts all build on it.
"""

__version__ = "0.1.0"
