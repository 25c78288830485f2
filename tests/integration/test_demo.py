"""tools/demo.py (make demo) as a new user meets it: --help documents every option, the printed command runs when
pasted, the output is free of ansible-core's DSA deprecation noise, every node's result line has the same shape, and
nothing is written outside --workdir, which is refused when it holds anything the demo did not make."""

import json
import os
import re
import shlex
import subprocess
import sys

from _playbook import REPO_ROOT

DEMO = os.path.join(REPO_ROOT, "tools", "demo.py")


def demo(*args, timeout=900):
    return subprocess.run([sys.executable, DEMO] + list(args), capture_output=True, text=True, timeout=timeout, check=False,
                          cwd=REPO_ROOT)


def test_help_documents_every_option():
    shown = demo("--help", timeout=120)
    assert shown.returncode == 0, shown.stderr
    for option in ("--controlplanes", "--workers", "--workdir", "--talos-version", "--kubernetes"):
        assert re.search(r"^\s+%s\b.*\S" % option, shown.stdout, re.MULTILINE), option
    assert "never emptied." in shown.stdout and "make demo" in shown.stdout


def test_a_workdir_the_demo_did_not_make_is_refused_untouched(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    refused = demo("--workdir", str(tmp_path), timeout=120)
    assert refused.returncode != 0 and "is not empty and was not made by the demo" in refused.stderr
    assert sorted(os.listdir(tmp_path)) == ["notes.txt"]


def test_the_demo_rotates_both_cas_and_prints_a_command_that_pastes(tmp_path):
    workdir = str(tmp_path / "demo")
    run = demo("--controlplanes", "1", "--workers", "1", "--talos-version", "v1.15.0", "--kubernetes", "--workdir", workdir)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-6000:]
    assert "CryptographyDeprecationWarning" not in output and "will be removed in a future release" not in output

    line = next(line for line in run.stdout.splitlines() if line.startswith("> ") and "ansible-playbook" in line)
    words = shlex.split(line[2:])
    environment = dict(word.split("=", 1) for word in words[:2])
    assert environment["ANSIBLE_COLLECTIONS_PATH"].startswith(workdir + os.sep), "the collection link lives in --workdir"
    assert words[2].endswith("ansible-playbook")
    assert json.loads(words[words.index("-e") + 1])["rotate_ca_dir"] == os.path.join(workdir, "rotation")

    results = [line for line in run.stdout.splitlines() if "issuing:" in line]
    assert len(results) == 4, run.stdout  # two nodes, two CAs
    for result in results:
        assert re.search(r"issuing: new\s+accepted: none(\s|$)", result), result
    # A second run reuses the folder it made.
    again = demo("--controlplanes", "1", "--workers", "1", "--workdir", workdir)
    assert again.returncode == 0, (again.stdout + again.stderr)[-4000:]
