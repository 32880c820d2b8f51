"""The outage lab: a small simulated internet on loopback that replays incident scenarios.

    world = World(speed=scenario.default_speed)
    await world.start()
    config = world.exporter_config()            # probe the lab with the exporter
    await Player(scenario, world).run()         # replay the story
    await world.stop()

Modules: catalog (who is in the lab), addressing (where), zones/authoritative/recursive/cache (DNS),
edges/certs (HTTP(S)), world (all of it together), labconfig (the exporter config for it), scenario
(YAML scenarios and the player), dnsserver (the programmable DNS server underneath).
"""

from exporter.lab.scenario import (
    Phase,
    Player,
    Scenario,
    ScenarioError,
    builtin_names,
    load_builtin,
    load_scenario,
    load_scenario_text,
)
from exporter.lab.world import World

__all__ = [
    "Phase",
    "Player",
    "Scenario",
    "ScenarioError",
    "World",
    "builtin_names",
    "load_builtin",
    "load_scenario",
    "load_scenario_text",
]
