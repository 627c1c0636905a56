"""Which task a complete series goes to: the first `Route` of the config whose conditions its first
instance meets (Modality, SeriesDescription / ProtocolName regular expressions, ImageType values,
slice orientation), else none (the series is ignored, with that reason in the journal)."""

from __future__ import annotations

import re

import numpy as np

from lesionseg.core.enums import Plane
from lesionseg.gateway.config import Route


def plane_of(ds) -> Plane | str:
    """The plane of a series' slices (axial, sagittal or coronal: the patient axis the slice
    normal is closest to), '' when the instance has no orientation."""
    value = ds.get("ImageOrientationPatient")
    if value is None:
        shared = ds.get("SharedFunctionalGroupsSequence")
        groups = shared[0] if shared else None
        plane = groups.get("PlaneOrientationSequence") if groups is not None else None
        value = plane[0].get("ImageOrientationPatient") if plane else None
    if value is None or len(value) != 6:
        return ""
    normal = np.abs(np.cross(np.asarray(value[:3], float), np.asarray(value[3:], float)))
    return (Plane.SAGITTAL, Plane.CORONAL, Plane.AXIAL)[int(np.argmax(normal))]


def matches(route: Route, ds) -> bool:
    if route.modality and str(ds.get("Modality", "")).strip() != route.modality:
        return False
    if route.series_description and not re.search(route.series_description, str(ds.get("SeriesDescription", ""))):
        return False
    if route.protocol_name and not re.search(route.protocol_name, str(ds.get("ProtocolName", ""))):
        return False
    image_type = [str(v).upper() for v in (ds.get("ImageType") or [])]
    if any(v.upper() not in image_type for v in route.image_type):
        return False
    return not route.plane or plane_of(ds) == route.plane


def route_for(routes, ds) -> Route | None:
    """The first route `ds` (a series' first instance) matches, or None."""
    return next((route for route in routes if matches(route, ds)), None)
