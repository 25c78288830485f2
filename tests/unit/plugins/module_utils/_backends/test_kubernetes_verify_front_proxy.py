"""talos_kubernetes_verify's front-proxy probes, without any API server: which CAs are probed, with what expectation,
and that each probe is a short-lived CN=front-proxy-client certificate from that CA (what kube-apiserver's
--requestheader-allowed-names admits)."""

import os
import shutil

import pytest

from ansible_collections.talosops.pki.plugins.module_utils import _pki, _rotation_store
from ansible_collections.talosops.pki.plugins.module_utils._backends import kubernetes_verify
from ansible_collections.talosops.pki.plugins.module_utils._errors import RotationStateError
from ansible_collections.talosops.pki.plugins.module_utils._talosconfig import SecretsBundle

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))))
REFERENCE_SECRETS = os.path.join(REPO_ROOT, "..", "shared", "talos-reference", "secrets.yaml")


@pytest.fixture(name="rotation")
def fixture_rotation(tmp_path):
    secrets = str(tmp_path / "secrets.yaml")
    shutil.copy(REFERENCE_SECRETS, secrets)
    previous_crt, previous_key = SecretsBundle.load(secrets).get_ca("aggregator")
    new = _pki.generate_ca(_pki.KIND_AGGREGATOR)
    path = str(tmp_path / "aggregator")
    _rotation_store.create(path, "aggregator", previous_crt, new)
    return {"path": path, "secrets": secrets, "previous": _pki.CertAndKey(previous_crt, previous_key), "new": new}


def options(rotation, **overrides):
    values = {"rotation_dir": rotation["path"], "new_ca": "accepted", "previous_ca": "accepted", "secrets_file": rotation["secrets"]}
    values.update(overrides)
    return values


def test_both_cas_are_probed_with_front_proxy_client_certificates(rotation):
    probes = kubernetes_verify._front_proxy_probes(options(rotation, previous_ca="refused"))  # pylint: disable=protected-access
    assert {label: (fingerprint, expect) for label, (fingerprint, expect, _probe) in probes.items()} == {
        "new": (_pki.fingerprint(rotation["new"].crt), "accepted"),
        "previous": (_pki.fingerprint(rotation["previous"].crt), "refused")}
    for label, (_fingerprint, _expect, probe) in probes.items():
        facts = _pki.describe_certificate(probe.crt)
        assert facts["subject"] == "CN=front-proxy-client"
        assert facts["extended_key_usage"] == ["client_auth"]
        assert _pki.is_issued_by(probe.crt, rotation[label].crt)
        _pki.check_key_pair(probe.crt, probe.key)


def test_the_previous_ca_is_not_probed_without_its_key(rotation):
    probes = kubernetes_verify._front_proxy_probes(options(rotation, secrets_file=None))  # pylint: disable=protected-access
    assert list(probes) == ["new"]
    # Once the secrets file holds the new CA (the end of a rotation), it no longer has the previous key either.
    bundle = SecretsBundle.load(rotation["secrets"])
    bundle.set_ca("aggregator", rotation["new"].crt, rotation["new"].key)
    bundle.save(rotation["secrets"], backup=False)
    assert list(kubernetes_verify._front_proxy_probes(options(rotation))) == ["new"]  # pylint: disable=protected-access


def test_a_missing_rotation_is_a_clear_error(tmp_path):
    with pytest.raises(RotationStateError, match="no aggregator CA rotation in .*kind=aggregator"):
        kubernetes_verify._front_proxy_probes({"rotation_dir": str(tmp_path / "none"), "new_ca": "accepted",  # pylint: disable=protected-access
                                               "previous_ca": "accepted", "secrets_file": None})
