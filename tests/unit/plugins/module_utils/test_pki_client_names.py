"""Client certificates for named users: CN the user, O the roles (Talos) or groups (Kubernetes)."""

import pytest

from ansible_collections.talosops.pki.plugins.module_utils import _pki
from ansible_collections.talosops.pki.plugins.module_utils._errors import PKIError


@pytest.fixture(name="ca", scope="module")
def fixture_ca():
    return _pki.generate_ca("kubernetes")


def test_common_name_and_organizations(ca):
    facts = _pki.describe_certificate(_pki.issue_client_certificate(ca, roles=["dev", "ops"], common_name="alice").crt)
    assert facts["common_name"] == "alice" and facts["organization"] == ["dev", "ops"]
    assert facts["extended_key_usage"] == ["client_auth"] and not facts["is_ca"]


def test_a_named_user_may_have_no_group_but_a_talosconfig_certificate_needs_a_role(ca):
    assert _pki.describe_certificate(_pki.issue_client_certificate(ca, roles=[], common_name="ci").crt)["organization"] == []
    with pytest.raises(PKIError, match="at least one role"):
        _pki.issue_client_certificate(ca, roles=[])
    with pytest.raises(PKIError, match="non-empty string"):
        _pki.issue_client_certificate(ca, roles=["os:reader"], common_name=" ")


def test_without_a_name_it_is_what_talos_issues(ca):
    facts = _pki.describe_certificate(_pki.issue_client_certificate(ca, roles=["os:reader"]).crt)
    assert facts["common_name"] is None and facts["subject"] == "O=os:reader"
