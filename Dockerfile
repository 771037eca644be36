# The loyalty-stream worker image (used by docker-compose.yml's `worker` service).
# Installs the package non-editably: the topic catalogue ships inside it as package data.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first, so that code changes do not re-download them.
COPY pyproject.toml README.md ./
COPY loyalty_stream ./loyalty_stream
RUN pip install '.[rocksdb]'  # rocksdict for LOYALTY_STORE=rocksdb://

# Program definitions are data, read at start from ./programs (LOYALTY_PROGRAM_DIR to change).
COPY programs ./programs

RUN useradd --create-home --uid 10001 loyalty && mkdir -p /var/lib/loyalty-stream \
    && chown loyalty /var/lib/loyalty-stream
USER loyalty

ENV LOYALTY_DATA_DIR=/var/lib/loyalty-stream

ENTRYPOINT ["loyalty-stream"]
CMD ["worker"]
