"""Score like the organizers, locally: pack a labelled set into Grand Challenge jobs, run the
algorithm once per job as the platform does, and evaluate with the organizer's rules.

    python -m leaderboard pack MANIFEST.csv --out lb --where Scanner="Hamamatsu XR"
    python -m leaderboard run lb --model model
    python -m leaderboard evaluate lb

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

One module per verb: ``packing`` (pack), ``jobs`` (run), ``scoring`` (evaluate, drawn by ``plots``
from the pages in ``scored``); ``layout`` holds what they share (file names, which jobs a pack holds,
how an output is read), ``engine`` which container engine runs images, and ``cli`` the command
line. The modules are not named after the verbs because the package exports the verbs' functions
under those names.

It stands on ``amf`` and never imports ``training``; it is not shipped in the container image.
"""

from leaderboard.cli import main
from leaderboard.jobs import DEFAULT_COMMAND, JobsFailed, default_jobs, run
from leaderboard.layout import DOMAIN_NAMES_FILE, GROUND_TRUTH, METRICS, RUN
from leaderboard.packing import SAMPLE_DPI, pack
from leaderboard.scoring import NotScorable, OutputsRejected, evaluate

__all__ = [
    "DEFAULT_COMMAND",
    "DOMAIN_NAMES_FILE",
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
