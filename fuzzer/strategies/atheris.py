"""Coverage-guided search: libFuzzer (through atheris) mutating schedule bytes.

libFuzzer is steered by interleaving coverage rather than Python line coverage: the features
of each run (which patcher step each CPU's fetch, trap or handler read fell into, reads-from
pairs, NMI/IPI/preemption at a patcher step, lock orders, ...) are fed to it through one block
of custom counters, so a schedule that reaches a new interleaving joins the corpus. The
default mutator (`atheris_worker.site_hold_mutator`) spends runs first on near misses (new
states one step from a violation), then on fresh schedules and continuations of the states where
inputs found new features, all drawn while the machine runs them: event densities and runs of
one CPU vary per schedule, and CPUs standing in front of a patch site are held back
(`swarm.SiteHoldSource`).

atheris allows one `Setup()` per process and `Fuzz()` never returns, so every campaign runs
its fuzz job in a subprocess (`atheris_worker`). The worker writes findings and statistics to
an events file line by line as they happen; this side tails that file, so nothing is lost if
the child dies and no pipe can fill up. The corpus is kept on disk (by default under
`.patchfuzz/corpus/<protocol>/<variant>/` in the working directory) and a later campaign on the
same protocol resumes from it.
"""

from __future__ import annotations

import json
import math
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import IO

from ..campaign import Campaign, CampaignResult
from ..guard import ProtocolError
from ..machine import Machine
from ..oracles import Finding
from ..protocols import registry
from .atheris_worker import DEFAULT_MUTATOR, MUTATORS, count_files
from .base import SetupError

DEFAULT_MAX_LEN = 256
POLL = 0.05  # how often the parent reads the events files
# A run takes milliseconds; libFuzzer's own default (20 min) would hide a hung engine for long.
RUN_TIMEOUT = 120
# Time budgets end inside libFuzzer (whole seconds, counted from the child's start, so budgets
# under 2 s overshoot); the parent steps in only if the child overstays by this much.
DEADLINE_GRACE = 15.0
RSS_LIMIT_MB = 2048  # libFuzzer's default, on top of what the child inherits
_DONE = re.compile(rb"^Done (\d+) (?:runs )?in ", re.M)
_PACKAGE_ROOT = Path(__file__).resolve().parents[2]


def default_corpus_dir(machine: Machine, root: Path | None = None) -> Path:
    """`.patchfuzz/corpus/<protocol with / as _>/<variant>/` under `root` (the working directory)."""
    base = (root or Path.cwd()) / ".patchfuzz" / "corpus"
    return base / machine.protocol_cls.name.replace("/", "_") / machine.variant


class _Job:
    """One worker process and what it has reported so far."""

    def __init__(self, index: int, proc: subprocess.Popen, events: Path, log: Path,
                 log_file: IO[bytes]) -> None:
        self.index = index
        self.proc = proc
        self.events = events
        self.log = log
        self.log_file = log_file
        self.offset = 0
        self.partial = b""
        self.runs = 0
        self.corpus = 0
        self.initial_features: int | None = None
        self.hits: dict[str, int] = {}
        self.near = 0
        self.stopped_by_parent = False
        self.errored = False  # it stopped at the protocol's own error, which it reported

    def read_lines(self) -> list[dict]:
        try:
            with open(self.events, "rb") as f:
                f.seek(self.offset)
                chunk = f.read()
        except FileNotFoundError:
            return []
        if not chunk:
            return []
        self.offset += len(chunk)
        # a line the child is still writing stays in `partial` until its newline arrives
        *whole, self.partial = (self.partial + chunk).split(b"\n")
        return [json.loads(line) for line in whole if line.strip()]

    def log_tail(self, lines: int = 25) -> str:
        try:
            with open(self.log, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 64 * 1024))
                text = f.read().decode("utf-8", "replace")
        except OSError as e:
            return f"(log {self.log} unreadable: {e})"
        return "\n".join(text.splitlines()[-lines:])

    def final_runs(self) -> int | None:
        """libFuzzer's own count from its closing `Done N runs` line: with -max_total_time it
        covers the last runs after the child's final stats line."""
        try:
            with open(self.log, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 16 * 1024))
                found = _DONE.findall(f.read())
        except OSError:
            return None
        return int(found[-1]) if found else None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.stopped_by_parent = True
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _finding(line: dict) -> Finding:
    return Finding(oracle=line["oracle"], title=line["title"], protocol=line["protocol"],
                   variant=line["variant"], step=line["step"], cpu=line["cpu"],
                   detail=line["detail"], consequence=list(line.get("consequence") or []))


class AtherisStrategy:
    name = "atheris"
    wants_coverage = True

    def __init__(self, seed: int = 0, corpus_dir: str | os.PathLike | None = None,
                 max_len: int = DEFAULT_MAX_LEN, jobs: int = 1, log_dir: str | os.PathLike | None = None,
                 libfuzzer_flags: Sequence[str] = (), mutator: str = DEFAULT_MUTATOR, **_ignored) -> None:
        """`corpus_dir` is used as given (default: per protocol and variant, see
        `default_corpus_dir`); libFuzzer's output goes to `log_dir` (default: `logs` next to
        the corpus tree). `jobs` > 1 runs that many workers on the same corpus, each with its
        own seed; a schedule budget is split between them."""
        if max_len < 1 or jobs < 1:
            raise ValueError("max_len and jobs must be positive")
        self.seed = seed
        self.corpus_dir = Path(corpus_dir) if corpus_dir is not None else None
        self.max_len = max_len
        self.jobs = jobs
        self.log_dir = Path(log_dir) if log_dir is not None else None
        self.libfuzzer_flags = list(libfuzzer_flags)
        if mutator not in MUTATORS:
            raise ValueError(f"unknown mutator {mutator!r}; known: {', '.join(MUTATORS)}")
        self.mutator = mutator
        self._stats: dict = {}
        self.last_logs: list[Path] = []  # libFuzzer's output of the latest campaign, per job
        self.last_pids: list[int] = []

    def stats(self) -> dict:
        return dict(self._stats)

    def corpus_for(self, machine: Machine) -> Path:
        return (self.corpus_dir or default_corpus_dir(machine)).resolve()

    def logs_for(self, corpus: Path) -> Path:
        if self.log_dir is not None:
            return self.log_dir.resolve()
        if self.corpus_dir is None:
            return (Path.cwd() / ".patchfuzz" / "logs").resolve()
        return corpus.parent / "logs"

    def prepare(self, machine: Machine) -> tuple[Path, Path]:
        """Creates the corpus and log directories; returns them."""
        corpus = self.corpus_for(machine)
        logs = self.logs_for(corpus)
        for what, path, option in (("corpus", corpus, "--corpus"), ("log", logs, "--corpus")):
            if path.exists() and not path.is_dir():
                raise SetupError(f"the {what} directory {path} is a file; give {option} a directory")
            try:
                path.mkdir(parents=True, exist_ok=True)
                probe = tempfile.TemporaryFile(dir=path)  # writable? (root ignores mode bits)
                probe.close()
            except OSError as e:
                raise SetupError(f"cannot use {path} as the {what} directory: {e.strerror}; give "
                                 f"{option} a writable directory") from None
        return corpus, logs

    def _libfuzzer_seed(self, job: int) -> int:
        # libFuzzer takes seed 0 as "pick one at random": keep to 1 .. 2**31-1
        return (self.seed + job) % (2**31 - 1) + 1

    def _rss_limit(self) -> list[str]:
        """libFuzzer's memory guard, counted from where the child starts. Its RSS is getrusage's
        peak, and a child starts with its parent's RSS as that peak (fork copies it, exec keeps
        it): a parent holding 2 GB (a long test session, a benchmark) made every child "run out
        of memory" at its first input under the default 2048 MB limit."""
        if any(f.startswith("-rss_limit_mb=") for f in self.libfuzzer_flags):
            return []
        inherited = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024  # KiB on Linux
        return [f"-rss_limit_mb={inherited + RSS_LIMIT_MB}"]

    def _spawn(self, machine: Machine, index: int, corpus: Path, logs: Path, tmp: Path,
               runs: int | None, seconds: float | None) -> _Job:
        proto = machine.protocol_cls.name
        budget = []
        if runs is not None:
            budget.append(f"-atheris_runs={runs}")
        if seconds is not None:
            # libFuzzer stops once its whole-second clock is *past* the limit, i.e. a second
            # late; it cannot stop before 2 s.
            budget.append(f"-max_total_time={max(1, math.ceil(seconds) - 1)}")
        # -len_control=0: libFuzzer would otherwise grow inputs from a few bytes, and a short
        # schedule leaves the rest of the run to the default scheduler (measured: 59 instead of
        # 18213 schedules to the first finding on text_poke_bp:no-sync-after-int3).
        flags = [f"-seed={self._libfuzzer_seed(index)}", "-len_control=0", "-print_final_stats=0",
                 f"-timeout={RUN_TIMEOUT}", f"-artifact_prefix={logs}{os.sep}", *self._rss_limit(),
                 *self.libfuzzer_flags, *budget]
        events = tmp / f"events-{index}.jsonl"
        events.touch()
        cmd = [sys.executable, "-m", "fuzzer.strategies.atheris_worker",
               "--protocol", proto, "--variant", machine.variant,
               "--config", json.dumps(asdict(machine.config)),
               "--max-len", str(self.max_len), "--corpus", str(corpus), "--events", str(events),
               "--mutator", self.mutator, "--", *flags]
        env = dict(os.environ)
        # the child must import this very copy of the engine, whatever is installed
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_PACKAGE_ROOT), env.get("PYTHONPATH")]))
        stem = f"atheris-{proto.replace('/', '_')}-{machine.variant}-seed{self.seed}"
        log = logs / (f"{stem}.log" if self.jobs == 1 else f"{stem}-job{index}.log")
        log_file = open(log, "wb")  # closed when the campaign ends
        # Same process group on purpose: a supervisor (rq) that kills the job's group must
        # take the fuzzer with it.
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log_file,
                                stderr=subprocess.STDOUT, env=env)
        return _Job(index, proc, events, log, log_file)

    def search(self, machine: Machine, campaign: Campaign) -> None:
        """Fuzz in worker subprocesses until the campaign's budget is spent, or until a finding
        it stops on; findings are reported to the campaign as they arrive."""
        schedules, seconds = campaign.schedules, campaign.seconds
        res = campaign.result
        if registry().get(machine.protocol_cls.name) is not machine.protocol_cls:
            raise ValueError(f"atheris runs registered protocols only; {machine.protocol_cls.name!r} "
                             "is not in fuzzer.protocols")
        corpus, logs = self.prepare(machine)
        njobs = self.jobs if schedules is None else max(1, min(self.jobs, schedules))
        shares = [None] * njobs if schedules is None else \
            [schedules // njobs + (i < schedules % njobs) for i in range(njobs)]
        # counted here, not by the workers: with several jobs one may already be adding entries
        # when another starts
        at_start = count_files(str(corpus))
        tmp = Path(tempfile.mkdtemp(prefix="patchfuzz-atheris-"))
        features: set[int] = set()
        jobs: list[_Job] = []
        start = campaign.start
        try:
            for i in range(njobs):
                jobs.append(self._spawn(machine, i, corpus, logs, tmp, shares[i], seconds))
            self.last_logs = [j.log for j in jobs]
            self.last_pids = [j.proc.pid for j in jobs]
            while True:
                running = [j for j in jobs if j.proc.poll() is None]
                # read after polling, so lines written just before an exit are not missed
                for job in jobs:
                    for line in job.read_lines():
                        self._apply(job, line, jobs, campaign, features, start)
                        if campaign.stopped:
                            running = []
                if not running:
                    break
                now = time.monotonic()
                if campaign.interrupted() or seconds is not None and now - start > seconds + DEADLINE_GRACE:
                    for job in running:
                        job.stop()
                    continue
                campaign.progress(lambda: self._publish(jobs, res, features, at_start))
                time.sleep(POLL)
            for job in jobs:
                job.stop()  # only those still running: after a `stop_on` finding
            for job in jobs:
                rc = job.proc.returncode
                if rc != 0 and not job.stopped_by_parent and not job.errored:
                    err = RuntimeError(
                        f"atheris worker {job.index} for {machine.protocol_cls.name}:{machine.variant} "
                        f"exited with status {rc} (log {job.log}); last output:\n{job.log_tail()}")
                    err.result = res  # type: ignore[attr-defined] - findings so far
                    raise err
                done = job.final_runs()
                if done is not None and done > job.runs:
                    job.runs = done
            campaign.ran(total=sum(j.runs for j in jobs))
            self._publish(jobs, res, features, at_start)
        finally:
            for job in jobs:
                job.stop()
                job.log_file.close()
            shutil.rmtree(tmp, ignore_errors=True)

    def _apply(self, job: _Job, line: dict, jobs: list[_Job], campaign: Campaign,
               features: set[int], start: float) -> None:
        kind = line.get("type")
        res = campaign.result
        if kind == "stats":
            job.runs = max(job.runs, line["runs"])
            job.corpus = line["corpus"]
            job.hits = line["hits"]
            job.near = line.get("near", 0)
            features.update(line["new"])
            campaign.ran(total=sum(j.runs for j in jobs))
            for sig, rec in res.crashes.items():
                rec.hits = max(rec.hits, sum(j.hits.get(sig, 0) for j in jobs))
        elif kind == "finding":
            # the child's own run index makes `first_schedule` exact, not a poll behind
            job.runs = max(job.runs, line["run"])
            campaign.ran(total=sum(j.runs for j in jobs))
            campaign.found(_finding(line), bytes.fromhex(line["schedule"]), line["mono"] - start)
        elif kind == "loaded":
            job.initial_features = line["features"]
        elif kind == "error":
            job.errored = True
            job.runs = max(job.runs, line["run"])
            campaign.ran(total=sum(j.runs for j in jobs))
            fields = {k: line[k] for k in ("protocol", "variant", "where", "what", "step", "cpu")}
            campaign.errored(ProtocolError(**fields), bytes.fromhex(line["schedule"]))

    def _publish(self, jobs: list[_Job], res: CampaignResult, features: set[int], at_start: int) -> dict:
        stats = {"coverage_features": len(features),
                 # the jobs share one corpus directory: the largest count is the freshest
                 "corpus": max([at_start, *(j.corpus for j in jobs)]),
                 "corpus_at_start": at_start,
                 # states one step from a violation, new to the job that reached them: how
                 # often the search came close, which a clean verdict should be read with
                 "near_misses": sum(j.near for j in jobs)}
        initial = [j.initial_features for j in jobs if j.initial_features is not None]
        if at_start and initial:
            # what replaying the stored corpus restored, before any mutation of this campaign
            stats["initial_coverage"] = max(initial)
        if len(jobs) > 1:
            stats["jobs"] = len(jobs)
        self._stats = stats
        res.stats = dict(stats)
        return dict(stats)
