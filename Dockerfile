# The loyalty-stream worker image (used by docker-compose.yml's `worker` service).
# Installs the package non-editably: the topic catalogue ships inside it as package data.

# The wheel, with the rules engine compiled by mypyc (setup.py): the compiler stays in this stage.
FROM python:3.11-slim AS wheel
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY loyalty_stream ./loyalty_stream
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

COPY --from=wheel /wheels /wheels
RUN pip install --find-links /wheels 'loyalty-stream[rocksdb]' && rm -rf /wheels  # rocksdict for rocksdb://

# Program definitions are data, read at start from ./programs (LOYALTY_PROGRAM_DIR to change).
COPY programs ./programs

RUN useradd --create-home --uid 10001 loyalty && mkdir -p /var/lib/loyalty-stream \
    && chown loyalty /var/lib/loyalty-stream
USER loyalty

ENV LOYALTY_DATA_DIR=/var/lib/loyalty-stream

ENTRYPOINT ["loyalty-stream"]
CMD ["worker"]
