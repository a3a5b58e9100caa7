# dlops on Ray's own images: one image for the head and the workers of a KubeRay RayJob
# (deployments/rayjob.yaml). CPU and CUDA variants differ only in their build arguments:
#
#   docker build -t my-registry/dlops:0.1.0-cpu .
#   docker build -t my-registry/dlops:0.1.0-gpu \
#     --build-arg BASE_IMAGE=rayproject/ray:2.60.0-py312-gpu \
#     --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 .
#
# The Ray version of BASE_IMAGE must be the one pinned in deployments/image-constraints.txt (the
# cluster's Ray and the job's must match); torch comes from TORCH_INDEX_URL (cpu or a CUDA build).
ARG BASE_IMAGE=rayproject/ray:2.60.0-py312-cpu
FROM ${BASE_IMAGE}

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG DLOPS_EXTRAS=serve,postgres

# the RayJob's working_dir is "." of this folder: the project files travel with the image
WORKDIR /home/ray/dlops
COPY --chown=ray:users pyproject.toml README.md ./
COPY --chown=ray:users dlops ./dlops
COPY --chown=ray:users plugins ./plugins
COPY --chown=ray:users deployments/image-constraints.txt ./deployments/
COPY --chown=ray:users examples ./examples

# dlops into the Python that runs Ray (the base image's), so `ray start` and the job share it
# (dlops submit looks for that Python first); the build fails when the set does not import
RUN pip install --no-cache-dir --extra-index-url "${TORCH_INDEX_URL}" \
        -c deployments/image-constraints.txt ".[${DLOPS_EXTRAS}]" \
    && python -c "import dlops.cli, dlops_plugins, torch, torchvision, ray, mlflow" \
    && dlops --help > /dev/null

ENV MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR=false
