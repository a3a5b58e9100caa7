"""The Dockerfile and deployments/rayjob.yaml, checked as far as they can be built here (no Docker
daemon, no Kubernetes, no downloads in tests):

- the image's install (``pip install -c deployments/image-constraints.txt ".[serve,postgres]"``, the
  Dockerfile's RUN line) resolves offline in a fresh venv that sees the packages this suite runs with
  (pip's real resolver, ``--dry-run --no-index``: every pin must be the tested version and the set
  must be consistent, or pip finds nothing to install and fails), and every pin meets pyproject.toml;
- the RayJob manifest parses and names one image for head and workers, built from the Dockerfile's
  Ray version, an entrypoint that is a ``dlops run`` of a project file the image carries and that
  loads with its ``--set`` overrides, GPU limits equal to Ray's ``num-gpus`` per worker, and a trial
  request (``search.resources``) that fits a worker.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.version import Version

from dlops_testing import REPO

DOCKERFILE = REPO / "Dockerfile"
CONSTRAINTS = REPO / "deployments" / "image-constraints.txt"
RAYJOB = REPO / "deployments" / "rayjob.yaml"


def dockerfile_args() -> dict[str, str]:
    """``ARG NAME=default`` lines of the Dockerfile."""
    return dict(re.findall(r"^ARG (\w+)=(\S+)$", DOCKERFILE.read_text(), flags=re.M))


def pins() -> dict[str, Version]:
    out = {}
    for line in CONSTRAINTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", f"{line}: the image pins exact versions"
            out[req.name.lower()] = Version(spec.version)
    return out


def test_the_dockerfile_installs_dlops_with_the_constraints_on_rays_image():
    import ray

    args = dockerfile_args()
    text = DOCKERFILE.read_text()
    base = re.fullmatch(r"rayproject/ray:(\d+\.\d+\.\d+)-py(\d)(\d+)-(cpu|gpu)", args["BASE_IMAGE"])
    assert base, args["BASE_IMAGE"]
    # the image's Ray = the pinned Ray = the Ray this suite tests (a job's Ray must match the cluster's)
    assert Version(base.group(1)) == pins()["ray"] == Version(ray.__version__)
    assert args["TORCH_INDEX_URL"].startswith("https://download.pytorch.org/whl/")
    assert '-c deployments/image-constraints.txt ".[${DLOPS_EXTRAS}]"' in text and "${TORCH_INDEX_URL}" in text
    for needed in ("pyproject.toml", "dlops", "plugins", "deployments/image-constraints.txt", "examples"):
        assert re.search(rf"^COPY .*\s{re.escape(needed)}\s", text, flags=re.M), f"the image lacks {needed}"
        assert (REPO / needed).exists()


def test_every_pin_meets_pyproject_and_every_dependency_is_pinned():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = dockerfile_args()["DLOPS_EXTRAS"].split(",")
    reqs = [Requirement(r) for r in project["dependencies"]]
    reqs += [Requirement(r) for e in extras for r in project["optional-dependencies"][e]]
    pinned = pins()
    for req in reqs:
        name = req.name.lower()
        assert name in pinned, f"{req}: not pinned in {CONSTRAINTS.name}"
        assert req.specifier.contains(pinned[name], prereleases=True), f"{name}=={pinned[name]} breaks {req}"


@pytest.mark.slow
def test_the_images_install_resolves_offline_in_a_fresh_venv(tmp_path):
    """A fresh venv (no packages of its own) that sees this suite's site-packages through a ``.pth``;
    pip resolves the Dockerfile's install with no index: it can only succeed when every pin is the
    version installed and tested here and the dependency graph is consistent. Only dlops itself (the
    source tree) is left to install."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    (Path(purelib) / "tested-env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    extras = dockerfile_args()["DLOPS_EXTRAS"]
    r = subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--dry-run", "--no-index",
                        "--no-build-isolation", "-c", str(CONSTRAINTS), f"{REPO}[{extras}]"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert r.stdout.strip().splitlines()[-1] == "Would install dlops-0.1.0", r.stdout[-2000:]


def test_the_rayjob_manifest_is_consistent_with_the_image_and_the_project_file():
    from dlops.config import load_config

    doc = yaml.safe_load(RAYJOB.read_text())
    assert (doc["apiVersion"], doc["kind"]) == ("ray.io/v1", "RayJob")
    spec = doc["spec"]
    cluster = spec["rayClusterSpec"]
    assert Version(cluster["rayVersion"]) == pins()["ray"]
    head = cluster["headGroupSpec"]
    groups = cluster["workerGroupSpecs"]
    pods = [head["template"]["spec"]] + [g["template"]["spec"] for g in groups]
    images = {c["image"] for p in pods for c in p["containers"]}
    assert len(images) == 1, f"head and workers must run one image (one Python, Ray and dlops): {images}"
    (image,) = images
    # the dashboard stays on the head's loopback: the submitter must run in the head pod
    assert head["rayStartParams"]["dashboard-host"] == "127.0.0.1"
    assert spec["submissionMode"] == "SidecarMode" and head["template"]["spec"]["restartPolicy"] == "Never"

    argv = shlex.split(spec["entrypoint"])
    assert argv[:2] == ["dlops", "run"], argv
    project = argv[2]
    assert project.startswith("examples/") and (REPO / project).is_file()  # the Dockerfile copies examples/
    sets = [argv[i + 1] for i, a in enumerate(argv) if a == "--set"]
    assert "--tracking-uri" in argv and argv[argv.index("--tracking-uri") + 1].startswith("http")
    cfg = load_config(REPO / project, sets)
    assert "://" in cfg.ray.storage_path, "trial checkpoints need storage every node sees"
    trial = cfg.search.resources

    def as_int(v) -> int:
        return int(str(v))

    assert as_int(head["rayStartParams"].get("num-gpus", 0)) == 0
    assert "nvidia.com/gpu" not in head["template"]["spec"]["containers"][0]["resources"].get("limits", {})
    gpu_groups = []
    for g in groups:
        limits = g["template"]["spec"]["containers"][0]["resources"]["limits"]
        gpus = as_int(limits.get("nvidia.com/gpu", 0))
        assert as_int(g["rayStartParams"].get("num-gpus", 0)) == gpus, f"{g['groupName']}: num-gpus != nvidia.com/gpu"
        assert as_int(g["rayStartParams"]["num-cpus"]) == as_int(limits["cpu"]), f"{g['groupName']}: num-cpus != cpu"
        if gpus:
            gpu_groups.append(g)
            assert trial.gpu <= gpus and trial.cpu <= as_int(limits["cpu"])
            assert g["minReplicas"] <= g["replicas"] <= g["maxReplicas"]
    assert trial.gpu > 0 and gpu_groups, "the example asks for GPUs and has GPU workers"
    assert image.endswith("-gpu"), f"{image}: GPU workers need the image built from the -gpu base"
    assert re.search(rf"BASE_IMAGE=rayproject/ray:{re.escape(str(pins()['ray']))}-py\d+-gpu", RAYJOB.read_text())
