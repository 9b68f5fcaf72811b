"""Great-circle distance, used for distance-band carrier costs and explanations."""

from __future__ import annotations

from math import asin, cos, radians, sin, sqrt

#: Mean Earth radius (IUGG), in km. Carriers price by road distance, which the
#: great-circle distance underestimates by a roughly constant factor: the
#: distance bands absorb that factor, so a spherical Earth is precise enough.
EARTH_RADIUS_KM = 6371.0088


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in km between two WGS 84 points given in decimal degrees."""
    phi1 = radians(lat1)
    phi2 = radians(lat2)
    dphi = phi2 - phi1
    dlambda = radians(lon2 - lon1)
    h = sin(dphi / 2) ** 2 + cos(phi1) * cos(phi2) * sin(dlambda / 2) ** 2
    # min() guards against rounding pushing h a hair above 1 for antipodal points.
    return 2 * EARTH_RADIUS_KM * asin(min(1.0, sqrt(h)))
