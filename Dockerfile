# qac server image: builds the sample model at image build time, serves it on port 8000.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY indexer ./indexer
COPY server ./server
COPY static ./static
COPY data ./data
RUN pip install --no-cache-dir -e . && qac build --out /models/sample --quiet
EXPOSE 8000
ENV QAC_HOST=0.0.0.0 QAC_INDEX=/models/sample
CMD ["qac", "serve"]
