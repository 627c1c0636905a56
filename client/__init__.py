"""lesionseg client: runs where the user is. NIfTI I/O, orientation, cropping, the connection to
a Triton server, the requests of each model family, batches and QC reports; `cli/` is the
`lesionseg` command on top of them.

Importing this package is cheap: heavy modules are imported where they are used.
"""
