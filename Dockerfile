# The qac image: the package installed (not editable), with the sample log and the demo page as
# package data; neither [bench] (matplotlib) nor [dask]. It holds no model: docker-compose.yml's
# `build` service writes one into a volume at /models.
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app

COPY pyproject.toml README.md ./
COPY indexer ./indexer
COPY server ./server
COPY replay ./replay
COPY qac ./qac
COPY static ./static
RUN pip install . && rm -rf build *.egg-info indexer server replay qac static

# Not root. /models belongs to that user, so a new named volume mounted there is writable.
RUN useradd --create-home --uid 10001 qac && mkdir /models && chown qac:qac /models
USER qac

ENV QAC_HOST=0.0.0.0 QAC_PORT=8000
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
CMD ["qac", "serve", "--index", "/models/sample"]
