"""Imported at module level by ivadomed.visualize; not used by inference."""
