"""A Triton model repository: `config.pbtxt` from dataclasses, thin `model.py` files, every model family's entries, and static checks."""
