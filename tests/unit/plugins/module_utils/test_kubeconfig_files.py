"""Kubeconfig files: found as kubectl finds them, client-certificate credentials read, this cluster's entries merged."""

import base64
import os

import pytest

from ansible_collections.talosops.pki.plugins.module_utils import _pki
from ansible_collections.talosops.pki.plugins.module_utils._errors import ConfigError
from ansible_collections.talosops.pki.plugins.module_utils._kubeconfig import Kubeconfig, describe, find_kubeconfig


def b64(data):
    return base64.b64encode(data).decode()


@pytest.fixture(name="ca", scope="module")
def fixture_ca():
    return _pki.generate_ca("kubernetes")


@pytest.fixture(name="client", scope="module")
def fixture_client(ca):
    return _pki.issue_client_certificate(ca, roles=["system:masters"])


def talos_kubeconfig(ca, client, cluster="prod", server="https://10.5.0.2:6443"):
    template = ("apiVersion: v1\nkind: Config\nclusters:\n- name: %s\n  cluster:\n    server: %s\n    certificate-authority-data: %s\n"
                "users:\n- name: admin@%s\n  user:\n    client-certificate-data: %s\n    client-key-data: %s\n"
                "contexts:\n- name: admin@%s\n  context:\n    cluster: %s\n    namespace: default\n    user: admin@%s\n"
                "current-context: admin@%s\n")
    return template % (cluster, server, b64(ca.crt), cluster, b64(client.crt), b64(client.key), cluster, cluster, cluster, cluster)


@pytest.mark.parametrize("explicit,environ,expected", [
    ("/x/kc", {"KUBECONFIG": "/y/kc"}, "/x/kc"),
    (None, {"KUBECONFIG": os.pathsep.join(["/y/first", "/y/second"]), "HOME": "/h"}, "/y/first"),
    (None, {"KUBECONFIG": "", "HOME": "/h"}, "/h/.kube/config"),
])
def test_found_as_kubectl_finds_it(explicit, environ, expected):
    assert find_kubeconfig(explicit, environ) == expected


def test_credentials_from_data_fields(ca, client):
    credentials = Kubeconfig.parse(talos_kubeconfig(ca, client)).credentials()
    assert (credentials.context, credentials.cluster, credentials.user) == ("admin@prod", "prod", "admin@prod")
    assert credentials.server == "https://10.5.0.2:6443"
    assert (credentials.ca, credentials.crt, credentials.key) == (ca.crt, client.crt, client.key)
    assert "PRIVATE" not in repr(credentials) and "key=<redacted>" in repr(credentials)


def test_credentials_from_files_relative_to_the_kubeconfig(tmp_path, ca, client):
    (tmp_path / "pki").mkdir()
    for name, data in (("ca.crt", ca.crt), ("admin.crt", client.crt), ("admin.key", client.key)):
        (tmp_path / "pki" / name).write_bytes(data)
    (tmp_path / "config").write_text(
        "clusters: [{name: k, cluster: {server: 'https://h:6443', certificate-authority: pki/ca.crt}}]\n"
        "users: [{name: u, user: {client-certificate: pki/admin.crt, client-key: %s}}]\n"
        "contexts: [{name: c, context: {cluster: k, user: u}}]\ncurrent-context: c\n" % (tmp_path / "pki" / "admin.key"))
    credentials = Kubeconfig.load(str(tmp_path / "config")).credentials()
    assert (credentials.ca, credentials.crt, credentials.key) == (ca.crt, client.crt, client.key)


@pytest.mark.parametrize("cluster,user,match", [
    ("{server: 'http://h:8080'}", "{token: t}", "no https server URL"),
    ("{server: 'https://h:6443', insecure-skip-tls-verify: true}", "{token: t}", "insecure-skip-tls-verify"),
    ("{server: 'https://h:6443'}", "{token: t}", "token or a plugin"),
    ("{server: 'https://h:6443'}", "{client-certificate-data: '!!'}", "not base64"),
])
def test_unusable_credentials_say_why(cluster, user, match):
    text = "clusters: [{name: k, cluster: %s}]\nusers: [{name: u, user: %s}]\ncontexts: [{name: c, context: {cluster: k, user: u}}]\n" % (cluster, user)
    with pytest.raises(ConfigError, match=match):
        Kubeconfig.parse(text).credentials("c")


def test_unknown_context_lists_the_known_ones(ca, client):
    with pytest.raises(ConfigError, match="has no context other .*admin@prod"):
        Kubeconfig.parse(talos_kubeconfig(ca, client)).credentials("other")


def test_broken_yaml_does_not_quote_the_file(ca, client):
    text = talos_kubeconfig(ca, client) + "users: [\n"
    with pytest.raises(ConfigError) as error:
        Kubeconfig.parse(text, "kc")
    assert b64(client.key)[:20] not in str(error.value)


def test_merge_replaces_this_clusters_entries_in_place_and_keeps_the_rest(ca, client):
    other_ca = _pki.generate_ca("kubernetes")
    other = _pki.issue_client_certificate(other_ca, roles=["system:masters"])
    mine = Kubeconfig.parse(talos_kubeconfig(other_ca, other, cluster="staging", server="https://10.9.0.2:6443"))
    mine.merge(Kubeconfig.parse(talos_kubeconfig(ca, other, cluster="prod")))
    new_client = _pki.issue_client_certificate(ca, roles=["system:masters"])
    mine.merge(Kubeconfig.parse(talos_kubeconfig(ca, new_client, cluster="prod")))
    assert mine.names("clusters") == ["staging", "prod"] and mine.names("contexts") == ["admin@staging", "admin@prod"]
    assert mine.current_context == "admin@staging"  # the user's choice stays
    assert mine.credentials("admin@prod").crt == new_client.crt
    assert mine.credentials("admin@staging").crt == other.crt
    reread = Kubeconfig.parse(mine.to_bytes())
    assert reread.credentials("admin@prod").key == new_client.key


def test_merge_into_an_empty_file_sets_the_current_context(ca, client):
    merged = Kubeconfig.empty()
    merged.merge(Kubeconfig.parse(talos_kubeconfig(ca, client)))
    assert merged.current_context == "admin@prod" and merged.credentials().server == "https://10.5.0.2:6443"


def test_renamed_names_every_entry_alike(ca, client):
    renamed = Kubeconfig.parse(talos_kubeconfig(ca, client)).renamed("prod-eu")
    assert [renamed.names(section) for section in ("clusters", "users", "contexts")] == [["prod-eu"]] * 3
    assert renamed.current_context == "prod-eu" and renamed.credentials().crt == client.crt


def test_save_is_private_and_creates_the_folder(tmp_path, ca, client):
    path = tmp_path / "new" / "config"
    Kubeconfig.parse(talos_kubeconfig(ca, client)).save(str(path))
    assert os.stat(path).st_mode & 0o777 == 0o600 and os.stat(path.parent).st_mode & 0o777 == 0o700


def test_describe_has_no_key_material(ca, client):
    facts = describe(Kubeconfig.parse(talos_kubeconfig(ca, client)).credentials())
    assert facts["ca_fingerprints"] == [_pki.fingerprint(ca.crt)]
    assert facts["client_certificate"]["organization"] == ["system:masters"]
    assert "PRIVATE" not in repr(facts) and b64(client.key)[:20] not in repr(facts)
