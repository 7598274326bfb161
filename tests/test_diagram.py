"""The race diagram: one column per involved CPU, time going down, skipped steps marked, labels
whole, the violation last and red, each CPU's protocol step shown; as SVG/HTML and as text for
a commit message (`run --race-diagram`, `crashes show --race-diagram`)."""

import json
import xml.etree.ElementTree as ET

from click.testing import CliRunner

import db
from fuzzer.cli import main
from fuzzer.diagram import Diagram, Row
from fuzzer.diagram_svg import RED, render_svg
from fuzzer.diagram_text import render_text
from fuzzer.focus import focus_view
from fuzzer.machine import Config, Machine
from fuzzer.protocols import resolve

SPEC = "x86/text_poke_bp:no-final-sync"
# the minimized 23-step reproducer: cpu0 patches, cpu3 traps on the int3 after the last sync
NO_FINAL_SYNC = "0000000200000001000300030000030000000000000000000000000003000300000300000300000300000000" \
                "000000000000000000020000000003000002"
SVG = "{http://www.w3.org/2000/svg}"


def _focused() -> tuple[Diagram, object]:
    cls, variant = resolve(SPEC)
    m = Machine(cls, variant, Config(cpus=4))
    schedule = bytes.fromhex(NO_FINAL_SYNC)
    r = m.run(schedule, trace=True)
    _, rows, cpus = focus_view(m, schedule, r)
    return Diagram(f"{SPEC} [{r.finding.oracle}] {r.finding.title}", cpus, rows), r


def _texts(svg: str, cls: str | None = None) -> list[str]:
    root = ET.fromstring(svg)
    return [" ".join(t.itertext()) for t in root.iter(f"{SVG}text") if cls is None or t.get("class") == cls]


def _squash(text: str) -> str:
    return "".join(text.split())


def test_focused_diagram_has_a_column_per_involved_cpu_only():
    d, r = _focused()
    assert d.cpus == [0, 3] and r.finding.cpu == 3
    svg = render_svg(d)
    assert _texts(svg, "cpu") == ["CPU0", "CPU3"]
    header = next(line for line in render_text(d) if "CPU0" in line)
    assert header.split() == ["step", "CPU0", "|", "CPU3"]


def test_the_finding_cpus_serializing_ipis_are_shown_with_the_sync_they_belong_to():
    d, _ = _focused()
    ipis = [(line.cells[3], line.phases.get(3)) for line in d.lines() if 3 in line.cells
            and line.cells[3].text.startswith("takes IPI")]
    assert [(row.first, phase) for row, phase in ipis] == [(9, "serialized by sync_cores #1"),
                                                          (18, "serialized by sync_cores #2")]
    waits = [line.phases[0] for line in d.lines() if 0 in line.phases]
    assert waits[:2] == ["waiting in sync_cores #1", "after sync_cores #1"]
    # the trapping fetch happens after the last sync: the diagram says so in the column
    fetch = next(line for line in d.lines() if 3 in line.cells and line.cells[3].category == "fetch")
    assert fetch.cells[3].phase == "serialized by sync_cores #2"
    text = "\n".join(render_text(d))
    assert "-- serialized by sync_cores #2 --" in text and "-- waiting in sync_cores #1 --" in text
    assert "waiting in sync_cores #2" in "\n".join(_texts(render_svg(d), "phase"))


def test_skipped_steps_are_marked():
    d, _ = _focused()
    skips = [(line.first, line.last, line.skipped) for line in d.lines() if line.skipped]
    assert skips == [(7, 8, 2), (16, 17, 2)]  # cpu1 and cpu2 taking their IPIs
    svg = render_svg(d)
    assert _texts(svg, "skip") == ["2 steps skipped", "2 steps skipped"]
    assert "\u22ee" in _texts(svg, "dots")[0]
    assert sum(line.startswith("  ...  ... 2 steps skipped") for line in render_text(d)) == 2
    rows = [Row(1, 1, 0, "thread", "op", "a"), Row(5, 6, 1, "thread", "op", "b"),
            Row(7, 7, 0, "thread", "op", "c")]
    assert [line.skipped for line in Diagram("t", [0, 1], rows).lines()] == [0, 3, 0, 0]


def test_the_violation_is_the_last_line_and_red():
    d, r = _focused()
    last = d.lines()[-1]
    assert list(last.cells) == [3] and last.cells[3].category == "violation"
    root = ET.fromstring(render_svg(d))
    boxes = [g for g in root.iter(f"{SVG}g") if g.get("class") == "row"]
    assert boxes[-1].get("data-category") == "violation"
    rect = boxes[-1].find(f"{SVG}rect")
    assert rect.get("fill") == RED and rect.get("stroke") == RED
    assert r.finding.title in " ".join(boxes[-1].find(f"{SVG}text").itertext())
    lines = render_text(d)
    column = _squash("".join(line.split("|")[-1] for line in lines[-3:]))
    assert column == _squash(r.events[-1].text(r.renderer))  # *** unhandled-trap: ... the last line
    assert lines[-1].strip().endswith("fentry_func")


def test_labels_are_whole_wrapped_not_cut():
    d, r = _focused()
    long = "x" * 40 + " " + " ".join(f"word{i}" for i in range(80))  # far wider than a column
    d.rows.insert(0, Row(1, 1, 0, "thread", "op", long, ""))
    root = ET.fromstring(render_svg(d))
    drawn = [" ".join(g.find(f"{SVG}text").itertext()) for g in root.iter(f"{SVG}g") if g.get("class") == "row"]
    labels = [row.label for row in d.rows if row.cpu in d.cpus and row.category != "violation"]
    assert [_squash(t) for t in drawn[:-1]] == [_squash(t) for t in labels]
    assert max(len(g.find(f"{SVG}text")) for g in root.iter(f"{SVG}g") if g.get("class") == "row") > 3
    text = render_text(d, width=80)
    assert all(len(line) <= 80 for line in text[2:])
    body = text[next(i for i, line in enumerate(text) if "CPU0" in line) + 2:]  # under the header's rule
    first = body[:1 + next(i for i, line in enumerate(body[1:]) if line[:5].strip())]
    assert len(first) > 3 and _squash("".join(line.split("|")[0][7:] for line in first)) == _squash(long)


def test_the_legend_names_only_what_is_drawn():
    d, _ = _focused()
    root = ET.fromstring(render_svg(d))
    legend = [" ".join(g.itertext()) for g in root.iter(f"{SVG}g") if g.get("class") == "legend"]
    drawn = {g.get("data-category") for g in root.iter(f"{SVG}g") if g.get("class") == "row"}
    assert set(legend) == drawn and len(legend) == len(drawn)
    assert "nmi" not in legend and "lock wait" not in legend and "violation" in legend


def test_the_focused_diagram_fits_a_laptop_screen_as_png():
    import cairosvg  # the test extra pins it

    d, _ = _focused()
    png = cairosvg.svg2png(bytestring=render_svg(d).encode())
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert width <= 1280 and height <= 800, (width, height)
    assert len(png) > 10_000  # drawn, not blank


def _invoke(*args):
    return CliRunner().invoke(main, list(args))


def test_run_race_diagram_prints_the_changelog_diagram_and_changes_nothing():
    plain = json.loads(_invoke("run", SPEC, "--schedule", NO_FINAL_SYNC, "--json").stdout)
    r = _invoke("run", SPEC, "--schedule", NO_FINAL_SYNC, "--race-diagram")
    assert r.exit_code == 1, r.output  # a finding, as without the diagram
    lines = r.stdout.splitlines()
    header = next(line for line in lines if "CPU0" in line)
    assert header.split() == ["step", "CPU0", "|", "CPU3"]
    assert lines.index(header) < next(i for i, line in enumerate(lines) if "*** unhandled-trap" in line)
    assert "CRASH [unhandled-trap]" in r.stdout and "  ...  ... 2 steps skipped" in r.stdout
    full = _invoke("run", SPEC, "--schedule", NO_FINAL_SYNC, "--race-diagram", "--no-focus")
    assert next(line for line in full.stdout.splitlines() if "CPU0" in line).split() == \
        ["step", "CPU0", "|", "CPU1", "|", "CPU2", "|", "CPU3"]
    out = json.loads(_invoke("run", SPEC, "--schedule", NO_FINAL_SYNC, "--race-diagram", "--json").stdout)
    assert out["trace_sha256"] == plain["trace_sha256"] and out["race_diagram"][-1].strip().endswith("fentry_func")


def test_run_timeline_writes_the_picture(tmp_path):
    svg = tmp_path / "race.svg"
    assert _invoke("run", SPEC, "--schedule", NO_FINAL_SYNC, "--timeline", str(svg)).exit_code == 1
    assert _texts(svg.read_text(), "cpu") == ["CPU0", "CPU3"]
    bad = _invoke("run", SPEC, "--schedule", NO_FINAL_SYNC, "--timeline", str(tmp_path / "race.png"))
    assert bad.exit_code == 2 and bad.stderr.startswith("patchfuzz: error: --timeline")


def _bucket_with_a_stale_detail(tmp_path) -> tuple[str, int]:
    """A bucket whose minimized sample carries the first sample's detail, as set_minimized
    stored it before it took the minimized run's own."""
    url = f"sqlite:///{tmp_path / 'c.db'}"
    database = db.open_db(url)
    bid, _ = db.store_finding(database, signature="a1196ba9d7ee90c9f731", protocol="x86/text_poke_bp",
                              variant="no-final-sync", oracle="unhandled-trap",
                              title="unhandled int3 at fentry in thread", schedule=b"\x00" * 200,
                              schedule_format=2, engine_version="0.1.0", config={"cpus": 4},
                              trace_sha256=None, detail="the first sample's detail", consequence=[])
    db.set_minimized(database, bid, bytes.fromhex(NO_FINAL_SYNC), None)
    return url, bid


def test_crashes_show_race_diagram_and_the_detail_of_the_run_it_shows(tmp_path):
    url, bid = _bucket_with_a_stale_detail(tmp_path)
    r = _invoke("crashes", "show", str(bid), "--db", url, "--race-diagram")
    assert r.exit_code == 0, r.output
    assert "the first sample's detail" not in r.stdout
    assert "  the protocol's handler did not recognize the int3 at fentry_func" in r.stdout
    lines = r.stdout.splitlines()
    assert next(line for line in lines if "CPU0" in line).split() == ["step", "CPU0", "|", "CPU3"]
    assert lines[-1].strip().endswith("fentry_func") and not any(line.startswith("      1 cpu") for line in lines)
    shown = json.loads(_invoke("crashes", "show", str(bid), "--db", url, "--json", "--race-diagram").stdout)
    assert shown["best_sample"]["detail"].startswith("the protocol's handler")
    assert any("*** unhandled-trap" in line for line in shown["race_diagram"])


def test_a_minimized_sample_keeps_its_own_detail(tmp_path):
    from fuzzer.records import FindingRecords

    cls, variant = resolve(SPEC)
    records = FindingRecords(Machine(cls, variant, Config(cpus=4)))
    small, extra = records.minimized(bytes.fromhex(NO_FINAL_SYNC), 50)
    assert extra["detail"] == "the protocol's handler did not recognize the int3 at fentry_func"
    url, bid = _bucket_with_a_stale_detail(tmp_path)
    database = db.open_db(url)
    db.set_minimized(database, bid, small, None, detail=extra["detail"], consequence=extra["consequence"])
    assert db.get_bucket(database, bid)["best_sample"]["detail"] == extra["detail"]
