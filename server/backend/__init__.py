"""Code run inside Triton's Python-backend stub. Each `model_repository/<model>/1/model.py` is a
thin file importing its `TritonPythonModel` from here."""
