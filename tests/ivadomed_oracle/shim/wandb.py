"""Imported at module level by ivadomed.utils for training logs; not used by inference."""
