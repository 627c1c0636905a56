"""Reorientation: SCT vs nibabel codes, round trips over every axis permutation and flip."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from lesionseg.core.orientation import axcodes, reorientation, sct_to_nib
from lesionseg.core.errors import UsageError


def test_sct_codes_name_the_side_axes_come_from() -> None:
    assert sct_to_nib("RPI") == ("L", "A", "S")
    assert sct_to_nib("LPI") == ("R", "A", "S")
    for bad in ("RRI", "RP", "XYZ", "RPIS"):
        with pytest.raises(UsageError):
            sct_to_nib(bad)


ORIENTATIONS = ["".join(p) for axes in itertools.permutations(["RL", "AP", "SI"]) for p in itertools.product(*axes)]


@pytest.mark.parametrize("source", ORIENTATIONS)
def test_every_orientation_round_trips_and_keeps_world_positions(source: str) -> None:
    shape = (4, 5, 6)
    directions = {"R": (0, 1), "L": (0, -1), "A": (1, 1), "P": (1, -1), "S": (2, 1), "I": (2, -1)}
    affine = np.eye(4)
    affine[:3, :3] = 0
    for axis, (code, size) in enumerate(zip(source, (0.5, 0.8, 2.0))):
        world, sign = directions[code]
        affine[world, axis] = sign * size
    affine[:3, 3] = [3.0, -7.0, 11.0]
    assert axcodes(affine) == tuple(source)
    data = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    r = reorientation(affine, shape, sct_to_nib("RPI"))
    moved = r.forward(data)
    target = r.target_affine(affine)
    assert axcodes(target) == ("L", "A", "S")
    # every voxel keeps its world position
    for index in [(0, 0, 0), (3, 4, 5), (1, 2, 3)]:
        world = affine @ [*index, 1]
        new_index = np.rint(np.linalg.solve(target, world)[:3]).astype(int)
        assert moved[tuple(new_index)] == data[index]
    assert np.array_equal(r.backward(moved), data)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    assert np.allclose(r.forward_spacing(tuple(spacing)), np.linalg.norm(target[:3, :3], axis=0))
