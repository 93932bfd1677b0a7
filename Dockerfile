# MIDOG 2025 Track 2 algorithm container for Grand Challenge.
# The base brings CUDA, cuDNN and torch; only the pinned inference extras are installed on top.
# CI builds this same file on a local stand-in for this base (see ci/build_base_image.sh).
FROM pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime
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
    && python -c "import timm, tifffile, imagecodecs, SimpleITK, safetensors, torch"

# Root-owned and read-only for the user: the job may write only to /output and /tmp.
COPY amf/ amf/
COPY process.py .
COPY model/ model/
# Root-owned, readable and not writable by the unprivileged user, whatever the build context's modes.
RUN chmod -R a+rX,go-w /opt/algorithm

USER user
ENTRYPOINT ["python", "process.py"]
