"""Import shim (see ../README.md): only what ivadomed's inference path touches."""
from . import models, transforms, utils  # noqa: F401
