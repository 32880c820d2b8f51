"""The outage lab's real backend: the lab's world built from Knot, Unbound and nginx in network namespaces.

    with RealWorld(speed=60) as world:          # root; Debian packages knot, unbound, nginx-light, iproute2
        await Player(scenario, world).run()     # the same scenarios and control API as the simulated World

Modules: netns (namespaces, links, calls from inside a namespace), plan (addresses in 198.18.0.0/15),
zonefiles (Knot zone files from the lab's zone data), knot / unbound / nginx (the servers), daemons
(processes in namespaces), world (all of it together), forward (host ports into the lab), demo
(``outage-exporter demo --backend real``). See docs/lab.md.
"""

from exporter.lab.netlab.world import RealWorld

__all__ = ["RealWorld"]
