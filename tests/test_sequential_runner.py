"""Sequential seeds end to end (issue 23): ``--until-decided`` on a user's study (scikit-learn's
digits, examples/), stopped between two looks and resumed: the second look trains only the new
seeds, each (arm, seed) once, and every look's analysis is on the parent run."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlflow_runs import parent_runs, trial_runs
from study import protocol, tracking
from study.phases import StudyInterrupted
from study.records import SEQUENTIAL_FILE, Outcome, StudyStatus, Tag

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_until_decided_stops_resumes_at_its_look_and_never_repeats_a_seed(tmp_path, capsys, monkeypatch, ray_local):
    from study.run import main
    results = tmp_path / "results"
    uri = f"sqlite:///{results / 'mlflow.db'}"
    args = [str(ROOT / "examples" / "digits_width.py"), "--budget", "smoke", "--until-decided", "--max-seeds", "4",
            "--results-dir", str(results), "--tracking-uri", uri, "--quiet"]
    train = protocol.train_seeds

    def stopped_at_look_2(ctx):
        if ctx.look == 2:
            raise StudyInterrupted("stopped before look 2's seeds (test)")
        return train(ctx)

    monkeypatch.setattr(protocol, "train_seeds", stopped_at_look_2)
    code = main(args)
    out = capsys.readouterr().out
    assert code == 130 and "look 1 at 2 seeds" in out and "--until-decided" in out.split("Continue with:")[1], out
    monkeypatch.setattr(protocol, "train_seeds", train)
    code = main([*args, "--resume"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "look 1 at 2 seeds" not in out and "look 2: 2 more seeds (2, 3)" in out, out

    parent = parent_runs(uri, "digits_width")[0]
    assert parent.data.tags[Tag.STUDY_STATUS] == StudyStatus.FINISHED and parent.data.tags[Tag.SEQUENTIAL_LOOK] == "2"
    assert json.loads(parent.data.tags[Tag.SEEDS]) == [0, 1, 2, 3]
    replicates = [r for r in trial_runs(uri, "digits_width")
                  if r.data.tags[Tag.PHASE] == "replicate" and r.data.tags[Tag.OUTCOME] == Outcome.COMPLETED]
    cells = [(r.data.tags[Tag.ARM], r.data.tags[Tag.SEED]) for r in replicates]
    assert len(cells) == len(set(cells)) == 4 * 4                      # 4 arms x 4 seeds, none twice
    assert {r.data.tags[Tag.LOOK] for r in replicates if r.data.tags[Tag.SEED] in ("2", "3")} == {"2"}
    record = json.loads(Path(tracking.client(uri).download_artifacts(parent.info.run_id, SEQUENTIAL_FILE,
                                                                     str(tmp_path))).read_text())
    assert [look["look"] for look in record["looks"]] == [1, 2]
    assert record["looks"][-1]["decision"]["final"] and record["design"]["max_seeds"] == 4
    for decision in record["looks"][-1]["decision"]["contrasts"].values():
        assert decision["decision"] in ("different", "equivalent", "inconclusive")
