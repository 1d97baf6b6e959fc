"""Study analysis: MLflow (found by tags) -> tidy pandas frames -> statistics -> tables,
figures and one self-contained report (docs/architecture.md §2 is the input contract).

    python -m analysis.compare ablation_pretraining            # reports/ablation_pretraining/

    from analysis import load_study, analyze, write_report, build_report
    study = load_study("ablation_pretraining", tracking_uri)   # Study: parent tags + runs frame
    scores = study.scores(["test/acc"])                        # rows: one per (arm, seed, metric)
    result = build_report("ablation_pretraining", tracking_uri=tracking_uri)

Modules: ``load`` (MLflow -> frames), ``stats`` (pure functions), ``tables`` (formatting and
rendering), ``figures`` (matplotlib), ``artifacts`` (models back from their weights),
``report`` (assembly), ``compare`` (the CLI).
"""
from analysis.load import AnalysisError, MetricNotFound, Study, StudyNotFound, load_study
from analysis.report import Analysis, ReportResult, analyze, build_report, write_report

__all__ = ["AnalysisError", "Analysis", "MetricNotFound", "ReportResult", "Study", "StudyNotFound",
           "analyze", "build_report", "load_study", "write_report"]
