# -*- coding: utf-8 -*-
# Copyright (c) talosops.pki contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The fast composer (libyaml) sees every text exactly as ruamel.yaml does: the same nodes, values, styles and marks.

Every edit splices text at node marks, so one character of difference would corrupt a machine config. These tests compare
the two composers node by node on the real configs Talos generated and on the shapes users write by hand, and check that
a text libyaml refuses is left to ruamel.yaml (which reads it, or words the error).
"""

from __future__ import annotations

import pytest
from ruamel.yaml import YAML

from ansible_collections.talosops.pki.plugins.module_utils import _machineconfig
from ansible_collections.talosops.pki.plugins.module_utils._errors import ConfigError
from ansible_collections.talosops.pki.plugins.module_utils import _pki
from ansible_collections.talosops.pki.plugins.module_utils._machineconfig import KIND_TALOS, MachineConfig, YAMLText

from talos_reference import reference_path  # pylint: disable=import-error

REFERENCE_FILES = [
    "machineconfig-v1.7/base-controlplane.yaml", "machineconfig-v1.7/base-worker.yaml",
    "machineconfig-v1.13/base-controlplane.yaml", "machineconfig-v1.13/base-worker.yaml",
    "machineconfig-v1.15/base-controlplane.yaml", "machineconfig-v1.15/base-worker.yaml",
    "machineconfig-commented/controlplane.yaml", "machineconfig-commented/worker.yaml",
    "secrets.yaml", "secrets-stability.yaml",
]

HAND_WRITTEN = {
    "crlf": "machine:\r\n  type: worker\r\n  ca:\r\n    crt: abc\r\n    key: \"\"\r\n",
    "non-ascii": "machine:\n  type: worker # é 😀\n  nodeLabels:\n    owner: \"Zoë 😀\"\n  ca:\n    crt: x\n",
    "comments between entries": "machine:\n  # the CA\n  ca:\n    crt: x  # trailing\n\n    # about key\n    key: y\n\n# end\n",
    "block scalars": ("machine:\n  files:\n    - content: |\n        line one\n        line two\n\n      path: /a\n"
                      "    - content: >-\n        folded\n      path: /b\n"),
    "flow collections": "machine:\n  certSANs: [a, 'b', \"c\"]\n  kubelet: {image: x, extraArgs: {a: b}}\n",
    "indentless sequence": "machine:\n  acceptedCAs:\n  - crt: a\n  - crt: b\ncluster:\n  id: x\n",
    "anchors and aliases": "base: &b\n  crt: x\nmachine:\n  ca: *b\n",
    "empty values": "machine:\n  ca:\n  token: ~\n  x: ''\n  y:\n",
    "several documents": "version: v1alpha1\nmachine:\n  type: worker\n---\napiVersion: v1alpha1\nkind: TrustedRootsConfig\nname: x\n...\n",
    "quoted keys and tags": "'machine':\n  \"ca\": !!map\n    crt: !!str 123\n  on: yes\n",
    "no final newline": "machine:\n  ca:\n    crt: x",
    "byte order mark": "\ufeffmachine:\n  ca:\n    crt: x\n",
    "multi-line scalars": "machine:\n  a: one\n    two\n  b: \"three\n    four\"\n  c: 'x'\n",
    "explicit keys": "machine:\n  ? ca\n  : crt: x\n",
    "comment after the last nested entry": "machine:\n  ca:\n    crt: x\n    # old key\n  # old ca\ncluster: {}\n",
    "trailing spaces": "machine:  \n  ca: \n    crt: x  \n",
    "document markers": "---\nmachine:\n  ca:\n    crt: x\n...\n---\nkind: X\n",
    "null spelled out": "machine:\n  ca: null\n  b: ~\n",
}


def _tree(node):
    """Everything an edit relies on, node by node (tags left out: libyaml resolves plain scalars as YAML 1.1)."""
    common = (node.id, node.start_mark.index, node.start_mark.line, node.start_mark.column, node.end_mark.index,
              node.end_mark.line, node.end_mark.column)
    if node.id == "scalar":
        return common + (node.value, node.style)
    if node.id == "mapping":
        return common + (bool(node.flow_style), tuple((_tree(key), _tree(value)) for key, value in node.value))
    return common + (bool(node.flow_style), tuple(_tree(item) for item in node.value))


def _ruamel(text):
    return [_tree(document) for document in YAML(typ="rt").compose_all(text)]


def _libyaml(text):
    return [_tree(document) for document in _machineconfig.compose_all(text)]


def test_libyaml_is_in_use():
    """ansible-core's PyYAML wheels carry libyaml: without it the fast path would be silently off."""
    assert _machineconfig._LIBYAML_LOADER is not None  # pylint: disable=protected-access


@pytest.mark.parametrize("relative", REFERENCE_FILES)
def test_same_nodes_as_ruamel_on_the_files_talos_generates(relative):
    with open(reference_path(relative), encoding="utf-8") as handle:
        text = handle.read()
    assert _libyaml(text) == _ruamel(text)


@pytest.mark.parametrize("name", sorted(HAND_WRITTEN))
def test_same_nodes_as_ruamel_on_hand_written_shapes(name):
    assert _libyaml(HAND_WRITTEN[name]) == _ruamel(HAND_WRITTEN[name])


@pytest.mark.parametrize("text", ["machine:\n  ca:\n  token: x\n", "machine:\n  ca:\n    crt: x", "\ufeffmachine: {}\n",
                                  "a: b\n---\n\ufeffc: d\n", "a: b # c\u2028d: e\n", "a: 'b\x85c'\n", "a: \"\u2029\"\n"])
def test_texts_the_composers_mark_differently_are_composed_by_ruamel(text, monkeypatch):
    """An empty plain value, no final line break, a byte order mark (also after `---`), NEL / LS / PS (line breaks to
    libyaml only): ruamel.yaml composes, with its marks, or refuses with its error."""
    try:
        expected = _ruamel(text)
    except Exception:  # pylint: disable=broad-except  # ruamel.yaml refuses it: so must the composer
        expected = None
    calls = []
    real = YAML.compose_all
    monkeypatch.setattr(YAML, "compose_all", lambda self, value: calls.append(value) or real(self, value))
    if expected is None:
        with pytest.raises(Exception):
            _machineconfig.compose_all(text)
    else:
        assert [_tree(document) for document in _machineconfig.compose_all(text)] == expected
    assert calls == [text]


def test_a_tab_before_a_line_break_is_read_with_the_marks_the_edits_need():
    """libyaml takes a tab before a line break, which ruamel.yaml refuses: the marks around it are still right."""
    text = "machine:\n  ca:\t\n    crt: x\n"
    documents = _machineconfig.compose_all(text)
    ca = documents[0].value[0][1].value[0][1]
    assert text[ca.start_mark.index:].startswith("crt: x")
    assert ca.value[0][1].value == "x" and ca.value[0][1].style is None


def test_what_libyaml_refuses_ruamel_decides(monkeypatch):
    """A text libyaml refuses is composed by ruamel.yaml, and its error is ruamel's, with the position."""
    calls = []
    real = YAML.compose_all

    def counting(self, text):
        calls.append(text)
        return real(self, text)

    monkeypatch.setattr(YAML, "compose_all", counting)
    YAMLText("a: 1\n", "ok.yaml")
    assert not calls  # the fast path took it
    with pytest.raises(ConfigError, match=r"bad\.yaml is not valid YAML at line 3, column \d+"):
        YAMLText("machine:\n  type: worker\n   token: x\n", "bad.yaml")
    assert len(calls) == 1


def test_an_edit_that_changes_the_composer_still_compares_like_with_like():
    """An empty `acceptedCAs:` sends the config to ruamel.yaml; the edit fills it, so the edited text goes to libyaml. The
    check that nothing else changed compares both with one composer: `0o666` (an int to YAML 1.2, a str to libyaml's
    YAML 1.1) must not read as a change. Refused with "did not read back as intended" before."""
    with open(reference_path("machineconfig-commented/controlplane.yaml"), encoding="utf-8") as handle:
        text = handle.read()
    assert "permissions: 0o666" in text
    text = text.replace("\n    ca:\n", "\n    acceptedCAs:\n    ca:\n", 1)
    config = MachineConfig.parse(text.encode("utf-8"), "controlplane.yaml")
    assert config._yaml.composer == _machineconfig.COMPOSER_RUAMEL  # pylint: disable=protected-access
    new = _pki.generate_ca("talos")
    old_crt = config.get_ca(KIND_TALOS).issuing_crt
    assert config.set_ca(KIND_TALOS, new.crt, new.key, [old_crt]) is True
    assert config._yaml.composer == _machineconfig.COMPOSER_LIBYAML  # pylint: disable=protected-access
    reread = MachineConfig.parse(config.to_bytes(), "controlplane.yaml").get_ca(KIND_TALOS)
    assert reread.accepted == (old_crt,) or [_pki.fingerprint(crt) for crt in reread.accepted] == [_pki.fingerprint(old_crt)]
