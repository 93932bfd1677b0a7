# MIDOG 2025 Track 2 algorithm container for Grand Challenge.
# The base brings CUDA, cuDNN and torch; only the pinned inference extras are installed on top.
# CI builds this same file on a local stand-in for this base (see ci/build_base_image.sh).
FROM pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime AS runtime
# The torch and torchvision this base carries (CUDA 12.4 builds). The one place they are written:
# ci/build_base_image.sh installs exactly these into CI's stand-in base; change them with FROM.
LABEL org.amf.base.torch="2.5.1" org.amf.base.torchvision="0.20.1"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    AMF_BAKED_MODEL=/opt/algorithm/model

# Grand Challenge runs the container as an unprivileged user; make that the default here too.
RUN groupadd --system user \
    && useradd --system --create-home --no-log-init --gid user user

WORKDIR /opt/algorithm

# Dependencies first, so code and model changes reuse this layer.
COPY requirements.txt .
RUN python -m pip install --no-cache-dir -r requirements.txt \
    && python -c "import timm, tifffile, imagecodecs, SimpleITK, safetensors, torch, onnxruntime"

# model.onnx, the CPU engine's graph, is derived from the weights: built here with the image's own
# torch and checked against it (1e-5), in a stage of its own so the exporter stays out of the image.
FROM runtime AS onnx
COPY requirements-train.txt .
RUN python -m pip install --no-cache-dir "$(grep -E '^onnx==' requirements-train.txt)"
COPY amf/ amf/
COPY model/ model/
RUN rm -f model/model.onnx && python -m amf.onnx_export model

FROM runtime
# Root-owned and read-only for the user: the job may write only to /output and /tmp.
COPY amf/ amf/
COPY process.py .
COPY model/ model/
COPY --from=onnx /opt/algorithm/model/model.onnx model/model.onnx
# Root-owned, readable and not writable by the unprivileged user, whatever the build context's modes.
RUN chmod -R a+rX,go-w /opt/algorithm

USER user
ENTRYPOINT ["python", "process.py"]
