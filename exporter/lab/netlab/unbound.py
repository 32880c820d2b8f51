"""Unbound as a region's recursive resolver, iterating from the lab's parent server (its only root hint).

Apart from the addresses, the root hint and a work directory, Unbound runs with its defaults, which is the
point: its infrastructure cache remembers unreachable nameservers, it answers SERVFAIL when none of a
zone's servers answers, and ``serve-expired`` is off, so cached answers vanish when their TTL runs out.
No trust anchor is configured, so nothing is validated (the lab's zones are unsigned).
"""

from __future__ import annotations

from pathlib import Path

from exporter.lab.netlab import daemons, plan
from exporter.lab.netlab.daemons import Daemon
from exporter.lab.netlab.netns import Namespaces, run
from exporter.lab.netlab.zonefiles import PARENT_NAME


def config_text(directory: Path, address: str) -> str:
    return "\n".join([
        "server:",
        f'    directory: "{directory}"',
        '    chroot: ""',
        '    username: ""',
        '    pidfile: ""',
        "    use-syslog: no",
        '    logfile: ""',
        "    verbosity: 1",
        "    num-threads: 1",
        f"    interface: {address}",
        "    port: 53",
        f"    outgoing-interface: {address}",
        f"    access-control: {plan.LAB_NET} allow",
        "    do-ip6: no",
        f'    root-hints: "{directory / "root.hints"}"',
        "remote-control:",
        "    control-enable: yes",
        f'    control-interface: "{directory / "unbound.ctl"}"',
        "",
    ])


def root_hints() -> str:
    return f". 3600000 IN NS {PARENT_NAME}.\n{PARENT_NAME}. 3600000 IN A {plan.PARENT}\n"


class UnboundResolver:
    def __init__(self, name: str, address: str, netns: Namespaces, ns: str, directory: Path) -> None:
        self.name = name
        self.address = address
        self.directory = directory
        self.serve_expired = 0.0
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "root.hints").write_text(root_hints())
        self.config = directory / "unbound.conf"
        self.config.write_text(config_text(directory, address))
        self.daemon = Daemon(f"unbound {name}", netns, ns, [daemons.binary("unbound"), "-d", "-p",
                                                            "-c", str(self.config)], directory / "unbound.log")

    def start(self) -> None:
        self.daemon.start()

    def control(self, *args: str) -> str:
        return run(daemons.binary("unbound-control"), "-c", str(self.config), *args).stdout

    def flush(self) -> None:
        """Forget everything: answers, delegations and the infrastructure cache (``unbound-control reload``)."""
        self.control("reload")

    def set_serve_expired(self, seconds: float) -> None:
        """Serve answers up to ``seconds`` past their TTL while the zone's servers fail (0: Unbound's default, off)."""
        self.control("set_option", "serve-expired:", "yes" if seconds > 0 else "no")
        if seconds > 0:
            self.control("set_option", "serve-expired-ttl:", str(max(1, round(seconds))))
        self.serve_expired = seconds

    def stop(self) -> None:
        self.daemon.stop()
