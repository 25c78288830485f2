"""The new CA's lifetime: never shorter than the client certificates it signs, never past the dates a certificate carries
(issue 13, item 4), refused before anything is written."""

import os

import pytest
import yaml

from ansible_collections.talosops.pki.plugins.module_utils import _pki
from ansible_collections.talosops.pki.plugins.module_utils._backends import ca_generate
from ansible_collections.talosops.pki.plugins.module_utils._errors import ConfigError

from test_ca_generate import params, talosconfig_options  # pylint: disable=import-error

ROLE = os.path.join(os.path.dirname(__file__), "..", "..", "..", "..", "..", "roles", "rotate_ca")


@pytest.fixture(name="old_ca", scope="module")
def fixture_old_ca():
    return _pki.generate_ca("talos")


@pytest.mark.parametrize("kind, hours, expected", [
    ("talos", 1, "validity_hours of the new talos CA is 1, shorter than the 8760 hours of the client certificates it signs "
                 "(the admin talosconfig)"),
    ("kubernetes", 100, "validity_hours of the new kubernetes CA is 100, shorter than the 8760 hours of the client certificates "
                        "it signs (the admin kubeconfig Talos issues)"),
    ("talos", 0, "validity_hours must be a positive number of hours"),
    ("talos", -5, "validity_hours must be a positive number of hours"),
    ("talos", 999999999, "validity_hours of the new talos CA is 999999999, beyond the 876000 hours (100 years)"),
    ("kubernetes", 876001, "beyond the 876000 hours (100 years)"),
])
def test_a_lifetime_out_of_bounds_is_refused_before_anything_is_written(tmp_path, old_ca, kind, hours, expected):
    with pytest.raises(ConfigError) as raised:
        ca_generate.run(params(tmp_path / kind, old_ca, kind=kind, validity_hours=hours))
    assert expected in str(raised.value)
    assert "give validity_hours between 8760 (the client certificates' lifetime) and 876000 (100 years)" in str(raised.value)
    assert "date value out of range" not in str(raised.value)
    assert not os.path.exists(tmp_path / kind)


def test_the_bound_follows_the_talosconfig_the_ca_signs(tmp_path, old_ca):
    options = talosconfig_options(tmp_path / "talosconfig", validity_hours=24)
    result = ca_generate.run(params(tmp_path / "talos", old_ca, validity_hours=48, talosconfig=options))
    assert result["changed"]
    assert result["warnings"] == ["the new talos CA is valid for 48 hours, less than a year: the cluster needs another CA "
                                  "rotation before it expires (Talos uses 87600 hours, ten years)."]
    with pytest.raises(ConfigError, match="is 12, shorter than the 24 hours"):
        ca_generate.run(params(tmp_path / "other", old_ca, validity_hours=12, talosconfig=options))


@pytest.mark.parametrize("hours", [8760, 87600, 876000])
def test_a_lifetime_within_bounds_is_used_without_warning(tmp_path, old_ca, hours):
    result = ca_generate.run(params(tmp_path / "kubernetes", old_ca, kind="kubernetes", validity_hours=hours))
    assert "warnings" not in result
    not_before, not_after = (_pki.load_certificate(open(result["ca_cert_path"], "rb").read()).not_valid_before_utc,
                             _pki.load_certificate(open(result["ca_cert_path"], "rb").read()).not_valid_after_utc)
    assert (not_after - not_before).total_seconds() == hours * 3600


def test_no_certificate_is_issued_past_a_hundred_years():
    with pytest.raises(_pki.PKIError, match="more than the 876000 hours"):
        _pki.generate_ca("talos", validity_hours=10 ** 9)
    with pytest.raises(_pki.PKIError, match="more than the 876000 hours"):
        _pki.issue_client_certificate(_pki.generate_ca("talos"), validity_hours=876001)


def test_the_role_checks_the_bounds_the_module_enforces():
    with open(os.path.join(ROLE, "vars", "main.yml"), encoding="utf-8") as handle:
        bounds = yaml.safe_load(handle)["_rotate_ca_validity_hours_bounds"]
    assert bounds == [_pki.CLIENT_VALIDITY_HOURS, _pki.MAX_VALIDITY_HOURS]
    assert bounds[0] == ca_generate.KUBECONFIG_CLIENT_VALIDITY_HOURS
