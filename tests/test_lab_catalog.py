"""exporter.lab.catalog: the lab's regions, sites and nameserver operators, shared by the simulated and
the real world."""

from __future__ import annotations

import pytest

from exporter.lab import catalog as c


class _World(c.CatalogView):
    def __init__(self, regions: tuple[c.RegionSpec, ...]) -> None:
        self.regions = regions
        self.sites = c.SITES


def test_regions_are_given_as_specs_or_known_names() -> None:
    assert c.region_specs(None) == c.DEFAULT_REGIONS
    mars = c.RegionSpec("mars", "Mars", 0.0, 0.0)
    assert [r.name for r in c.region_specs(["ap-southeast", mars])] == ["ap-southeast", "mars"]
    with pytest.raises(ValueError, match="unknown region 'venus'"):
        c.region_specs(["venus"])
    with pytest.raises(ValueError, match="duplicate region names"):
        c.region_specs(["eu-west", "eu-west"])
    with pytest.raises(ValueError, match="at least one region"):
        c.region_specs([])


def test_a_world_names_its_regions_services_and_operators() -> None:
    world = _World(c.region_specs(["us-east", "eu-west"]))
    assert world.region_names == ("us-east", "eu-west")
    assert "control-a" in world.service_names and "facebook" in world.service_names
    assert world.operators[0] == "meta" and len(set(world.operators)) == len(world.operators)
    assert world.service("whatsapp").hostname == "www.whatsapp.com"
    with pytest.raises(ValueError, match="unknown service 'myspace'"):
        world.service("myspace")


def test_every_site_zone_is_served_by_a_fleet() -> None:
    fleets = {f.key for f in c.FLEETS}
    zones = {z.origin: z.fleet for z in c.ZONES}
    assert all(zones[site.zone] in fleets for site in c.SITES)
