# The one image behind the worker and the app services of docker-compose.yml.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

COPY requirements.lock .
# torch first, from the CPU wheel index: PyPI's Linux wheel of the same version pulls gigabytes of CUDA.
# The runtime lock only: no test tools in the image.
RUN pip install --index-url https://download.pytorch.org/whl/cpu "$(grep '^torch==' requirements.lock)" \
    && pip install -r requirements.lock

COPY . .
# The shipped models' ONNX exports, made here where the folder is writable: every container of the image then
# predicts and draws heatmaps without loading PyTorch or TensorFlow.
RUN python -m services.predictors
RUN useradd --create-home --uid 1000 brainmri && mkdir -p /app/var && chown brainmri /app/var
USER brainmri

ENV DATABASE_URL=sqlite:////app/var/brainmri.db \
    ARTIFACT_DIR=/app/var/artifacts \
    UPLOAD_DIR=/app/var/scans
EXPOSE 8501
CMD ["python", "server.py", "--port", "8501", "--address", "0.0.0.0"]
