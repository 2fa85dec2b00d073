# The qac image: the package installed (not editable), the sample log and the demo page beside it.
# It holds no model: docker-compose.yml's `build` service writes one into a volume at /models.
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app

# Dependencies and code first, so editing data/ or static/ does not reinstall them.
COPY pyproject.toml README.md ./
COPY indexer ./indexer
COPY server ./server
RUN pip install . && rm -rf build *.egg-info

# An installed package has no repository beside it: name the sample log (`qac build --log`)
# and the demo page (QAC_STATIC_DIR) explicitly.
COPY data ./data
COPY static ./static

# Not root. /models belongs to that user, so a new named volume mounted there is writable.
RUN useradd --create-home --uid 10001 qac && mkdir /models && chown qac:qac /models
USER qac

ENV QAC_HOST=0.0.0.0 QAC_PORT=8000 QAC_STATIC_DIR=/app/static
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
CMD ["qac", "serve", "--index", "/models/sample"]
