"""Ctrl-C or SIGTERM during `patchfuzz fuzz` keeps what the campaign found: hit counts and
schedules stored, new buckets minimized (briefly), the summary printed, the campaign closed as
interrupted, exit 130."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

import db
from fuzzer.cli import main
from fuzzer.cli.fuzz import INTERRUPTED_MINIMIZE_RUNS
from fuzzer.records import FindingRecords

ROOT = Path(__file__).resolve().parents[1]
SPEC = "x86/text_poke_bp:no-final-sync"  # finds two buckets within a few hundred schedules


def _start(tmp_path: Path, strategy: str) -> tuple[subprocess.Popen, str]:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    cmd = [sys.executable, "-m", "fuzzer.cli", "fuzz", SPEC, "--strategy", strategy, "--seconds", "300",
           "--db", url, "--corpus", str(tmp_path / "corpus")]
    # its own process group, as a shell gives a job: Ctrl-C reaches the group (atheris workers too)
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    return proc, url


def _wait_for_findings(proc: subprocess.Popen, url: str, at_least: int = 3) -> None:
    """Until the database holds a finding and the campaign has run a while past it."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        time.sleep(0.5)
        assert proc.poll() is None, proc.communicate()
        if Path(url.removeprefix("sqlite:///")).exists():
            d = db.open_db(url)
            try:
                if len(db.list_buckets(d)) >= 1:
                    time.sleep(at_least)  # hits accumulate in memory, stored at the end
                    return
            finally:
                d.close()
    pytest.fail("no finding within 120 s")


@pytest.mark.parametrize("strategy", ["random", "atheris"])
@pytest.mark.parametrize("how", ["Ctrl-C", "SIGTERM"])
def test_an_interrupted_campaign_keeps_counts_minimizes_and_exits_130(tmp_path, strategy, how):
    proc, url = _start(tmp_path, strategy)
    _wait_for_findings(proc, url)
    if how == "Ctrl-C":  # a terminal sends SIGINT to the whole foreground group
        os.killpg(proc.pid, signal.SIGINT)
    else:  # a supervisor stops the fuzzer's process only
        proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, (out, err)
    assert "Traceback" not in err, err
    assert "interrupted: what was found so far is stored" in out
    assert "distinct findings" in out and "patchfuzz run" in out, out  # the summary and replays
    d = db.open_db(url)
    try:
        campaign = db.list_campaigns(d)[0]
        assert campaign["status"] == "interrupted"
        assert campaign["schedules_run"] > 0
        buckets = db.list_buckets(d)
        assert sum(b["count"] for b in buckets) > len(buckets), "the hit counts were lost"
        assert sum(b["count"] for b in buckets) == campaign["findings"]
        assert all(b["minimized"] for b in buckets), "new buckets were not minimized"
    finally:
        d.close()


def test_a_second_interrupt_skips_minimization_and_keeps_the_rest(tmp_path, monkeypatch):
    """In process, so the minimization can be made long: the first SIGINT ends the search, a
    second one arrives while the first bucket is being minimized."""
    url = f"sqlite:///{tmp_path / 'c.db'}"
    minimizing = []

    def slow_minimization(self, schedule, max_runs):
        minimizing.append(max_runs)
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(30)  # cut short by that signal
        pytest.fail("the second interrupt did not stop the minimization")

    monkeypatch.setattr(FindingRecords, "minimized", slow_minimization)
    timer = threading.Timer(3.0, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        r = CliRunner().invoke(main, ["fuzz", SPEC, "--strategy", "random", "--seconds", "300",
                                      "--db", url])
    finally:
        timer.cancel()
    assert r.exit_code == 130, r.output
    assert minimizing == [INTERRUPTED_MINIMIZE_RUNS]  # the short budget, and only one bucket tried
    assert "minimization skipped" in r.stderr and "the next `patchfuzz fuzz`" in r.stderr
    assert "distinct findings" in r.stdout
    d = db.open_db(url)
    try:
        assert db.list_campaigns(d)[0]["status"] == "interrupted"
        buckets = db.list_buckets(d)
        assert buckets and not any(b["minimized"] for b in buckets)
        assert sum(b["count"] for b in buckets) > len(buckets)
    finally:
        d.close()

    # as the message says: the next campaign that meets those buckets minimizes them
    monkeypatch.undo()
    again = CliRunner().invoke(main, ["fuzz", SPEC, "--strategy", "random", "--schedules", "500",
                                      "--minimize-runs", "200", "--db", url, "--json"])
    assert again.exit_code == 0, again.output
    met = {c["signature"] for c in json.loads(again.stdout)["crashes"]}
    d = db.open_db(url)
    try:
        old = {b["signature"]: b for b in buckets}
        assert met & set(old), "the second campaign met none of the first one's buckets"
        now = {b["signature"]: b for b in db.list_buckets(d)}
        assert all(now[sig]["minimized"] for sig in met & set(old)), now
    finally:
        d.close()
