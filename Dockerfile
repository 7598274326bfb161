# The farm image: `patchfuzz worker` by default; the cron and cli services of
# docker-compose.yml run other commands of the same image.
FROM python:3.11-slim-bookworm

# gcc and the Python headers: the engine's C extension (fuzzer/arch/_unicorn_calls.c)
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml setup.py README.md ./
COPY fuzzer fuzzer
COPY workers workers
COPY db db
COPY corpus corpus
# editable: the Alembic migrations and the corpus are read from /app, as in a checkout
RUN pip install --no-cache-dir -e . \
 && useradd --create-home --uid 10001 patchfuzz \
 && mkdir -p /work && chown patchfuzz /work

# never root: a job runs emulated machine code and libFuzzer, nothing needs privileges
USER patchfuzz
WORKDIR /work
ENV PATCHFUZZ_CORPUS=/app/corpus \
    PATCHFUZZ_WORK_DIR=/tmp \
    PYTHONUNBUFFERED=1
ENTRYPOINT ["patchfuzz"]
CMD ["worker"]
