"""Study analysis: MLflow (found by tags) -> tidy pandas frames -> statistics -> tables,
figures and one self-contained report (docs/architecture.md §2 is the input contract).

    python -m analysis.compare ablation_pretraining            # reports/ablation_pretraining/

    from analysis.load import load_study
    from analysis.report import analyze, build_report, write_report
    study = load_study("ablation_pretraining", tracking_uri)   # StudyRecord: parent tags + runs frame
    scores = study.scores(["test/acc"])                        # rows: one per (arm, seed, metric)
    result = build_report("ablation_pretraining", tracking_uri=tracking_uri)

Modules: ``load`` (MLflow -> frames, the parent's study.json, evaluations), ``definition``
(what study.json declares: compared metrics with margins and directions, the trainable's
schema and model, the tune phase's choices; fallbacks for older stores), ``study.inference``
(one contrast: hierarchical paired bootstrap interval, TOST, minimal-effect test, MDE, seeds
needed, the four verdicts), ``contrasts`` (the planned family from study.json, each contrast
on its metric, Holm, the Findings sentences), ``conditional`` (a planned contrast that averages
over a factor, level by level, and whether the levels disagree), ``looks`` (the looks of a
sequential study, its parent's sequential.json), ``tuning`` (how each arm's tune phase went,
what the intervals cover), ``arms`` (failed replicates, the best-arm rule), ``settings`` (factor,
tuned and non-default settings per arm), ``headline`` (what the report opens with), ``stats``
(exploratory comparisons with the baseline, factorial effects, curves), ``overlap`` (an
exploratory comparison a planned contrast estimates shows the planned estimate and verdict),
``bookkeeping`` (completeness, configuration, cost), ``tables`` (formatting and rendering),
``figures`` and ``forest`` (matplotlib), ``artifacts`` (models back from their weights),
``publish`` (models and the report in MLflow), ``report`` (assembly), ``render`` (Markdown,
HTML, LaTeX), ``compare`` (the CLI).
"""
