"""The embedded descriptor set matches proto/ and decodes Talos wire shapes."""

import os
import subprocess
import sys

import pytest

from ansible_collections.talosops.pki.plugins.module_utils import _talos_api_pb as pb

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))


def test_generated_module_is_up_to_date():
    pytest.importorskip("grpc_tools")
    result = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "gen_proto.py"), "--check"],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_apply_request_field_numbers():
    request_class = pb.message_class("machine.ApplyConfigurationRequest")
    wire = request_class(data=b"x", mode=request_class.NO_REBOOT, dry_run=True).SerializeToString()
    # field 1 (bytes) = "x", field 4 (varint) = 2, field 5 (varint) = 1
    assert wire == b"\x0a\x01x\x20\x02\x28\x01"


def test_watch_request_id_has_explicit_presence():
    watch_class = pb.message_class("cosi.resource.WatchRequest")
    assert watch_class(namespace="runtime", type="Services", id="").HasField("id")
    assert not watch_class(namespace="runtime", type="Services").HasField("id")


def test_os_root_spec_decodes_in_go_struct_order():
    spec_class = pb.message_class("talos.resource.definitions.secrets.OSRootSpec")
    cert = pb.message_class("common.PEMEncodedCertificateAndKey")(crt=b"C", key=b"K")
    # Go writes fields 1, 5, 2, 3, 4: build the bytes by hand in that order.
    accepted = pb.message_class("common.PEMEncodedCertificate")(crt=b"A").SerializeToString()
    issuing = cert.SerializeToString()
    wire = (b"\x0a" + bytes([len(issuing)]) + issuing + b"\x2a" + bytes([len(accepted)]) + accepted + b"\x22\x03tok")
    spec = spec_class.FromString(wire)
    assert spec.issuing_ca.crt == b"C" and spec.accepted_c_as[0].crt == b"A" and spec.token == "tok"


def test_methods_table_names_talos_paths():
    assert pb.METHODS["/machine.MachineService/ApplyConfiguration"][0] == "machine.ApplyConfigurationRequest"
    assert pb.METHODS["/cosi.resource.State/Watch"][2] is True
