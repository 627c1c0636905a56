"""lesionseg client: command line, NIfTI I/O, orientation, cropping, gRPC calls, QC reports.

Importing this package is cheap: heavy modules are imported where they are used.
"""

__version__ = "0.1.0"
