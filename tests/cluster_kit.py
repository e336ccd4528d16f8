"""A router and two relay nodes, each in its own network namespace, for tests/test_cluster.py.

    test process (root namespace)          router namespace            node namespaces
    10.77.N.10 ... 10.77.N.25  ---veth---  10.77.N.1:8080  ---veth---  A: 10.99.1.2:3001
                                           (nginx or       ---veth---  B: 10.99.2.2:3001
                                            haproxy)

The test process is every client: its side of the link holds several addresses, so clients
with different source addresses hash to different nodes. The nodes are reachable only from
the router (no routes, no forwarding). The router runs deploy/cluster/{nginx.conf,
haproxy.cfg} with the node addresses and its port changed (see render), in the foreground.
Every process in a namespace can be killed at once, as a machine dies (kill_namespace), and
teardown leaves no process, namespace or link behind.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy" / "cluster"
ROUTERS = ("nginx", "haproxy")

# The placeholders in deploy/cluster/: node addresses and the router's port.
CONFIG_NODES = {"A": "10.0.1.2:3000", "B": "10.0.2.2:3000"}
NODES = {"A": "10.99.1.2", "B": "10.99.2.2"}
NODE_PORT = 3001
ROUTER_PORT = 8080
CLIENTS = 16

_networks = itertools.count(1)


def binary(name: str) -> str | None:
    """The path of ``name`` on PATH, or in the sbin directories not every PATH has."""
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")


def missing_for(router: str, *, network: bool = True) -> list[str]:
    """What this machine lacks to run ``router`` (and, with ``network``, the test network)."""
    missing = []
    if network and os.geteuid() != 0:
        missing.append("root (to create network namespaces)")
    if network and binary("ip") is None:
        missing.append("the ip command (apt-get install iproute2)")
    if binary(router) is None:
        missing.append(f"{router} (apt-get install {router})")
    return missing


def _ipv6() -> bool:
    return os.path.exists("/proc/net/if_inet6")


def _replace(text: str, old: str, new: str) -> str:
    assert old in text, f"{old!r} is no longer in the configuration: update tests/cluster_kit.py"
    return text.replace(old, new)


def render(router: str, nodes: dict[str, str], port: int) -> str:
    """deploy/cluster's configuration for ``router``, with ``nodes`` (letter: host:port)
    instead of its placeholder addresses, listening on ``port`` instead of 80."""
    name = "nginx.conf" if router == "nginx" else "haproxy.cfg"
    text = (DEPLOY / name).read_text()
    for letter, address in nodes.items():
        text = _replace(text, CONFIG_NODES[letter], address)
    if router == "nginx":
        text = _replace(text, "listen 80;", f"listen {port};")
        text = _replace(text, "listen [::]:80;", f"listen [::]:{port};" if _ipv6() else "")
    else:
        # HAProxy raises its open-file limit to what maxconn needs, or refuses to start where
        # it may not (a container's hard limit): a test needs only a few connections.
        text = _replace(text, "maxconn 100000", "maxconn 1000")
        # Health checks ten times as often, so that they have run, and would have marked a
        # node down had they failed, a moment after the start (see wait_for_router).
        text = _replace(text, "inter 2s ", "inter 200ms ")
        text = _replace(text, "bind :80\n", f"bind :{port}\n")
        text = _replace(text, "bind [::]:80 v6only\n",
                        f"bind [::]:{port} v6only\n" if _ipv6() else "\n")
    return text


def router_command(router: str, config: Path, workdir: Path, *, check: bool = False) -> list[str]:
    """The router's command line: in the foreground, everything else under ``workdir``."""
    path = binary(router)
    assert path is not None
    if router == "nginx":
        # -e: the log nginx opens before it reads the configuration; -g: what a packaged
        # nginx.conf leaves to the service (foreground, pid file).
        return [path, *(["-t"] if check else []), "-p", str(workdir), "-c", str(config),
                "-e", "stderr", "-g", f"daemon off; pid {workdir}/nginx.pid;"]
    return [path, "-c" if check else "-db", "-f", str(config)]


def ip(*arguments: str) -> str:
    """Run the ip command; raise with its error text if it fails."""
    command = [binary("ip") or "ip", *arguments]
    done = subprocess.run(command, capture_output=True, text=True, timeout=10)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)}: {done.stderr.strip()}")
    return done.stdout


def _used_prefixes() -> str:
    return ip("-4", "-o", "addr", "show") + ip("-4", "route", "show")


# Run in the router's namespace by Cluster.wait_for_nodes: the standard library only, so it
# starts quickly.
_PROBE = """
import http.client, sys, time
deadline = time.monotonic() + float(sys.argv[1])
for node in sys.argv[2:]:
    prompt = 0
    while prompt < 4:
        try:
            connection = http.client.HTTPConnection(node, timeout=0.2)
            connection.request("GET", "/healthz")
            prompt += connection.getresponse().status == 200
        except OSError:
            prompt = 0
            time.sleep(0.02)
        if time.monotonic() > deadline:
            sys.exit(f"{node} did not answer /healthz promptly")
"""


@dataclass
class Cluster:
    """The namespaces, links and processes of one test. ``build()``, then ``teardown()``."""

    router: str
    workdir: Path
    tag: str = field(default_factory=lambda: f"{os.getpid()}x{next(_networks)}")
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    namespaces: list[str] = field(default_factory=list)
    client_link: str | None = None
    subnet: str = ""

    def namespace(self, role: str) -> str:
        return f"pugfast-{self.tag}-{role}"

    @property
    def router_host(self) -> str:
        return f"{self.subnet}.1"

    @property
    def clients(self) -> list[str]:
        """The test's own source addresses, one per simulated client."""
        return [f"{self.subnet}.{10 + i}" for i in range(CLIENTS)]

    @property
    def base(self) -> str:
        return f"http://{self.router_host}:{ROUTER_PORT}"

    # -- the network ------------------------------------------------------------------------

    def build(self) -> None:
        # The client subnet lives in the root namespace: take the first 10.77.N.0/24 nobody
        # uses (another run of this test, say).
        used = _used_prefixes()
        self.subnet = next(f"10.77.{n}" for n in range(256) if f"10.77.{n}." not in used)
        router, node_a, node_b = (self.namespace(r) for r in ("router", "A", "B"))
        for ns in (router, node_a, node_b):
            ip("netns", "add", ns)
            self.namespaces.append(ns)
            ip("-n", ns, "link", "set", "lo", "up")
        # Interface names are per namespace; only the root namespace's one must be unique.
        self.client_link = f"pfc{self.tag}"[:15]
        ip("link", "add", self.client_link, "type", "veth", "peer", "name", "c0",
            "netns", router)
        for address in self.clients:
            ip("addr", "add", f"{address}/24", "dev", self.client_link)
        ip("link", "set", self.client_link, "up")
        ip("-n", router, "addr", "add", f"{self.router_host}/24", "dev", "c0")
        ip("-n", router, "link", "set", "c0", "up")
        for letter, ns in (("A", node_a), ("B", node_b)):
            inside = NODES[letter]
            outside = inside.rsplit(".", 1)[0] + ".1"
            link = f"to{letter}"
            ip("-n", router, "link", "add", link, "type", "veth", "peer", "name", "eth0",
                "netns", ns)
            ip("-n", router, "addr", "add", f"{outside}/24", "dev", link)
            ip("-n", router, "link", "set", link, "up")
            ip("-n", ns, "addr", "add", f"{inside}/24", "dev", "eth0")
            ip("-n", ns, "link", "set", "eth0", "up")

    # -- processes --------------------------------------------------------------------------

    def _spawn(self, role: str, command: list[str]) -> None:
        # `ip netns exec` enters the namespace and execs the command: the pid is the command's.
        with open(self.workdir / f"{role}.stderr", "wb") as log:
            self.processes[role] = subprocess.Popen(
                [binary("ip") or "ip", "netns", "exec", self.namespace(role), *command], cwd=ROOT,
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
                start_new_session=True,
            )

    def start_nodes(self, event_loop: str) -> None:
        """Node A with two workers, node B with one: both ways of serving are covered."""
        for letter, workers in (("A", "2"), ("B", "1")):
            self._spawn(letter, [
                sys.executable, "-m", "pugfast", "serve", "--node", letter,
                "--host", NODES[letter], "--port", str(NODE_PORT), "--pow-difficulty", "0",
                "--workers", workers, "--event-loop", event_loop,
            ])

    def start_router(self) -> None:
        config = self.workdir / ("nginx.conf" if self.router == "nginx" else "haproxy.cfg")
        nodes = {letter: f"{host}:{NODE_PORT}" for letter, host in NODES.items()}
        config.write_text(render(self.router, nodes, ROUTER_PORT))
        self._spawn("router", router_command(self.router, config, self.workdir))

    def stderr(self, role: str) -> str:
        """What the process in ``role`` (A, B or router) wrote to its standard error."""
        return (self.workdir / f"{role}.stderr").read_text("utf-8", "replace")

    def wait_for_nodes(self, timeout: float = 20.0) -> None:
        """Until both relays answer /healthz promptly, asked from the router's namespace.

        A supervisor listens before its workers have started, and holds connections until
        they have; a router's health check that times out meanwhile marks the node down.
        Four prompt answers in a row have come from every worker (they take turns).
        """
        nodes = [f"{host}:{NODE_PORT}" for host in NODES.values()]
        probe = subprocess.run(
            [binary("ip") or "ip", "netns", "exec", self.namespace("router"), sys.executable,
             "-c", _PROBE, str(timeout), *nodes],
            capture_output=True, text=True, timeout=timeout + 10,
        )
        assert probe.returncode == 0, (
            f"{probe.stderr}\nnode A: {self.stderr('A')}\nnode B: {self.stderr('B')}"
        )

    def wait_for_router(self, timeout: float = 10.0) -> None:
        """Until the router accepts connections (and HAProxy has checked each node twice)."""
        deadline = time.monotonic() + timeout
        while True:
            assert self.processes["router"].poll() is None, self.stderr("router")
            try:
                with socket.create_connection((self.router_host, ROUTER_PORT), timeout=1):
                    break
            except OSError:
                assert time.monotonic() < deadline, "the router did not start"
                time.sleep(0.02)
        if self.router == "haproxy":
            time.sleep(0.5)

    def pids(self, role: str) -> list[int]:
        """Every process in a namespace (what the kernel says, children of children included)."""
        return [int(pid) for pid in ip("netns", "pids", self.namespace(role)).split()]

    def kill_namespace(self, role: str, timeout: float = 5.0) -> None:
        """SIGKILL everything in a namespace, as if its machine lost power, and wait for it.

        The process we started goes last: a worker that outlived its supervisor even briefly
        would close its members cleanly (1001), which a dead machine does not do.
        """
        process = self.processes.get(role)
        deadline = time.monotonic() + timeout
        while pids := self.pids(role):
            if process is not None and process.pid in pids:
                pids.remove(process.pid)
                pids.append(process.pid)
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            assert time.monotonic() < deadline, f"processes left in {role}: {pids}"
            time.sleep(0.02)
        if process is not None:
            process.kill()  # in case it had not entered the namespace yet
            process.wait(timeout)

    def teardown(self) -> None:
        """Kill every process, delete every link and namespace; safe after a partial build."""
        errors = []
        for ns in self.namespaces:
            try:
                self.kill_namespace(ns.rsplit("-", 1)[1])
            except (AssertionError, RuntimeError, subprocess.TimeoutExpired) as exc:
                errors.append(str(exc))
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()
        # The root namespace's end first: deleting a veth deletes its peer at once, while a
        # deleted namespace's links go away a little later.
        link = self.client_link
        if link is not None and os.path.exists(f"/sys/class/net/{link}"):
            try:
                ip("link", "del", link)
            except RuntimeError as exc:
                errors.append(str(exc))
        for ns in self.namespaces:
            try:
                ip("netns", "del", ns)
            except RuntimeError as exc:
                errors.append(str(exc))
        assert not errors, errors
