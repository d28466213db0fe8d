# replaywatch's image: the service only (no devstack, no test tools).
# Build: docker build -t replaywatch:0.1.0 .   Run: docker run replaywatch:0.1.0 run

# --- the Rust toolchain, for the native per-record path ---------------------------------
FROM rust:1.90.0-slim-bookworm AS rust

# --- build: a wheel of replaywatch (its native module built) and of every dependency -----
FROM python:3.11.10-slim-bookworm AS build
COPY --from=rust /usr/local/cargo /usr/local/cargo
COPY --from=rust /usr/local/rustup /usr/local/rustup
ENV CARGO_HOME=/usr/local/cargo RUSTUP_HOME=/usr/local/rustup PATH=/usr/local/cargo/bin:$PATH
# the C linker cargo calls (Debian's current build of the release; the stage is thrown away)
# hadolint ignore=DL3008
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY native ./native
COPY src ./src
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# --- final: the wheels installed, nothing to build with --------------------------------
FROM python:3.11.10-slim-bookworm
ARG VERSION=0.1.0
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    REPLAYWATCH_HTTP_HOST=0.0.0.0 \
    REPLAYWATCH_LOG_FORMAT=json \
    REPLAYWATCH_NATIVE=on
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links=/wheels "replaywatch==${VERSION}" \
    && rm -rf /wheels \
    && groupadd --system --gid 10001 replaywatch \
    && useradd --system --uid 10001 --gid replaywatch --no-create-home --shell /usr/sbin/nologin replaywatch
USER 10001:10001
EXPOSE 8080 8081
ENTRYPOINT ["replaywatch"]
CMD ["run"]
