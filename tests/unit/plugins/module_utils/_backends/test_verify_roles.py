"""talos_verify prove_roles: a node must give a certificate exactly its roles, judged with a fake client (no simulator)."""

import asyncio

import pytest

from ansible_collections.talosops.pki.plugins.module_utils import _pki
from ansible_collections.talosops.pki.plugins.module_utils._backends import verify
from ansible_collections.talosops.pki.plugins.module_utils._errors import PermissionDeniedError, TalosAPIError


class FakeNode:
    """Answers Version and ApplyConfiguration per a rule table {call: set of roles allowed} (None: any other error)."""

    def __init__(self, roles, rules):
        self.roles = set(roles)
        self.rules = rules
        self.applied = []

    def _check(self, call):
        allowed = self.rules[call]
        if allowed is None:
            raise TalosAPIError("%s: invalid config" % call)
        if not self.roles & allowed:
            raise PermissionDeniedError("%s denied" % call)

    async def version(self, node=None):
        self._check("version")
        return {"tag": "v1.13.0"}

    async def machine_config(self, node=None):
        self._check("apply")
        return b"version: v1alpha1\n"

    async def apply_configuration(self, data, node=None, dry_run=False, **_options):
        assert dry_run, "a role proof must never apply for real"
        self._check("apply")
        self.applied.append(data)
        return {"mode": "no_reboot", "mode_details": "Dry run summary:"}


TALOS_RULES = {"version": {"os:admin", "os:operator", "os:reader"}, "apply": {"os:admin"}}


@pytest.fixture(name="ca", scope="module")
def fixture_ca():
    return _pki.generate_ca("talos")


def prove(ca, roles, rules=None):
    crt = _pki.issue_client_certificate(ca, roles=roles).crt
    node = FakeNode(roles, rules or TALOS_RULES)
    return asyncio.run(verify._prove_roles(node, "10.5.0.2", crt)), node  # pylint: disable=protected-access


@pytest.mark.parametrize("roles, version, apply", [
    (["os:admin"], "allowed", "allowed"),
    (["os:operator"], "allowed", "denied"),
    (["os:reader"], "allowed", "denied"),
    (["os:etcd:backup"], "denied", "denied"),
    (["os:reader", "os:etcd:backup"], "allowed", "denied"),
])
def test_a_node_that_follows_talos_rules_proves_the_roles(ca, roles, version, apply):
    proof, node = prove(ca, roles)
    assert proof["ok"] and proof["roles"] == sorted(roles)
    assert (proof["version"], proof["apply"]) == (version, apply)
    assert node.applied == ([b"version: v1alpha1\n"] if "os:admin" in roles else [])


@pytest.mark.parametrize("roles, rules, wrong", [
    (["os:reader"], {"version": {"os:reader"}, "apply": {"os:admin", "os:reader"}}, "apply allowed, expected denied"),
    (["os:etcd:backup"], {"version": {"os:etcd:backup"}, "apply": {"os:admin"}}, "version allowed, expected denied"),
    (["os:operator"], {"version": {"os:admin"}, "apply": {"os:admin"}}, "version denied, expected allowed"),
    (["os:reader"], {"version": {"os:reader"}, "apply": None}, "apply not denied (TalosAPIError)"),
])
def test_a_node_that_gives_more_or_less_is_caught(ca, roles, rules, wrong):
    proof, _node = prove(ca, roles, rules)
    assert not proof["ok"] and wrong in proof["error"]


def test_prove_roles_needs_expect_reachable():
    params = {"prove_roles": True, "expect": "refused", "concurrency": 1, "deadline": 1.0, "retry_interval": 0.1}
    result = verify.run(params)
    assert result["failed"] and "expect=reachable" in result["msg"]
