"""Score like the organizers, locally: pack a labelled set into Grand Challenge jobs, run the
algorithm once per job as the platform does, and evaluate with the organizer's rules.

    python -m amf.leaderboard pack MANIFEST.csv --out lb --where Scanner="Hamamatsu XR"
    python -m amf.leaderboard run lb --model model
    python -m amf.leaderboard evaluate lb

Layout (one folder per job, as the organizer's evaluation container sees them)::

    OUT/ground_truth.json       organizer format: [{"image", "labels", "tumordomains"}]
    OUT/domains.json            domain number -> name, and the metadata column they came from
    OUT/pack.json               how the pack was made; which patch is on which page
    OUT/jobs/<job>/input/       inputs.json + images/stacked-histopathology-roi-cropouts/<job>.tiff
    OUT/jobs/<job>/output/      multiple-mitotic-figure-classification.json (written by ``run``)
    OUT/jobs/predictions.json   Grand Challenge job list: OUT/jobs can be mounted as the official
                                evaluation container's /input
    OUT/run.json                per-job status and wall time
    OUT/metrics.json, *.png     written by ``evaluate``

One module per verb: ``packing`` (pack), ``jobs`` (run), ``scoring`` (evaluate, drawn by ``plots``);
``layout`` holds what they share and ``cli`` the command line. The modules are not named after the
verbs because the package exports the verbs' functions under those names.
"""

from amf.leaderboard.cli import main
from amf.leaderboard.jobs import DEFAULT_COMMAND, JobsFailed, default_jobs, run
from amf.leaderboard.layout import GROUND_TRUTH, METRICS, RUN
from amf.leaderboard.packing import SAMPLE_DPI, pack
from amf.leaderboard.scoring import NotScorable, OutputsRejected, evaluate

__all__ = [
    "DEFAULT_COMMAND",
    "GROUND_TRUTH",
    "METRICS",
    "RUN",
    "SAMPLE_DPI",
    "JobsFailed",
    "NotScorable",
    "OutputsRejected",
    "default_jobs",
    "evaluate",
    "main",
    "pack",
    "run",
]
