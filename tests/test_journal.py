"""The journal file on its own: line format, torn lines, the writer lock, the one-rollout-at-a-time lock."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from kmsadmin.errors import ConfigError
from kmsadmin.fleet.journal import Journal, read_journal


def entry(host: str, status: str, play: str = "p", *, check: bool = False) -> dict[str, object]:
    return {"type": "host", "run_id": "r1", "play": play, "host": host, "status": status, "check": check}


def test_header_entries_and_end_are_one_json_object_per_line(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "j.jsonl"
    with Journal(path) as journal:
        journal.start({"run_id": "r1", "playbook": "/p.yml"})
        journal.write(entry("a", "ok"))
        journal.write({"type": "end", "run_id": "r1"})
    lines = path.read_text().splitlines()
    assert [json.loads(line)["type"] for line in lines] == ["run", "host", "end"]
    assert json.loads(lines[0])["journal"] == 1
    state = read_journal(path)
    assert len(state.runs) == 1 and len(state.entries) == 1 and len(state.ends) == 1 and state.torn == 0


def test_latest_real_entry_decides_what_is_done(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    rows = [
        entry("a", "failed"),
        entry("a", "changed"),  # failed, then fixed: done
        entry("b", "ok"),
        entry("b", "failed"),  # ok, then failed in a later run: not done
        entry("c", "ok", check=True),  # a --check run changes nothing: not done
        entry("d", "ok", play="other"),
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert read_journal(path).done() == {("p", "a"), ("other", "d")}


def test_torn_lines_are_skipped_and_the_next_run_starts_on_a_new_line(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    path.write_text(json.dumps(entry("a", "ok")) + "\n" + '{"type": "host", "host": "b", "sta')
    state = read_journal(path)
    assert state.torn == 1 and state.done() == {("p", "a")}
    with Journal(path) as journal:
        journal.start({"run_id": "r2"})
        journal.write(entry("b", "changed"))
    state = read_journal(path)
    assert state.torn == 1 and state.done() == {("p", "a"), ("p", "b")}
    assert path.read_text().endswith("\n") and len(state.runs) == 1


def test_missing_journal_reads_empty(tmp_path: Path) -> None:
    state = read_journal(tmp_path / "none.jsonl")
    assert not state.runs and not state.entries and state.torn == 0


def test_concurrent_writers_never_interleave_lines(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    journal = Journal(path)
    journal.start({"run_id": "r1"})
    payload = "x" * 5000

    def writer(n: int) -> None:
        for i in range(25):
            journal.write({**entry(f"h{n}-{i}", "ok"), "blob": payload})

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    journal.close()
    state = read_journal(path)
    assert state.torn == 0 and len(state.entries) == 200


def test_one_rollout_at_a_time(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    first = Journal(path)
    first.start({"run_id": "r1"})
    with pytest.raises(ConfigError, match="in use by another rollout"):
        Journal(path).start({"run_id": "r2"})
    first.close()
    second = Journal(path)
    second.start({"run_id": "r3"})
    second.close()
    assert [r["run_id"] for r in read_journal(path).runs] == ["r1", "r3"]


def test_write_before_start_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is not open"):
        Journal(tmp_path / "j.jsonl").write(entry("a", "ok"))


# --- damaged journals on --resume -------------------------------------------------------------------
HEADER = {"type": "run", "journal": 1, "run_id": "r1", "playbook": "/site.yml"}


def _write(path: Path, *lines: object, end: str = "\n") -> None:
    path.write_bytes(
        b"\n".join(line if isinstance(line, bytes) else json.dumps(line).encode() for line in lines)
        + end.encode()
    )


def test_a_cut_last_line_is_warned_about_and_the_good_records_kept(tmp_path: Path) -> None:
    from kmsadmin.fleet.journal import resume_state

    path = tmp_path / "j.jsonl"
    cut = json.dumps(entry("b", "changed"))
    _write(path, HEADER, entry("a", "ok"), cut[: len(cut) // 2].encode(), end="")
    state, warnings = resume_state(path, "/site.yml")
    assert state.done() == {("p", "a")} and state.last_torn
    assert len(warnings) == 1 and "last line (3) is cut" in warnings[0]


def test_damaged_lines_in_the_middle_are_skipped_with_a_warning(tmp_path: Path) -> None:
    from kmsadmin.fleet.journal import resume_state

    path = tmp_path / "j.jsonl"
    _write(
        path,
        HEADER,
        entry("a", "ok"),
        b"\x00\xff\xfe garbage",
        {"type": "host", "run_id": "r1", "host": 7, "play": "p", "status": "ok"},  # wrong types
        b"[1, 2]",
        entry("b", "changed"),
    )
    state, warnings = resume_state(path, "/site.yml")
    assert state.done() == {("p", "a"), ("p", "b")}
    assert state.bad_lines == [3, 4, 5] and not state.last_torn
    assert len(warnings) == 1 and "3 damaged line(s) (3, 4, 5)" in warnings[0]


def test_an_empty_journal_resumes_nothing_with_a_warning(tmp_path: Path) -> None:
    from kmsadmin.fleet.journal import resume_state

    path = tmp_path / "j.jsonl"
    path.write_bytes(b"")
    state, warnings = resume_state(path, "/site.yml")
    assert state.done() == set() and warnings == [
        f"journal {path} is empty: nothing to resume, every host runs"
    ]
    assert resume_state(tmp_path / "missing.jsonl", "/site.yml")[1] == []


def test_records_without_a_readable_header_are_refused(tmp_path: Path) -> None:
    from kmsadmin.fleet.journal import resume_state

    path = tmp_path / "j.jsonl"
    _write(path, b'{"type": "run", "journal": 1, "run_id": "r1", "playb', entry("a", "ok"))
    with pytest.raises(ConfigError, match=r"no readable run header \(damaged line 1\?\)"):
        resume_state(path, "/site.yml")


def test_records_of_a_run_whose_header_is_damaged_run_again(tmp_path: Path) -> None:
    from kmsadmin.fleet.journal import resume_state

    path = tmp_path / "j.jsonl"
    second = {**HEADER, "run_id": "r2"}
    _write(path, b"{damaged", entry("a", "ok"), second, {**entry("b", "ok"), "run_id": "r2"})
    state, warnings = resume_state(path, "/site.yml")
    assert state.done() == {("p", "b")}
    assert any("1 host record(s) belong to a run whose header line is damaged" in w for w in warnings)


def test_a_journal_of_another_playbook_or_a_newer_format_is_refused(tmp_path: Path) -> None:
    from kmsadmin.fleet.journal import resume_state

    path = tmp_path / "j.jsonl"
    _write(path, HEADER, entry("a", "ok"), {**HEADER, "run_id": "r2", "playbook": "/other.yml"})
    with pytest.raises(ConfigError, match=r"belongs to playbook /other\.yml"):
        resume_state(path, "/site.yml")
    _write(path, {**HEADER, "journal": 99}, entry("a", "ok"))
    with pytest.raises(ConfigError, match="newer kmsadmin"):
        resume_state(path, "/site.yml")
