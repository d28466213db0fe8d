# replaywatch's image: the service only (no devstack, no test tools).
# Build: docker build -t replaywatch:0.1.0 .   Run: docker run replaywatch:0.1.0 run

# --- build: a wheel of replaywatch and of every dependency -----------------------------
FROM python:3.11.10-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# --- final: the wheels installed, nothing to build with --------------------------------
FROM python:3.11.10-slim-bookworm
ARG VERSION=0.1.0
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    REPLAYWATCH_HTTP_HOST=0.0.0.0 \
    REPLAYWATCH_LOG_FORMAT=json
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links=/wheels "replaywatch==${VERSION}" \
    && rm -rf /wheels \
    && groupadd --system --gid 10001 replaywatch \
    && useradd --system --uid 10001 --gid replaywatch --no-create-home --shell /usr/sbin/nologin replaywatch
USER 10001:10001
EXPOSE 8080 8081
ENTRYPOINT ["replaywatch"]
CMD ["run"]
