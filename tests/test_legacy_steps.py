"""Pure steps of the legacy pipeline, checked against SCT's documented behaviour."""

from __future__ import annotations

import numpy as np
import pytest

from lesionseg.core.grid import new_shape_for, resample_to_shape, zoomed_affine
from lesionseg.server.pipelines import legacy_centerline as ctr
from lesionseg.server.pipelines.legacy import (
    CONTRASTS,
    PERCENTILES,
    _exp_model,
    crop_around,
    crop_start,
    normalise_landmarks,
    segment_chunks,
    uncrop,
)


def test_landmarks_map_percentiles_onto_the_learned_values() -> None:
    rng = np.random.default_rng(0)
    data = rng.gamma(2.0, 200.0, size=(48, 48, 20))
    landmarks = CONTRASTS["t2s"].landmarks
    out = normalise_landmarks(data, landmarks)
    current = np.percentile(data, PERCENTILES)
    # the percentile values themselves land on the landmarks (interior ones by linear interpolation)
    np.testing.assert_allclose(normalise_landmarks(current.reshape(1, 1, -1), landmarks).ravel()[1:-1],
                               np.array(landmarks[1:-1]), rtol=1e-5)
    inside = (data >= current[0]) & (data <= current[-1])
    order = np.argsort(data[inside])
    assert np.all(np.diff(out[inside][order]) >= -1e-3)  # monotonic between the 1st and 99th percentiles
    assert out.dtype == np.float32 and out.shape == data.shape


def test_tails_follow_sct_exponential_model() -> None:
    """SCT's tails: y = s2 + beta * exp(gamma * x), tangent to the neighbouring linear segment at
    its inner end (p10 below, p90 above) and tending to the first / last landmark."""
    data = np.linspace(0, 1000, 10001).reshape(1, 1, -1)
    landmarks = CONTRASTS["t2"].landmarks
    p = np.percentile(data, PERCENTILES)
    below = _exp_model(p[:2], landmarks[:2], landmarks[0])
    above = _exp_model(p[-3:-1], landmarks[-3:-1], landmarks[-1])
    for model, (x1, x2), (y1, y2) in ((below, p[:2], landmarks[:2]), (above, p[-3:-1], landmarks[-3:-1])):
        slope = (y2 - y1) / (x2 - x1)
        assert model(np.array([x2]))[0] == pytest.approx(y2, rel=1e-6)
        h = 1e-3
        assert (model(np.array([x2 + h]))[0] - model(np.array([x2 - h]))[0]) / (2 * h) == pytest.approx(slope, rel=1e-4)
    assert below(np.array([-1e6]))[0] == pytest.approx(landmarks[0], abs=1e-6)
    assert above(np.array([1e7]))[0] == pytest.approx(landmarks[-1], abs=1e-6)
    out = normalise_landmarks(data, landmarks).ravel()
    low, high = data.ravel() < p[0], data.ravel() > p[-1]
    np.testing.assert_allclose(out[low], below(data.ravel()[low]), rtol=1e-5)
    np.testing.assert_allclose(out[high], above(data.ravel()[high]), rtol=1e-5)


def test_crop_window_follows_sct() -> None:
    """SCT's window: [int(c) - 23, int(c) + 25), moved back inside the image at the borders."""
    assert crop_start(30.7, 48, 100) == (7, 55)  # the centerline voxel lands at crop index 23
    assert crop_start(5.0, 48, 100) == (0, 48)
    assert crop_start(95.0, 48, 100) == (52, 100)
    assert crop_start(10.0, 48, 30) == (0, 30)  # smaller than the crop: zero padded at the end


def test_crop_and_uncrop_round_trip_with_borders() -> None:
    volume = np.arange(60 * 70 * 3, dtype=np.float32).reshape(60, 70, 3) + 1
    line = ctr.Centerline(x=np.array([5.0, 30.0, 58.0]), y=np.array([35.0, 2.0, 69.0]), found=np.ones(3, bool))
    cropped, crop = crop_around(volume, line)
    assert cropped.shape == (48, 48, 3)
    assert cropped[23, 0, 1] == volume[30, 0, 1]  # x centred (index 23), y window moved inside
    np.testing.assert_array_equal(cropped[:, :, 2], volume[12:60, 22:70, 2])
    back = uncrop(cropped, crop, volume.shape)
    inside = back > 0
    np.testing.assert_array_equal(back[inside], volume[inside])
    assert inside[5, 35, 0] and not inside[55, 35, 0]


def test_slices_without_centerline_are_not_segmented() -> None:
    volume = np.ones((60, 60, 3), np.float32)
    mask = np.zeros((60, 60, 3), np.float32)
    mask[30, 30, 0] = mask[31, 30, 2] = 1
    line = ctr.centerline_from_mask(mask)
    assert list(line.covered) == [True, False, True]
    cropped, crop = crop_around(volume, line)
    assert cropped[:, :, 1].max() == 0 and crop.x_start[1] == -1
    assert uncrop(cropped, crop, volume.shape)[:, :, 1].max() == 0


def test_blocks_round_trip() -> None:
    volume = np.random.default_rng(2).standard_normal((100, 170, 4)).astype(np.float32)
    blocks = ctr.to_blocks(volume)
    assert blocks.shape == (4 * 2 * 3, 80, 80, 1)
    np.testing.assert_array_equal(ctr.from_blocks(blocks, volume.shape), volume)
    np.testing.assert_array_equal(blocks[0, :, :, 0], volume[:80, :80, 0])


def test_chunks_skip_empty_and_pad_the_last() -> None:
    volume = np.zeros((48, 48, 100), np.float32)
    volume[:, :, 60:70] = 5.0
    calls = []

    def predict(batch: np.ndarray) -> np.ndarray:
        calls.append(batch.shape)
        out = np.full(batch.shape, 0.5, np.float32)
        out[:, :, :, :, :10] = 0.05  # below SCT's 0.1
        return out

    out = segment_chunks(volume, CONTRASTS["t2s"], predict)
    assert calls == [(1, 1, 48, 48, 48)]  # chunks at z 0 and 96 are empty: skipped
    assert out[:, :, 58:96].min() == 1 and out[:, :, 48:58].max() == 0  # binarised > 0.1 per chunk
    assert out[:, :, :48].max() == 0 and out[:, :, 96:].max() == 0


def test_resampling_keeps_world_positions() -> None:
    """A linear ramp in world coordinates stays that ramp on the new grid (linear interpolation)."""
    shape, spacing = (20, 16, 6), (1.0, 1.0, 3.0)
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = [10, -5, 2]
    world_x = lambda aff, shp: (aff @ np.stack([*np.meshgrid(*[np.arange(n) for n in shp], indexing="ij"), np.ones(shp)]).reshape(4, -1))[0].reshape(shp)  # noqa: E731
    data = world_x(affine, shape).astype(np.float32)
    new_shape = new_shape_for(shape, spacing, (0.5, 0.5, 3.0))
    assert new_shape == (40, 32, 6)
    out = resample_to_shape(data, new_shape, order=1)
    expected = world_x(zoomed_affine(affine, shape, new_shape), new_shape)
    interior = (slice(0, -2), slice(0, -2), slice(None))  # samples past the last voxel repeat it
    np.testing.assert_allclose(out[interior], expected[interior], atol=1e-4)
    assert out[0, 0, 0] == data[0, 0, 0]  # SCT: the first voxel centres coincide


def test_tracking_follows_the_cord_and_ignores_a_distractor() -> None:
    nx, ny, nz = 120, 120, 30
    prob = np.zeros((nx, ny, nz), np.float32)
    xs = 60 + 10 * np.sin(np.arange(nz) / 6)
    for z in range(nz):
        if z in (11, 12):
            continue  # the network missed two slices
        cx = int(round(xs[z]))
        prob[cx - 3 : cx + 4, 47:54, z] = 0.9
    prob[100:110, 100:110, 20:23] = 0.99  # a bright distractor far from the cord
    line = ctr.track_centerline(prob, (0.5, 0.5, 1.0), smoothing_mm=0.0)
    assert not line.found[11] and line.found[10]
    np.testing.assert_allclose(line.x[line.found], np.rint(xs[line.found]), atol=0.01)
    assert np.all(np.abs(line.x - xs) < 1.5) and np.all(np.abs(line.y - 50) < 0.01)


def test_no_cord_is_an_error() -> None:
    with pytest.raises(ctr.CenterlineError, match="no spinal cord found"):
        ctr.track_centerline(np.zeros((10, 10, 3), np.float32), (0.5, 0.5, 1.0))
    with pytest.raises(ctr.CenterlineError, match="centerline file is empty"):
        ctr.centerline_from_mask(np.zeros((10, 10, 3), bool))


def test_scale_intensity_uses_the_2nd_and_98th_percentiles() -> None:
    data = np.arange(1000, dtype=np.float32)
    out = ctr.scale_intensity(data)
    p2, p98 = np.percentile(data, (2, 98))
    assert out.min() == 0 and out.max() == pytest.approx(255, abs=1e-3)
    assert out[int(p2)] == pytest.approx(0, abs=0.3) and out[int(np.ceil(p98))] == pytest.approx(255, abs=1e-3)
