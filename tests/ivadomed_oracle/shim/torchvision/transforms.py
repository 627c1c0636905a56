"""`Compose` as ivadomed uses it: a holder of a transform list (ivadomed iterates `.transforms`)."""


class Compose:
    def __init__(self, transforms):
        self.transforms = list(transforms)
