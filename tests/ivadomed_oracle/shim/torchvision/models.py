"""Imported at module level by ivadomed.models; its classifier networks are not used."""
