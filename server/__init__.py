"""lesionseg server: the code that runs where Triton runs, in four layers.

- `launch/`: starting the bundled `tritonserver` binary (the embedded server).
- `repository/`: generating and checking a Triton model repository (configs, thin model.py files).
- `backend/`: the thin Python-backend adapters Triton loads (one response per request).
- `pipelines/`: the numpy steps of every model family, free of Triton.
"""
