"""Compare the arms of a study recorded in MLflow and write its report.

    python -m analysis.compare ablation_pretraining
    python -m analysis.compare ablation_dropout --metric test/f1_macro --format md,csv
    python -m analysis.compare ablation_noise --tracking-uri sqlite:////data/mlflow.db --output /tmp/r

Writes reports/<study>/ (tables as Markdown, CSV, HTML, LaTeX; figures/*.png; report.html)
and prints the Markdown. Bad input (unknown study, metric or baseline) exits with status 2
and one message on stderr.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from analysis.plotting import FigureOptions
from analysis.load import AnalysisError
from analysis.report import FORMATS, build_report, command_string, default_output_dir
from study.records import default_tracking_uri


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m analysis.compare", description=__doc__.split("\n\n")[0])
    p.add_argument("study", help="study name (the parent run's `study` tag)")
    p.add_argument("--format", default=",".join(FORMATS),
                   help=f"comma list of table formats (default: all = {','.join(FORMATS)})")
    p.add_argument("--metric", default=None,
                   help="primary metric (default: the study's test_metric, test/acc unless it declares another)")
    p.add_argument("--baseline", default=None, metavar="ARM",
                   help="arm the others are compared with (default: the parent's baseline_arm tag)")
    p.add_argument("--output", default=None, metavar="DIR",
                   help="report folder (default: <project>/reports/<study>)")
    p.add_argument("--tracking-uri", default=None,
                   help=f"MLflow store (default: $MLFLOW_TRACKING_URI, else {default_tracking_uri()})")
    p.add_argument("--parent-run", default=None, metavar="RUN_ID",
                   help="report this invocation of the study (default: the latest)")
    p.add_argument("--budget", default=None,
                   help="report the latest invocation at this budget (smoke, full); default: the latest")
    p.add_argument("--no-figures", action="store_true", help="tables only (fast)")
    p.add_argument("--tsne-points", type=int, default=FigureOptions.tsne_points, metavar="N",
                   help=f"test digits in the t-SNE figure (default: {FigureOptions.tsne_points})")
    p.add_argument("--no-log", action="store_true",
                   help="do not log the report and figures to the study's parent MLflow run")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    # "tex" is accepted for "latex" (the file is comparison.tex)
    formats = [{"tex": "latex"}.get(f.strip(), f.strip()) for f in args.format.split(",") if f.strip()]
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown or not formats:
        print(f"error: unknown format(s) {', '.join(unknown) or '(none given)'}; formats: "
              f"{', '.join(FORMATS)}", file=sys.stderr)
        return 2
    try:
        result = build_report(
            args.study, tracking_uri=args.tracking_uri,
            output_dir=Path(args.output) if args.output else default_output_dir(args.study),
            metric=args.metric, baseline=args.baseline, formats=formats,
            figures=not args.no_figures, log_figures=not args.no_log,
            parent_run_id=args.parent_run, budget=args.budget, figure_options=FigureOptions(tsne_points=args.tsne_points),
            command=command_string(sys.argv if argv is None else ["compare", *argv]))
    except AnalysisError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not args.no_log:
        from analysis.publish import log_report     # report.html, comparison.md on the parent run
        log_report(result)
    print(result.markdown)
    print(f"report written to {result.output_dir} ({len(result.files)} files)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
