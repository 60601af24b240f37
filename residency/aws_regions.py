"""The AWS commercial regions regionkit knows, with approximate coordinates.

Coordinates are the public metro locations of each region. They order replicas
"nearest first" by great-circle distance; the policy may override the order.
"""

from __future__ import annotations

import math
from typing import NamedTuple

__all__ = ["AWS_REGIONS", "RegionInfo", "distance_km"]


class RegionInfo(NamedTuple):
    code: str
    location: str
    country: str
    lat: float
    lon: float


_TABLE = """
us-east-1|N. Virginia|US|38.9|-77.4
us-east-2|Ohio|US|40.0|-83.0
us-west-1|N. California|US|37.4|-121.9
us-west-2|Oregon|US|45.8|-119.7
ca-central-1|Montreal|CA|45.5|-73.6
ca-west-1|Calgary|CA|51.0|-114.1
mx-central-1|Queretaro|MX|20.6|-100.4
sa-east-1|Sao Paulo|BR|-23.5|-46.6
eu-central-1|Frankfurt|DE|50.1|8.7
eu-central-2|Zurich|CH|47.4|8.5
eu-west-1|Ireland|IE|53.3|-6.3
eu-west-2|London|GB|51.5|-0.1
eu-west-3|Paris|FR|48.9|2.4
eu-north-1|Stockholm|SE|59.3|18.1
eu-south-1|Milan|IT|45.5|9.2
eu-south-2|Spain|ES|41.6|-0.9
il-central-1|Tel Aviv|IL|32.1|34.8
me-central-1|UAE|AE|24.5|54.4
me-south-1|Bahrain|BH|26.1|50.6
af-south-1|Cape Town|ZA|-33.9|18.4
ap-south-1|Mumbai|IN|19.1|72.9
ap-south-2|Hyderabad|IN|17.4|78.5
ap-east-1|Hong Kong|HK|22.3|114.2
ap-east-2|Taipei|TW|25.0|121.5
ap-northeast-1|Tokyo|JP|35.7|139.7
ap-northeast-2|Seoul|KR|37.6|127.0
ap-northeast-3|Osaka|JP|34.7|135.5
ap-southeast-1|Singapore|SG|1.3|103.8
ap-southeast-2|Sydney|AU|-33.9|151.2
ap-southeast-3|Jakarta|ID|-6.2|106.8
ap-southeast-4|Melbourne|AU|-37.8|145.0
ap-southeast-5|Malaysia|MY|3.1|101.7
ap-southeast-6|New Zealand|NZ|-36.8|174.8
ap-southeast-7|Thailand|TH|13.8|100.5
"""

AWS_REGIONS: dict[str, RegionInfo] = {}
for _line in _TABLE.strip().splitlines():
    _code, _loc, _cc, _lat, _lon = _line.split("|")
    AWS_REGIONS[_code] = RegionInfo(_code, _loc, _cc, float(_lat), float(_lon))


def distance_km(a: str, b: str) -> float:
    """Great-circle distance between two known regions, in kilometres."""
    ra, rb = AWS_REGIONS[a], AWS_REGIONS[b]
    lat1, lon1, lat2, lon2 = map(math.radians, (ra.lat, ra.lon, rb.lat, rb.lon))
    h = (
        math.sin((lat2 - lat1) / 2) ** 2
        + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    )
    return 2 * 6371.0 * math.asin(math.sqrt(h))
