"""The benchmark's phases (bench/phases.py): a late failure must not lose what ran before it."""

from __future__ import annotations

import json
import time

from bench import __main__ as bench
from bench import phases


def test_a_failing_or_hung_phase_is_recorded_and_the_next_ones_run(tmp_path):
    out, extra = tmp_path / "bench.json", tmp_path / "summary.json"
    results = {"device": "test"}
    run = phases.Phases(results, [out], lambda r: {extra: {"figures": sorted(k for k in r if k != "phases")}})

    def on_disk() -> dict:
        return json.loads(out.read_text())

    def second():
        assert on_disk()["first"] == 1 and on_disk()["phases"]["first"]["status"] == "ok"
        raise ValueError("boom")

    def fourth():
        written = on_disk()
        assert written["phases"]["second"] == {
            "status": "failed",
            "seconds": written["phases"]["second"]["seconds"],
        } | {"error": "ValueError: boom"}
        assert written["phases"]["third"]["status"] == "timeout"
        assert "ran past its time limit of 0.2 s" in written["phases"]["third"]["error"]
        return {"fourth": 4}

    assert run.run("first", lambda: {"first": 1}, 10)
    assert not run.run("second", second, 10)
    assert not run.run("third", lambda: time.sleep(30), 0.2)  # a hang: the limit ends it
    assert run.run("fourth", fourth, 10)
    assert not run.run("fifth", lambda: {"fifth": 5}, 10, needs=["second"])
    written = on_disk()
    assert written["first"] == 1 and written["fourth"] == 4 and "fifth" not in written
    assert written["phases"]["fifth"] == {
        "status": "skipped",
        "seconds": 0.0,
        "error": "needs second, which did not complete",
    }
    assert run.failed() == ["second", "third", "fifth"]
    assert json.loads(extra.read_text()) == {"figures": ["device", "first", "fourth"]}
    assert not list(tmp_path.glob(".*.partial"))  # written whole, then renamed


def test_dictionaries_of_figures_are_merged_not_replaced():
    results = {"levels": {1: {"tok_per_s": 10.0}}}
    phases.merge(results, {"levels": {8: {"tok_per_s": 70.0}}, "load_seconds": 3.0})
    assert results == {"levels": {1: {"tok_per_s": 10.0}, 8: {"tok_per_s": 70.0}}, "load_seconds": 3.0}


def test_a_server_that_never_starts_costs_its_phases_only_and_the_json_lands_in_out(tmp_path, monkeypatch, capsys):
    class NeverReady:
        def __init__(self, *args, **kwargs):
            raise RuntimeError("server exited with 1")

    monkeypatch.setenv("OUT", str(tmp_path / "device-out"))
    monkeypatch.setattr(bench.Bench, "model", lambda self: {"model_built": True})
    monkeypatch.setattr(bench.Bench, "raw_cpu", lambda self: {"raw_tok_per_s_batch1": 5.0})
    monkeypatch.setattr(bench.server, "Server", NeverReady)
    code = bench.main(["--shape", "tiny", "--concurrency", "2", "--out", str(tmp_path / "out")])
    assert code == 1
    written = json.loads((tmp_path / "device-out" / "bench-cpu.json").read_text())
    assert written == json.loads((tmp_path / "out" / "bench-cpu.json").read_text())
    statuses = {name: phase["status"] for name, phase in written["phases"].items()}
    assert statuses == {
        "model": "ok",
        "raw decode": "ok",
        "server start": "failed",
        "server one at a time": "skipped",
        "server 2 concurrent": "skipped",
        "server new connections": "skipped",
        "server logprobs 5": "skipped",
    }
    assert written["phases"]["server start"]["error"] == "RuntimeError: server exited with 1"
    assert written["raw_tok_per_s_batch1"] == 5.0 and written["model_built"] is True
    printed = capsys.readouterr().out
    assert "raw generate, batch 1" in printed and "server start                  failed" in printed
