"""What a Talos API CA rotation left on a simulated cluster: each node's CA fields and which credentials it accepts."""

import os

import pytest

from _playbook import node_ca_fields, pem_to_der

from ansible_collections.talosops.pki.plugins.module_utils import _client
from ansible_collections.talosops.pki.plugins.module_utils._errors import ClientNotTrustedError
from ansible_collections.talosops.pki.plugins.module_utils._talosconfig import TalosConfig


def read(path):
    with open(path, "rb") as handle:
        return handle.read()


def credentials(talosconfig_path, server_ca=None):
    context = TalosConfig.load(talosconfig_path).get_context()
    return _client.Credentials(ca=server_ca or context.ca, crt=context.crt, key=context.key)


async def _version_direct(address, creds):
    async with _client.TalosClient([address], creds, retry_deadline=2.0) as client:
        return await client.version()


def assert_rotated(cluster, rotation_dir, old_ca_der):
    new_ca_der = pem_to_der(read(os.path.join(rotation_dir, "talos", "ca.crt")))
    assert new_ca_der != old_ca_der
    for node in cluster.nodes:
        issuing, accepted = node_ca_fields(node)
        assert issuing == new_ca_der, "%s does not issue with the new CA" % node.name
        assert old_ca_der not in accepted, "%s still accepts the old CA" % node.name
    return new_ca_der


def assert_credentials(cluster, talosconfig_path, works, server_ca=None):
    """Each node, directly: the client certificate of talosconfig_path is accepted (or refused)."""
    creds = credentials(talosconfig_path, server_ca)
    for node in cluster.nodes:
        if works:
            assert _client.run(_version_direct(node.address, creds))["tag"]
        else:
            with pytest.raises(ClientNotTrustedError):
                _client.run(_version_direct(node.address, creds))


def old_ca_der_of(cluster):
    return node_ca_fields(cluster.nodes[0])[0]
