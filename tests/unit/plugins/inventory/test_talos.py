"""The talosops.pki.talos inventory plugin without a cluster: file names, groups and variables, cache, errors."""

import os
from typing import NamedTuple

import pytest
from ansible.errors import AnsibleParserError
from ansible.inventory.data import InventoryData
from ansible.parsing.dataloader import DataLoader
from ansible.plugins.inventory import get_cache_plugin
from ansible.template import trust_as_template

from ansible_collections.talosops.pki.plugins.inventory import talos
from ansible_collections.talosops.pki.plugins.module_utils._errors import NodeUnreachableError

TALOSCONFIG = "/home/ops/.talos/config"


class Context(NamedTuple):
    name: str
    nodes: tuple


def member(name, machine_type, *addresses):
    return {"id": name, "hostname": name, "addresses": list(addresses), "machine_type": machine_type,
            "operating_system": "Talos (v1.13.4)"}


FULL_VIEW = [member("cp-1", "controlplane", "10.5.0.10", "10.5.0.2"), member("cp-2", "controlplane", "10.5.0.10", "10.5.0.3"),
             member("cp-3", "init", "10.5.0.4"), member("w-1", "worker", "10.5.0.5"), member("w-2", "worker", "10.5.0.6")]


class FakeCluster:
    """What Target and TalosClient give the plugin: a talosconfig context and member lists, with a call log."""

    def __init__(self, views, endpoints=("10.5.0.2", "10.5.0.3", "10.5.0.4"), nodes=()):
        self.views = views
        self.endpoints = tuple(endpoints)
        self.nodes = tuple(nodes)
        self.calls = []
        self.failure = None

    def target(self, params):
        self.params = params
        cluster = self

        class Target:
            talosconfig_path = params["talosconfig"] or TALOSCONFIG
            context = Context(params["context"] or "prod", cluster.nodes)
            endpoints = tuple(params["endpoints"] or cluster.endpoints)

            @staticmethod
            def client():
                return cluster

        return Target()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc_info):
        return None

    async def members(self, node=None):
        self.calls.append(node)
        if self.failure is not None:
            raise self.failure
        return [dict(m, addresses=list(m["addresses"])) for m in self.views[node]]


DEFAULTS = {
    "plugin": "talosops.pki.talos", "talosconfig": None, "context": None, "endpoints": None, "server_ca": None,
    "call_timeout": 30.0, "retry_deadline": 10.0, "vips": [], "addresses": {}, "discovery_nodes": None, "rotation_dir": None,
    "compose": {}, "groups": {}, "keyed_groups": [], "strict": False, "leading_separator": True, "use_extra_vars": False,
    "cache": False, "cache_plugin": "jsonfile", "cache_connection": None, "cache_timeout": 3600, "cache_prefix": "talos_",
}


class Run:
    def __init__(self, plugin, inventory, warnings):
        self.plugin = plugin
        self.inventory = inventory
        self.warnings = warnings

    def hosts(self, group):
        return [host.name for host in self.inventory.groups[group].get_hosts()]

    def host_vars(self, name):
        return self.inventory.get_host(name).get_vars()

    @property
    def all_vars(self):
        return self.inventory.groups["all"].get_vars()


@pytest.fixture(name="parse")
def fixture_parse(monkeypatch, tmp_path):
    """parse(cluster, flush=False, **options) runs the plugin as InventoryManager does, cache write included."""
    path = str(tmp_path / "prod.talos.yml")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("plugin: talosops.pki.talos\n")

    def parse(fake, flush=False, **options):
        values = dict(DEFAULTS, **options)
        plugin = talos.InventoryModule()
        warnings = []
        monkeypatch.setattr(plugin, "get_option", values.__getitem__)
        monkeypatch.setattr(plugin.display, "warning", warnings.append)

        def read_config_data(_path):
            if values["cache"]:
                plugin._cache = get_cache_plugin(values["cache_plugin"], _uri=values["cache_connection"],
                                                 _timeout=values["cache_timeout"], _prefix=values["cache_prefix"])
        monkeypatch.setattr(plugin, "_read_config_data", read_config_data)
        monkeypatch.setattr(talos, "Target", fake.target)
        inventory = InventoryData()
        # InventoryManager passes cache=False for --flush-cache.
        plugin.parse(inventory, DataLoader(), path, cache=not flush)
        if values["cache"]:
            plugin.update_cache_if_changed()
        return Run(plugin, inventory, warnings)

    return parse


def test_verify_file_takes_only_talos_yml_and_yaml(tmp_path):
    plugin = talos.InventoryModule()
    for name, expected in (("talos.yml", True), ("prod.talos.yaml", True), ("inventory.yml", False),
                           ("talos.yml.bak", False), ("aws_ec2.yml", False)):
        path = tmp_path / name
        path.write_text("plugin: talosops.pki.talos\n")
        assert plugin.verify_file(str(path)) is expected, name
    assert plugin.verify_file(str(tmp_path / "missing.talos.yml")) is False


def test_groups_host_vars_and_the_variables_the_rotation_role_reads(parse):
    run = parse(FakeCluster({None: FULL_VIEW}))
    assert run.hosts("controlplane") == ["cp-3", "cp-1", "cp-2"]  # init first
    assert run.hosts("worker") == ["w-1", "w-2"]
    # 10.5.0.10 is listed by two members: a shared VIP, never a node address.
    assert {name: run.host_vars(name)["talos_node_address"] for name in ("cp-1", "cp-2", "cp-3", "w-1", "w-2")} == {
        "cp-1": "10.5.0.2", "cp-2": "10.5.0.3", "cp-3": "10.5.0.4", "w-1": "10.5.0.5", "w-2": "10.5.0.6"}
    assert run.host_vars("cp-1")["talos_member_addresses"] == ["10.5.0.10", "10.5.0.2"]
    assert run.host_vars("cp-3")["talos_machine_type"] == "init"
    assert run.all_vars["talos_endpoints"] == ["10.5.0.4", "10.5.0.2", "10.5.0.3"]
    assert run.all_vars["talos_context"] == "prod"
    # Found through $TALOSCONFIG or the default: left for the role to find again at run time.
    assert run.all_vars["talos_talosconfig"] is None
    assert run.all_vars["ansible_connection"] == "local"
    assert run.all_vars["ansible_python_interpreter"] == "{{ ansible_playbook_python }}"
    assert run.warnings == []


def test_explicit_talosconfig_context_and_endpoints_are_passed_on(parse):
    fake = FakeCluster({None: FULL_VIEW})
    run = parse(fake, talosconfig="/srv/talosconfig", context="staging", endpoints=["10.5.0.3"])
    assert run.all_vars["talos_talosconfig"] == "/srv/talosconfig"
    assert run.all_vars["talos_context"] == "staging"
    assert run.all_vars["talos_endpoints"] == ["10.5.0.3"]


def test_an_empty_context_means_the_current_one(parse):
    # TALOSOPS_CONTEXT is empty when the AWX credential names no context.
    fake = FakeCluster({None: FULL_VIEW})
    parse(fake, context="")
    assert fake.params["context"] is None


def test_compose_groups_and_keyed_groups_apply(parse):
    run = parse(FakeCluster({None: FULL_VIEW}),
                # Options read from the inventory file are trusted templates; these stand in for them.
                compose={"rotate_ca_dir": trust_as_template("'/srv/rotation/' ~ talos_context")},
                groups={"first_cp": trust_as_template("inventory_hostname == 'cp-1'")},
                keyed_groups=[{"key": trust_as_template("talos_machine_type"), "prefix": "type"}], strict=True)
    assert run.host_vars("w-2")["rotate_ca_dir"] == "/srv/rotation/prod"
    assert run.hosts("first_cp") == ["cp-1"]
    assert run.hosts("type_init") == ["cp-3"]
    assert sorted(run.hosts("type_worker")) == ["w-1", "w-2"]


def test_kubernetes_discovery_merges_a_workers_view(parse):
    views = {None: FULL_VIEW[:3], "10.5.0.5": FULL_VIEW[3:]}
    fake = FakeCluster(views, nodes=("10.5.0.2", "10.5.0.5"))
    run = parse(fake)
    assert fake.calls == [None, "10.5.0.5"]
    assert run.hosts("worker") == ["w-1", "w-2"]
    # discovery_nodes overrides the context's nodes; an empty list asks nobody and says why workers may be missing.
    fake = FakeCluster(views, nodes=("10.5.0.5",))
    run = parse(fake, discovery_nodes=[])
    assert fake.calls == [None]
    assert run.hosts("worker") == []
    assert any("siderolabs/talos#10145" in warning for warning in run.warnings)


def test_cache_serves_the_second_run_without_rewriting_and_flush_refreshes(parse, tmp_path):
    cache_dir = str(tmp_path / "cache")
    options = {"cache": True, "cache_connection": cache_dir}
    fake = FakeCluster({None: FULL_VIEW})
    first = parse(fake, **options)
    assert fake.calls == [None]
    [cache_file] = [os.path.join(cache_dir, name) for name in os.listdir(cache_dir)]
    written = os.stat(cache_file).st_mtime_ns

    fake.failure = NodeUnreachableError("endpoint(s) 10.5.0.2:50000: no answer", node="10.5.0.2")
    second = parse(fake, **options)
    assert fake.calls == [None]  # served from the cache: the cluster was not asked
    assert second.hosts("worker") == first.hosts("worker")
    assert os.stat(cache_file).st_mtime_ns == written  # a hit is not written back: its lifetime is not extended

    # --flush-cache (cache=False): the cluster is asked again, and a failure is an error, not stale data.
    with pytest.raises(AnsibleParserError, match="no answer"):
        parse(fake, flush=True, **options)
    fake.failure = None
    fake.views = {None: FULL_VIEW[:4]}
    refreshed = parse(fake, flush=True, **options)
    assert refreshed.hosts("worker") == ["w-1"]
    assert parse(fake, **options).hosts("worker") == ["w-1"]  # the refreshed result was cached
    assert fake.calls == [None, None, None]


def test_a_cached_result_from_another_source_is_not_used(parse, tmp_path):
    options = {"cache": True, "cache_connection": str(tmp_path / "cache")}
    fake = FakeCluster({None: FULL_VIEW})
    parse(fake, **options)
    parse(fake, context="other", **options)
    parse(fake, endpoints=["10.5.0.4"], **options)
    assert fake.calls == [None, None, None]


def test_without_the_cache_option_nothing_is_cached(parse, tmp_path):
    fake = FakeCluster({None: FULL_VIEW})
    parse(fake, cache_connection=str(tmp_path / "cache"))
    parse(fake, cache_connection=str(tmp_path / "cache"))
    assert fake.calls == [None, None]
    assert not os.path.exists(tmp_path / "cache")


def test_errors_name_the_inventory_file_and_say_what_to_do(parse):
    fake = FakeCluster({None: FULL_VIEW})
    with pytest.raises(AnsibleParserError, match=r"prod\.talos\.yml: endpoints lists 10\.5\.0\.10, which vips declares"):
        parse(fake, endpoints=["10.5.0.10"], vips=["10.5.0.10"])
    assert fake.calls == []  # refused before asking the cluster
    with pytest.raises(AnsibleParserError, match=r"cluster member cp-3 lists only virtual IPs.*Pin its address"):
        parse(fake, vips=["10.5.0.4"])
