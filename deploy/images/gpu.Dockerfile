# gpuyard GPU image: the health agent DaemonSet and the preflight / periodic test pods,
# whose `gpuyard gpu-test` needs PyTorch with CUDA and NCCL (the official PyTorch CUDA
# runtime image ships both; NVML comes from the driver through the NVIDIA container
# runtime, pynvml from the package's nvidia-ml-py dependency).
# (`gpuyard manifests --gpu-image`, default ghcr.io/gpuyard/gpuyard-gpu:0.1.0.) Build:
#   buildah bud --isolation chroot -f deploy/images/gpu.Dockerfile -t ghcr.io/gpuyard/gpuyard-gpu:0.1.0 .
ARG BASE=docker.io/pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime
FROM ${BASE}

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
COPY pyproject.toml README.md /src/
COPY gpuyard /src/gpuyard
# torch is the base image's: install gpuyard beside it, never a second torch.
RUN python3 -m pip install /src && rm -rf /src \
    && python3 -c "import torch, torch.distributed; assert torch.distributed.is_nccl_available()"

RUN useradd --system --uid 65532 --no-create-home --shell /usr/sbin/nologin gpuyard
USER 65532:65532
ENTRYPOINT ["gpuyard"]
CMD ["gpu-test"]
