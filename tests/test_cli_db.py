"""`patchfuzz fuzz` stores findings; `patchfuzz crashes` triages them. SQLite and PostgreSQL."""

import json

from click.testing import CliRunner

from fuzzer.cli import main

from .test_db import fresh_url  # noqa: F401  (fixture: a never-opened SQLite file or PG database)

SPEC = "x86/text_poke_bp:no-final-sync"


def _invoke(*args):
    return CliRunner().invoke(main, list(args))


def _fuzz(url, seed):
    r = _invoke("fuzz", SPEC, "--strategy", "random", "--schedules", "400", "--seed", str(seed), "--minimize-runs", "0",
                "--db", url, "--json")
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def test_fuzzing_twice_grows_one_bucket_per_signature(fresh_url):  # noqa: F811
    first = _fuzz(fresh_url, 1)
    second = _fuzz(fresh_url, 2)
    hits = {}
    for out in (first, second):
        for c in out["crashes"]:
            hits[c["signature"]] = hits.get(c["signature"], 0) + c["hits"]
    rows = json.loads(_invoke("crashes", "list", "--db", fresh_url, "--json").stdout)
    assert {r["signature"]: r["count"] for r in rows} == hits
    both = set(c["signature"] for c in first["crashes"]) & set(c["signature"] for c in second["crashes"])
    assert both, "the two campaigns should share at least one bucket"
    shared = next(r for r in rows if r["signature"] in both)
    shortest = min(len(c["schedule"]) // 2 for out in (first, second) for c in out["crashes"]
                   if c["signature"] == shared["signature"])
    shown = json.loads(_invoke("crashes", "show", str(shared["id"]), "--db", fresh_url, "--json").stdout)
    assert len(bytes.fromhex(shown["best_sample"]["schedule"])) == shortest
    assert any("unhandled-trap" in line for line in shown["trace"])


def test_repro_mark_and_filters(fresh_url):  # noqa: F811
    _fuzz(fresh_url, 1)
    rows = json.loads(_invoke("crashes", "list", "--db", fresh_url, "--json").stdout)
    bucket = rows[0]["id"]
    r = _invoke("crashes", "repro", str(bucket), "--db", fresh_url)
    assert r.exit_code == 0 and "reproduces" in r.stdout
    assert _invoke("crashes", "mark", str(bucket), "--status", "fixed", "--note", "v5.6", "--db",
                   fresh_url).exit_code == 0
    fixed = json.loads(_invoke("crashes", "list", "--status", "fixed", "--db", fresh_url, "--json").stdout)
    assert [r["id"] for r in fixed] == [bucket] and fixed[0]["note"] == "v5.6"
    none = json.loads(_invoke("crashes", "list", "--oracle", "deadlock", "--db", fresh_url, "--json").stdout)
    assert none == []


def test_bad_input_is_one_line(tmp_path):
    url = f"sqlite:///{tmp_path / 'c.db'}"
    for args in (["crashes", "show", "12345", "--db", url],
                 ["crashes", "mark", "12345", "--status", "fixed", "--db", url],
                 ["crashes", "list", "--since", "yesterday", "--db", url],
                 ["crashes", "list", "--db", "postgresql+psycopg://postgres:secret@127.0.0.1:1/x"],
                 ["fuzz", SPEC, "--schedules", "5", "--db", "postgresql+psycopg://postgres@127.0.0.1:1/x"]):
        r = _invoke(*args)
        assert r.exit_code == 2, (args, r.output)
        lines = [line for line in r.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("patchfuzz: error:"), (args, r.stderr)
        assert "secret" not in r.stderr and "Traceback" not in r.stderr


def test_corrupt_database_is_left_untouched(tmp_path):
    path = tmp_path / "c.db"
    path.write_bytes(b"not a database" * 100)
    before = path.read_bytes()
    r = _invoke("fuzz", SPEC, "--strategy", "random", "--schedules", "5", "--db", str(path))
    assert r.exit_code == 2 and "patchfuzz: error:" in r.stderr
    assert path.read_bytes() == before


def test_no_db_stores_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = _invoke("fuzz", SPEC, "--strategy", "random", "--schedules", "50", "--no-db", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["database"] is None
    assert not (tmp_path / "patchfuzz.db").exists()


def test_timeline_picture(tmp_path):
    import xml.etree.ElementTree as ET

    url = f"sqlite:///{tmp_path / 'c.db'}"
    _fuzz(url, 1)
    bucket = json.loads(_invoke("crashes", "list", "--db", url, "--json").stdout)[0]
    svg = tmp_path / "race.svg"
    r = _invoke("crashes", "show", str(bucket["id"]), "--db", url, "--timeline", str(svg), "--no-focus")
    assert r.exit_code == 0, r.output
    root = ET.parse(svg).getroot()  # well-formed SVG
    texts = [" ".join(t.itertext()) for t in root.iter("{http://www.w3.org/2000/svg}text")]  # wrapped lines
    # --no-focus: a column for every CPU
    assert [t for t in texts if t.startswith("CPU")] == ["CPU0", "CPU1", "CPU2", "CPU3"]
    assert any(bucket["title"] in t for t in texts)  # the violation is marked with its title
    tooltips = [t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}title")]
    assert any("fetch fentry" in t for t in tooltips) and any("poke fentry" in t for t in tooltips)
    # readable on the picture itself: the bytes a CPU fetched and what was written where
    assert any(t.startswith("fetch fentry: cc") for t in texts), texts
    assert any(t.startswith("poke fentry+0 = cc") for t in texts)
    focused = tmp_path / "focus.svg"  # a diagram is focused unless --no-focus
    assert _invoke("crashes", "show", str(bucket["id"]), "--db", url, "--timeline", str(focused)).exit_code == 0
    froot = ET.parse(focused).getroot()
    spans = [t.text or "" for t in froot.iter("{http://www.w3.org/2000/svg}title")]
    assert any(t.startswith("steps ") for t in spans) and len(spans) < len(tooltips)  # folded ranges
    heads = ["".join(t.itertext()) for t in froot.iter("{http://www.w3.org/2000/svg}text")]
    assert len([t for t in heads if t.startswith("CPU")]) < 4  # only the involved CPUs
    html = tmp_path / "race.html"
    assert _invoke("crashes", "show", str(bucket["id"]), "--db", url, "--timeline", str(html)).exit_code == 0
    assert "<svg" in html.read_text() and "<pre>" in html.read_text()
    bad = _invoke("crashes", "show", str(bucket["id"]), "--db", url, "--timeline", str(tmp_path / "x.png"))
    assert bad.exit_code == 2 and "patchfuzz: error:" in bad.stderr


def test_fuzz_ends_with_each_bucket_and_its_minimized_replay(tmp_path):
    url = f"sqlite:///{tmp_path / 'm.db'}"
    r = _invoke("fuzz", SPEC, "--strategy", "random", "--schedules", "300", "--seed", "1",
                "--minimize-runs", "500", "--db", url)
    assert r.exit_code == 0, r.output
    buckets = {b["id"]: b for b in json.loads(_invoke("crashes", "list", "--db", url, "--json").stdout)}
    lines = r.stdout.splitlines()
    for bid, b in buckets.items():
        i = lines.index(f"bucket {bid}: patchfuzz crashes show {bid} --focus (minimized)")
        schedule = lines[i + 1].rsplit("--schedule ", 1)[1].strip("'")
        best = json.loads(_invoke("crashes", "show", str(bid), "--db", url, "--json").stdout)["best_sample"]
        assert best["minimized"] and best["schedule"] == schedule  # the printed replay is the stored one
        run = json.loads(_invoke("run", SPEC, "--schedule", schedule, "--json").stdout)
        assert run["signature"] == b["signature"]
