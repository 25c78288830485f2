"""`make sim` starts a simulated cluster in the foreground, prints where its files are and what to run, serves the Talos
API with the printed talosconfig, and stops cleanly on Ctrl-C (SIGINT to the terminal's process group)."""

import os
import re
import signal
import subprocess
import time

from _playbook import REPO_ROOT

from ansible_collections.talosops.pki.plugins.module_utils import _client
from ansible_collections.talosops.pki.plugins.module_utils._auth import Target


def start(workdir, output):
    return subprocess.Popen(["make", "--no-print-directory", "sim", "SIM_ARGS=--controlplanes 1 --workers 1 --workdir %s" % workdir],
                            cwd=REPO_ROOT, stdout=output, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def wait_for(path, text, process, seconds=120):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with open(path, encoding="utf-8") as handle:
            content = handle.read()
        if text in content:
            return content
        assert process.poll() is None, content
        time.sleep(0.2)
    raise AssertionError("no %r within %ss:\n%s" % (text, seconds, content))


async def version(target):
    async with target.client() as client:
        return await client.version()


def test_make_sim_starts_prints_its_files_and_stops_on_ctrl_c(tmp_path):
    workdir = str(tmp_path / "sim")
    log = str(tmp_path / "make-sim.log")
    with open(log, "w", encoding="utf-8") as output:
        process = start(workdir, output)
        try:
            printed = wait_for(log, "Press Ctrl-C to stop.", process)
            paths = dict(re.findall(r"^(talosconfig|inventory|kubeconfig)\s+(\S+)$", printed, re.MULTILINE))
            assert paths == {name: os.path.join(workdir, name if name != "inventory" else "inventory.yml")
                             for name in ("talosconfig", "inventory", "kubeconfig")}, printed
            assert all(os.path.isfile(path) for path in paths.values())
            assert "--check --diff" in printed and os.path.isfile(os.path.join(workdir, "cluster.talos.yml"))
            # The printed command is shell-quoted: its -e argument survives a paste.
            assert "-e '{\"rotate_ca_dir\": \"%s\"}'" % os.path.join(workdir, "rotation") in printed
            assert _client.run(version(Target({"talosconfig": paths["talosconfig"]})))["tag"] == "v1.13.4"
            endpoint = re.search(r"^endpoint\s+(\S+):50000$", printed, re.MULTILINE).group(1)

            # A second `make sim` on the same folder is refused while the first runs.
            second = subprocess.run(["make", "--no-print-directory", "sim", "SIM_ARGS=--workdir %s" % workdir], cwd=REPO_ROOT,
                                    capture_output=True, text=True, timeout=120, check=False)
            assert second.returncode != 0 and "already runs with %s" % workdir in second.stderr + second.stdout
        finally:
            os.killpg(process.pid, signal.SIGINT)
            process.wait(timeout=60)
    with open(log, encoding="utf-8") as handle:
        printed = handle.read()
    assert printed.rstrip().endswith("Stopped.") or "Stopped." in printed.splitlines()[-3:], printed[-2000:]
    assert "Traceback" not in printed
    assert not os.path.exists(os.path.join(workdir, "ready"))
    try:
        _client.run(version(Target({"talosconfig": paths["talosconfig"], "retry_deadline": 0.5, "endpoints": [endpoint]})))
    except Exception as error:  # pylint: disable=broad-exception-caught
        assert "no answer" in str(error) or "refused" in str(error).lower(), error
    else:
        raise AssertionError("the simulated cluster still answers after Ctrl-C")


def test_make_sim_refuses_a_folder_it_did_not_make(tmp_path):
    (tmp_path / "precious.txt").write_text("mine")
    refused = subprocess.run(["make", "--no-print-directory", "sim", "SIM_ARGS=--workdir %s" % tmp_path], cwd=REPO_ROOT,
                             capture_output=True, text=True, timeout=120, check=False)
    assert refused.returncode != 0 and "is not empty and was not made by make sim" in refused.stderr + refused.stdout
    assert (tmp_path / "precious.txt").read_text() == "mine" and sorted(os.listdir(tmp_path)) == ["precious.txt"]
